"""The after-Uni-Code chapter's verdicts and tables on hand-made records with known outcomes."""
from __future__ import annotations

import pytest

from cmg_lib.experiments import claims, successors

DIRECTIONS = ("V→A", "A→V")
SEEDS = (0, 1, 2)
NOISE = (-0.5, 0.0, 0.5)              # per seed: a spread small against the gaps below


def _record(method, task, direction, seed, value, released=None):
    metrics = ({"known": value, "unknown": value, "hscore": value, "released_known": value,
                "released_unknown": value, "released_hscore": value if released is None else released}
               if task == "oscmg" else {"accuracy": value})
    return {"method": method, "task": task, "direction": direction, "metric": value, "metrics": metrics,
            "pretrain": {"train": {"seed": seed}}}


def records(seeds=SEEDS, fcid_gain=5.0, toc_gain=-5.0, micu_gain=5.0, released_gap=10.0, released_micu_gain=None):
    """Uni-Code at 50 (+ seed noise); FCID, TOC and MICU offset by the gains; the released H-score above the
    validation one by ``released_gap``, MICU's advantage there ``released_micu_gain`` (default: as on
    validation)."""
    out = []
    released_micu_gain = micu_gain if released_micu_gain is None else released_micu_gain
    for i, seed in enumerate(seeds):
        base = 50.0 + NOISE[i]
        for d in DIRECTIONS:
            for task in successors.CLOSED_TASKS:
                out += [_record("unicode", task, d, seed, base), _record("fcid", task, d, seed, base + fcid_gain),
                        _record("micu", task, d, seed, base)]
            out.append(_record("fcid+toc", "avvp", d, seed, base + fcid_gain + toc_gain))
            for method, gain, rgain in (("unicode", 0.0, 0.0), ("fcid", 0.0, 0.0),
                                        ("micu", micu_gain, released_micu_gain)):
                out.append(_record(method, "oscmg", d, seed, base + gain, base + rgain + released_gap))
    return out


def test_verdicts_follow_the_gaps():
    verdicts = successors.after_unicode_claims(records())
    assert [v.outcome for v in verdicts] == [claims.HOLDS, claims.FAILS, claims.HOLDS, claims.HOLDS, claims.HOLDS]
    assert "FCID" in verdicts[0].claim and "TOC" in verdicts[1].claim and "validation" in verdicts[2].claim
    assert "test clips" in verdicts[3].claim and len(verdicts[4].parts) == 3 * 2     # methods x directions
    assert len(verdicts[0].parts) == 2 * 2                                           # tasks x directions
    # MICU ahead on validation but not with the release's threshold: the two MICU verdicts part ways
    split = successors.micu_open_set_claims(records(released_micu_gain=-5.0))
    assert [v.outcome for v in split] == [claims.HOLDS, claims.FAILS]
    # no gap beyond the seed noise: inconclusive; one seed: inconclusive by rule
    assert successors.fcid_transfer_claim(records(fcid_gain=0.0)).outcome == claims.INCONCLUSIVE
    one = successors.after_unicode_claims(records(seeds=(0,)))
    assert {v.outcome for v in one} == {claims.INCONCLUSIVE}
    assert successors.threshold_optimism_claim(records(released_gap=-3.0)).outcome == claims.FAILS


def _with_released_club(recs, gain):
    """``recs`` and the book recipe's extra row, FCID with CLUB on unscaled features, at FCID's values + ``gain``."""
    extra = [{**r, "method": successors.RELEASED_CLUB, "metric": r["metric"] + gain}
             for r in recs if r["method"] == "fcid" and r["task"] in successors.CLOSED_TASKS]
    return recs + extra


def test_the_released_club_row_adds_two_verdicts_after_fcids():
    """With the row (the book recipe's chapter): FCID's claim, then the row against FCID on AVE per direction, then
    FCID's claim for the row; without it (the released recipe) neither."""
    verdicts = successors.after_unicode_claims(_with_released_club(records(fcid_gain=-10.0), gain=20.0))
    assert [v.outcome for v in verdicts[:3]] == [claims.FAILS, claims.HOLDS, claims.HOLDS]
    assert "unscaled" in verdicts[1].claim and len(verdicts[1].parts) == 2 and "unscaled" in verdicts[2].claim
    assert len(verdicts) == 5 + 2 and "TOC" in verdicts[3].claim
    worse = successors.fcid_club_scale_claim(_with_released_club(records(), gain=-10.0))
    assert worse.outcome == claims.FAILS
    assert len(successors.after_unicode_claims(records())) == 5


def test_tables():
    recs = records()
    closed = successors.closed_set_table(recs)
    assert list(closed.index) == ["unicode", "fcid", "micu", "fcid+toc"]
    assert closed.loc["fcid", ("ave", "V→A")] == "55.0 ± 0.5" and closed.loc["fcid+toc", ("ave", "V→A")] == "–"
    assert closed.loc["fcid+toc", ("avvp", "A→V")] == "50.0 ± 0.5"
    ours, theirs = successors.open_set_table(recs), successors.open_set_table(recs, "released_")
    assert list(ours.columns.get_level_values("measure")[:3]) == ["known", "unknown", "H-score"]
    assert ours.loc["micu", ("V→A", "H-score")] == "55.0 ± 0.5"
    assert theirs.loc["micu", ("V→A", "H-score")] == "65.0 ± 0.5"
    assert len(successors.open_set_rows(recs)) == 3 * 2 * 3 * len(successors.CHOICES) * len(successors.MEASURES)
    with pytest.raises(KeyError):
        successors.open_set_table(recs, "test_")


def test_the_floor_row_follows_the_avvp_directions_and_reads_the_floor_per_test_modality():
    recs = [{**r, "test_modality": "audio" if r["direction"] == "V→A" else "video", "protocol": "heldout"}
            for r in records()]
    asked = []

    def floor(modality, protocol):
        asked.append((modality, protocol))
        return {"audio": 59.3, "video": 59.8}[modality]

    rows = successors.floor_records(recs, floor)
    assert [(r["direction"], r["metric"]) for r in rows] == [("V→A", 59.3), ("A→V", 59.8)]
    assert asked == [("audio", "heldout"), ("video", "heldout")]          # once per direction, not per record
    closed = successors.closed_set_table([*recs, *rows])
    assert list(closed.index)[-1] == successors.FLOOR
    assert closed.loc[successors.FLOOR, ("avvp", "A→V")] == "59.8"
    assert closed.loc[successors.FLOOR, ("ave", "V→A")] == "–"
    assert successors.floor_records([r for r in recs if r["task"] != "avvp"], floor) == []
