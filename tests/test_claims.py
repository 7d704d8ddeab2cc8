"""Verdicts of cmg_lib.experiments.claims on hand-made per-seed values and records with known answers."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from cmg_lib.experiments import claims
from cmg_lib.experiments.claims import FAILS, HOLDS, INCONCLUSIVE


def test_interval_is_the_student_t_interval():
    mean, half, n = claims.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))      # sample std of 1,2,3 is 1
    assert claims.t_interval([4.0])[1] == math.inf and claims.t_interval([])[2] == 0


def test_greater_holds_fails_or_is_inconclusive_by_the_interval():
    a = {0: 10.0, 1: 11.0, 2: 12.0}
    assert claims.greater("c", a, {0: 1.0, 1: 2.0, 2: 3.0}).outcome == HOLDS            # d = 9 exactly
    assert claims.greater("c", {0: 1.0, 1: 2.0, 2: 3.0}, a).outcome == FAILS
    noisy = {0: 5.0, 1: -3.0, 2: 1.0}                                                   # mean 1, wide interval
    assert claims.greater("c", noisy, {0: 0.0, 1: 0.0, 2: 0.0}).outcome == INCONCLUSIVE
    # a margin is part of the rule: d = 9 is not "more than 10 points"
    far = claims.greater("c", a, {0: 1.0, 1: 2.0, 2: 3.0}, margin=10.0)
    assert far.outcome == FAILS and "difference > 10 points" in far.rule


def test_fewer_than_three_pretraining_seeds_is_always_inconclusive():
    v = claims.greater("c", {0: 90.0, 1: 91.0}, {0: 1.0, 1: 2.0})
    assert v.outcome == INCONCLUSIVE and "needs >= 3 seeds" in v.rule
    assert claims.exceeds("c", [99.0], 1.0).outcome == INCONCLUSIVE


def test_greater_pairs_on_common_seeds_only():
    v = claims.greater("c", {0: 5.0, 1: 5.0, 2: 5.0, 7: 100.0}, {0: 1.0, 1: 1.0, 2: 1.0})
    assert v.outcome == HOLDS and "over 3 pre-training seeds" in v.evidence and "a 5.00 vs b 1.00" in v.evidence


def test_all_of_needs_every_part():
    h = claims.Verdict("x", HOLDS, "")
    f = claims.Verdict("x", FAILS, "")
    i = claims.Verdict("x", INCONCLUSIVE, "")
    assert claims.all_of("c", [h, h]).outcome == HOLDS
    assert claims.all_of("c", [h, i]).outcome == INCONCLUSIVE
    assert claims.all_of("c", [h, i, f]).outcome == FAILS
    assert claims.all_of("c", []).outcome == INCONCLUSIVE
    assert "holds in 1, fails in 1, inconclusive in 1 of 3" in claims.all_of("c", [h, i, f]).evidence


def _rec(method, pseed, head, value, **tags):
    return {"method": method, "metric": value, "seed": head, "pretrain": {"train": {"seed": pseed}}, **tags}


def test_by_pretrain_seed_averages_head_seeds():
    records = [_rec("u", 0, 0, 10.0), _rec("u", 0, 1, 20.0), _rec("u", 1, 0, 30.0), _rec("b", 0, 0, 99.0)]
    assert claims.by_pretrain_seed(records, method="u") == {0: 15.0, 1: 30.0}


def test_table1_claims_on_records_with_known_answers():
    records = []
    for pseed in (0, 1, 2):
        for task in ("ave", "avvp"):
            for d in ("V→A", "A→V"):
                col = dict(pretrain_size="24k", task=task, direction=d)
                records += [_rec("unicode", pseed, 0, 40.0 + pseed, **col), _rec("baseline", pseed, 0, 5.0, **col),
                            _rec("cmcm", pseed, 0, 39.0 + pseed, **col), _rec("dcid+cmcm", pseed, 0, 20.0, **col)]
    out = {v.claim: v.outcome for v in claims.table1_claims(records, ["baseline", "cmcm", "dcid+cmcm", "unicode"],
                                                                     "24k")}
    assert out["Uni-Code outperforms every compared method (Sec. 5.3)"] == HOLDS        # 1 point, zero spread
    assert out["the unconstrained baseline transfers far worse than Uni-Code"] == HOLDS
    assert out["adding DCID improves each compared method (Table 1, lower half)"] == FAILS


def test_ablation_claims_average_columns_per_seed():
    records = []
    for pseed, noise in zip((0, 1, 2), (0.0, 0.5, -0.5)):
        for row, value in (("full", 50.0), ("w/o CLUB", 60.0), ("w/o Cross-CPC", 20.0), ("w/o MM-EMA, reset", 49.9)):
            for d in ("V→A", "A→V"):
                records.append(_rec("unicode", pseed, 0, value + noise, row=row, pretrain_size="24k", task="ave",
                                    direction=d))
    out = claims.ablation_claims(records, ["w/o CLUB", "w/o Cross-CPC", "w/o MM-EMA, reset", "full"])
    assert [v.outcome for v in out] == [FAILS, HOLDS, HOLDS]       # w/o CLUB beats full: the first claim fails


def test_codebook_size_claim_picks_the_best_intermediate_size():
    records = [_rec("unicode", s, 0, v + s * 0.1, codebook_size=L)
               for s in (0, 1, 2) for L, v in ((16, 10.0), (64, 30.0), (256, 20.0))]
    v = claims.codebook_size_claim(records)
    assert v.outcome == HOLDS and "best intermediate L = 64" in v.claim
    assert claims.codebook_size_claim(records[:2]).outcome == INCONCLUSIVE


def test_markdown_shows_scope_outcome_and_rule():
    scope = claims.Scope("default", 200, (0,), (0, 1))
    text = claims.markdown([claims.greater("c", {0: 2.0}, {0: 1.0})], scope)
    assert "scale **default**: pre-training steps 200; pre-training seeds [0]" in text
    assert "values: mean ± half-width of the 95 % Student-t interval over pre-training seeds" in text   # what ± is
    assert "inconclusive** by rule" in text
    assert "- c: **inconclusive** (a 2.00 vs b 1.00; difference 1.00 no interval points over 1 pre-training seed; " \
           "rule: difference > 0 points; needs >= 3 seeds)" in text


def test_why_switch_and_target_claims_on_known_values():
    from cmg_lib.experiments import why

    base = {"purity": 0.8, "mi/video": 0.5, "cmcm_margin": 0.3, "same_code": 0.6}
    diag = {"book recipe": {s: dict(base, same_code=0.6 + 0.01 * s) for s in (0, 1, 2)}}
    worse = {"purity": 0.4, "mi/video": 0.0, "cmcm_margin": 0.0, "same_code": 0.1}
    for name in why.SWITCHES:
        diag[name] = {s: dict(worse) for s in (0, 1, 2)}
    diag["CMCM without temperature"] = {s: dict(base, cmcm_margin=0.5 + 0.01 * s) for s in (0, 1, 2)}  # better
    records = []
    for s in (0, 1, 2):
        for row, cross in (("book recipe", 70.0 + s), ("released recipe", 20.0), ("book recipe, fewer updates", 71.0 + s),
                           ("book recipe, more updates", 72.0 + 2 * s)):
            records.append(_rec("unicode", s, 0, cross, row=row, kind="cross"))
        records.append(_rec("unicode", s, 0, 85.0, row="book recipe", kind="labelled"))
    verdicts = why.switch_claims(diag, records)
    # more updates: 72, 74, 76 against 70, 71, 72, paired differences 2, 3, 4 (t-interval 3 +- 2.5 > 0)
    assert [v.outcome for v in verdicts] == [HOLDS, HOLDS, FAILS, HOLDS, HOLDS, FAILS, HOLDS]
    targets = why.target_claims(records, {0: 10.0, 1: 10.0, 2: 10.0}, diag["book recipe"])
    # cross / labelled = 70/85, 71/85, 72/85: mean 0.835, t-interval +- 0.029 lies above 0.8
    assert [v.outcome for v in targets] == [HOLDS, HOLDS, HOLDS, HOLDS]
    low = why.target_claims([dict(r, metric=r["metric"] - 4) if r["kind"] == "cross" else r for r in records],
                            {0: 10.0, 1: 10.0, 2: 10.0}, diag["book recipe"])
    assert low[1].outcome == INCONCLUSIVE          # 66-68 / 85: the interval contains 0.8


def test_all_of_reports_the_range_of_its_parts_differences():
    parts = [claims.greater("p", {0: 5.0}, {0: 1.0}), claims.greater("q", {0: 1.0}, {0: 3.0})]
    assert "mean differences -2.00 to 4.00" in claims.all_of("c", parts).evidence


def test_same_code_claims_test_the_central_property_as_worded():
    same = {"baseline": {0: 0.10, 1: 0.12, 2: 0.11}, "unicode": {0: 0.60, 1: 0.64, 2: 0.62}}
    above, half = claims.same_code_claims(same)
    assert above.outcome == HOLDS and "Uni-Code 62.0 vs baseline 11.0" in above.evidence
    assert half.outcome == HOLDS and "50 % of the aligned segments" in half.claim
    low = {"baseline": same["baseline"], "unicode": {0: 0.14, 1: 0.15, 2: 0.16}}
    assert [v.outcome for v in claims.same_code_claims(low)] == [HOLDS, FAILS]
    noisy = {"unicode": {0: 0.30, 1: 0.70, 2: 0.52}}                  # mean 50.7, interval across 50: inconclusive
    assert [v.outcome for v in claims.same_code_claims(noisy)] == [INCONCLUSIVE]
    assert claims.same_code_claims({"cmcm": {0: 0.5}}) == []
