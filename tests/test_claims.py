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
    assert "scale **default**: pre-training updates 200; pre-training seeds [0]" in text
    assert "values: mean ± half-width of the 95 % Student-t interval over pre-training seeds" in text   # what ± is
    assert "inconclusive** by rule" in text
    assert "- c: **inconclusive** (a 2.00 vs b 1.00; difference 1.00 points (no interval) over 1 pre-training seed; " \
           "rule: difference > 0 points; needs >= 3 seeds)" in text


def test_why_switch_claims_on_known_values():
    from cmg_lib.experiments import why

    base = {"purity": 0.8, "mi/video": 0.5, "cmcm_margin": 0.3, "same_code": 0.6}
    diag = {why.RECIPE: {s: dict(base, same_code=0.6 + 0.01 * s) for s in (0, 1, 2)}}
    worse = {"purity": 0.4, "mi/video": 0.0, "cmcm_margin": 0.0, "same_code": 0.1}
    for name in why.SWITCHES:
        diag[name] = {s: dict(worse) for s in (0, 1, 2)}
    diag["CMCM without temperature"] = {s: dict(base, cmcm_margin=0.5 + 0.01 * s) for s in (0, 1, 2)}  # better
    records = [_rec("unicode", s, 0, cross, row=row, kind="cross") for s in (0, 1, 2)
               for row, cross in ((why.RECIPE, 70.0 + s), (why.RELEASED, 20.0))]
    verdicts = why.switch_claims(diag, records)
    assert [v.outcome for v in verdicts] == [HOLDS, HOLDS, FAILS, HOLDS, HOLDS]


def _curve_records(cross_at_last=(53.5, 54.0, 54.5)):
    from cmg_lib.experiments import why

    records = []
    for s in (0, 1, 2):
        for updates, cross in ((1000, 40.0 + s), (3000, cross_at_last[s])):
            records.append(_rec("unicode", s, 0, cross, updates=updates, kind="cross"))
            records.append(_rec("unicode", s, 0, 60.0, updates=updates, kind="labelled"))
    return why, records


def test_why_curve_claim_tests_the_last_stretch_of_the_curve():
    why, records = _curve_records()
    rising = why.curve_claim(records, 1000, 3000)       # paired differences 13.5, 13, 12.5: holds
    assert rising.outcome == HOLDS and "3000 updates 54.0 vs 1000 updates 41.0" in rising.evidence
    _, flat = _curve_records((40.5, 40.0, 42.5))        # differences 0.5, -1, 0.5: the interval holds 0
    assert why.curve_claim(flat, 1000, 3000).outcome == INCONCLUSIVE


def test_why_target_claims_against_the_references():
    why, records = _curve_records()
    diag = {s: {"same_code": 0.20 + 0.01 * s, "same_code_chance": 0.02} for s in (0, 1, 2)}
    raw = {"audio": 55.0, "video": 95.0}                 # mean 75 > the codes' 60: the codes lose information
    targets = why.target_claims(records, {0: 4.0, 1: 4.0, 2: 4.0}, raw, diag, 0.835, 3000)
    # ratio 53.5, 54, 54.5 / 60 = 0.892, 0.9, 0.908: its t-interval (0.9 +- 0.021) lies above 0.835
    assert [v.outcome for v in targets] == [FAILS, HOLDS, HOLDS, HOLDS]
    assert "codes 60.0 vs raw features 75.0" in targets[0].evidence
    low = why.target_claims(records, {0: 4.0, 1: 4.0, 2: 4.0}, raw, diag, 0.9, 3000)
    assert low[1].outcome == INCONCLUSIVE                # 0.879 .. 0.921 around 0.9
    assert why.target_claims(records, {0: 4.0, 1: 4.0, 2: 4.0}, {"audio": 50.0, "video": 50.0}, diag, 0.835,
                             3000)[0].outcome == HOLDS


def _club_rows(same, rely=1.0):
    return {s: {"same_code": same + 0.01 * s, "code_reliance": rely + 0.1 * s} for s in (0, 1, 2)}


def test_why_club_claims_read_the_full_length_conditions():
    from cmg_lib.experiments import why

    cut = why.NO_RECON_GRADIENT
    assert why.CONVERGED_CLUB == (why.NO_CLUB, cut)
    assert set(why.CLUB_CONDITIONS) == {*why.CONVERGED_CLUB, *why.OTHER_CLUB}
    full = {why.RECIPE: _club_rows(0.15, 4.0), why.NO_CLUB: _club_rows(0.35, 1.0), cut: _club_rows(0.05, 3.0)}
    verdicts = why.club_claims(full)
    # CLUB lowers the same code (35 vs 15), the decoder reads the code with CLUB (4 vs 1), cutting the
    # reconstruction's gradient does not give it back here (5 vs 15)
    assert [v.outcome for v in verdicts] == [HOLDS, HOLDS, FAILS]
    assert verdicts[2].claim.startswith("the effect travels through the reconstruction's gradient")
    assert f"{cut} 6.00 vs {why.RECIPE} 16.0" in verdicts[2].evidence
    full[cut] = _club_rows(0.36, 3.0)
    assert why.club_claims(full)[2].outcome == HOLDS


def test_why_condition_claims_read_the_other_conditions():
    from cmg_lib.experiments import why

    tenth, raw, wide = why.TENTH_CLUB, why.UNSCALED_CLUB, why.WIDE_AUDIO
    assert set(why.OTHER_CLUB) == {tenth, raw, wide}
    diag = {why.RECIPE: _club_rows(0.10), why.NO_CLUB: _club_rows(0.30), tenth: _club_rows(0.10),
            raw: _club_rows(0.12), wide: _club_rows(0.32)}
    # a tenth of the weight changes nothing (equal), the unscaled estimator lowers it too (30 vs 12), and a wide
    # audio encoder gives it all back (32 vs 30 w/o CLUB)
    assert [v.outcome for v in why.condition_claims(diag)] == [INCONCLUSIVE, HOLDS, FAILS]
    diag[tenth] = _club_rows(0.25)
    assert why.condition_claims(diag)[0].outcome == HOLDS


def test_all_of_reports_the_range_of_its_parts_differences():
    parts = [claims.greater("p", {0: 5.0}, {0: 1.0}), claims.greater("q", {0: 1.0}, {0: 3.0})]
    assert "mean differences -2.00 to 4.00" in claims.all_of("c", parts).evidence


def test_same_code_claims_test_the_central_property_against_chance():
    def agree(same, chance=0.05):
        return {s: {"same_code": v, "chance": chance} for s, v in zip((0, 1, 2), same)}

    agreement = {"baseline": agree((0.10, 0.12, 0.11)), "unicode": agree((0.60, 0.64, 0.62))}
    above, beyond = claims.same_code_claims(agreement)
    assert above.outcome == HOLDS and "Uni-Code 62.0 vs baseline 11.0" in above.evidence
    assert beyond.outcome == HOLDS and "independent choices 5.0" in beyond.evidence
    low = {"baseline": agreement["baseline"], "unicode": agree((0.14, 0.15, 0.16), chance=0.15)}
    assert [v.outcome for v in claims.same_code_claims(low)] == [HOLDS, INCONCLUSIVE]
    assert claims.same_code_claims({"cmcm": agree((0.5, 0.5, 0.5))}) == []


def test_record_carries_what_the_markdown_prints_with_numbers_and_scope():
    scope = claims.Scope("default", "3000 (book_av, 24K)", (0, 1, 2), (0,))
    v = claims.greater("c", {0: 10.0, 1: 11.0, 2: 12.0}, {0: 1.0, 1: 2.0, 2: 3.0}, margin=5.0)
    rec = claims.record([v, claims.all_of("both", [v, v])], scope, "Sec. 5.3, Table 1")
    assert rec["format"] == claims.RECORD_FORMAT and rec["section"] == "Sec. 5.3, Table 1"
    assert rec["scope"] == {"scale": "default", "updates": "3000 (book_av, 24K)", "pretrain_seeds": [0, 1, 2],
                            "head_seeds": [0], "spread": claims.HALF_WIDTH, "min_seeds": 3}
    first, both = rec["verdicts"]
    assert (first["claim"], first["outcome"], first["evidence"], first["rule"]) == ("c", HOLDS, v.evidence, v.rule)
    assert first["mean"] == 9.0 and first["seeds"] == 3 and first["threshold"] == 5.0 and first["parts"] == []
    assert first["interval"] == pytest.approx([9.0 - first["half_width"], 9.0 + first["half_width"]])
    assert first["half_width"] == pytest.approx(0.0)                        # the differences are all 9
    assert both["mean"] is None and both["interval"] is None and [p["claim"] for p in both["parts"]] == ["c", "c"]
    # one seed: no interval, and nothing JSON cannot hold
    one = claims.greater("c", {0: 2.0}, {0: 1.0}).record()
    assert one["half_width"] is None and one["interval"] is None and one["seeds"] == 1
    import json
    json.dumps(rec, allow_nan=False)
    with pytest.raises(ValueError, match="section"):
        claims.record([v], scope, "")


def test_show_displays_the_markdown_and_the_record_in_one_output_that_records_in_reads_back():
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    scope = claims.Scope("smoke", 6, (0,), (0,))
    verdicts = [claims.greater("c", {0: 2.0}, {0: 1.0})]
    data, metadata = claims.output(verdicts, scope, "Fig. 4")
    assert data == {"text/markdown": claims.markdown(verdicts, scope)}          # all the page renders
    assert metadata == {claims.RECORD_KEY: claims.record(verdicts, scope, "Fig. 4")}

    def shown(section):
        data, metadata = claims.output(verdicts, scope, section)
        return new_output("display_data", data=data, metadata=metadata)

    # as the kernel stores it in the executed notebook: a valid nbformat 4 output, read back in cell order
    nb = new_notebook(cells=[new_code_cell("x", outputs=[shown("Fig. 4")]),
                             new_code_cell("y", outputs=[new_output("stream", text="hello")]),
                             new_code_cell("z", outputs=[shown("Table 2")])])
    nbformat.validate(nb)
    found = claims.records_in(nbformat.reads(nbformat.writes(nb), as_version=4))
    assert [r["section"] for r in found] == ["Fig. 4", "Table 2"] and found[0]["verdicts"][0]["claim"] == "c"
    nb.cells[0].outputs[0]["metadata"][claims.RECORD_KEY]["format"] = "cmg-verdicts/0"
    with pytest.raises(ValueError, match="cell 1 .*cmg-verdicts/0"):
        claims.records_in(nb)
