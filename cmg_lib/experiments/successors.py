"""The "After Uni-Code" chapter's tables and verdicts: Uni-Code against its successors in the authors' repository,
FCID (with and without TOC) and MICU, on one data set, one budget and one protocol.

The records come from ``chapters.after_unicode`` (tagged ``method``: :data:`ROWS`). The claims tested are the
follow-ups' own: FCID transfers better than Uni-Code (ACL 2025), TOC improves on the codes it starts from (the
same paper), MICU beats Uni-Code in open-set H-score (ICCV 2025); and one about the protocol: the release's
threshold, chosen on the test clips (book/differences.md#oscmg-threshold), reports a higher H-score than a
threshold chosen on validation. Each verdict is judged over pre-training seeds (``claims``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from . import claims
from .tables import results_table

# FCID once more with CLUB on unscaled features, the released choice (book/differences.md#club-y-scale), beside
# the book recipe's standardised ones: the book chose that scale for Uni-Code's CLUB, and FCID's coarse CLUB
# reads other features (ReLU outputs of the clip vector); this row shows what the choice does to FCID.
RELEASED_CLUB = "fcid+released-club"
RELEASED_CLUB_OVERRIDES = ("model.club_y_scale=raw",)
ROWS = ("unicode", "fcid", "fcid+toc", RELEASED_CLUB, "micu")           # the chapter's rows (the ``method`` tag)
FLOOR = "background only"        # the AVVP reference row: a head that calls every segment background
LABELS = {"unicode": "Uni-Code", "fcid": "FCID", "fcid+toc": "FCID + TOC",
          RELEASED_CLUB: "FCID, CLUB on unscaled features (released)", "micu": "MICU",
          FLOOR: "no code read: every segment background"}
CLOSED_TASKS = ("ave", "avvp")
TOC_TASK = "avvp"          # the chapter's TOC rows: the release keeps all dimensions on AVE (toc.RELEASED_DIMS)
OPEN_TASK = "oscmg"
MEASURES = {"known": "known", "unknown": "unknown", "hscore": "H-score"}
CHOICES = {"": "threshold on validation", "released_": "released: threshold on the test clips"}


def _directions(records: Sequence[dict], task: str) -> list[str]:
    return list(dict.fromkeys(r["direction"] for r in records if r["task"] == task))


def closed_set_table(records: Sequence[dict]) -> pd.DataFrame:
    """AVE accuracy and AVVP precision (``metric``) per row and (task, direction)."""
    rows = [r for r in records if r["task"] in CLOSED_TASKS]
    return results_table(rows, rows="method", cols=("task", "direction"))


def floor_records(records: Sequence[dict], floor: Callable[[str, str], float]) -> list[dict]:
    """The :data:`FLOOR` row of the closed-set table: per AVVP direction of ``records`` (in their order),
    ``floor(test_modality, protocol)`` (``evals.avvp_floor``), what a head scores that calls every segment
    background."""
    seen = dict.fromkeys((r["direction"], r["test_modality"], r["protocol"]) for r in records if r["task"] == "avvp")
    return [{"method": FLOOR, "task": "avvp", "direction": d, "test_modality": m, "protocol": p,
             "metric": float(floor(m, p))} for d, m, p in seen]


def open_set_rows(records: Sequence[dict]) -> list[dict]:
    """One record per (open-set record, threshold choice, measure), ``metric`` that measure in percent and
    ``choice`` / ``measure`` their labels (:data:`CHOICES`, :data:`MEASURES`)."""
    return [{**r, "metric": r["metrics"][prefix + key], "choice": choice, "measure": label}
            for r in records if r["task"] == OPEN_TASK
            for prefix, choice in CHOICES.items() for key, label in MEASURES.items()]


def open_set_table(records: Sequence[dict], choice: str = "") -> pd.DataFrame:
    """Known and unknown accuracy and H-score per row and (direction, measure) at one threshold choice (``""``:
    validation, ``"released_"``: the release's)."""
    rows = [r for r in open_set_rows(records) if r["choice"] == CHOICES[choice]]
    return results_table(rows, rows="method", cols=("direction", "measure"))


def _at(records, method: str, task: str, direction: str, value: str = "metric") -> dict[int, float]:
    return claims.by_pretrain_seed(records, value, method=method, task=task, direction=direction)


def fcid_transfer_claim(records: Sequence[dict], row: str = "fcid") -> claims.Verdict:
    """FCID's claim: better cross-modal transfer than Uni-Code, in every (task, direction) of AVE and AVVP, for the
    chapter's FCID ``row`` (``"fcid"`` or :data:`RELEASED_CLUB`)."""
    parts = [claims.greater(f"{task} {d}", _at(records, row, task, d), _at(records, "unicode", task, d),
                            names=("FCID", "Uni-Code"))
             for task in CLOSED_TASKS for d in _directions(records, task)]
    which = "" if row == "fcid" else f"; {LABELS[row]}"
    return claims.all_of(f"FCID transfers better than Uni-Code (ACL 2025; AVE and AVVP{which})", parts,
                         "task x direction comparisons")


def fcid_club_scale_claim(records: Sequence[dict]) -> claims.Verdict:
    """What the book recipe's CLUB scale does to FCID: with CLUB on unscaled features (:data:`RELEASED_CLUB`) its
    codes transfer better on AVE than with the standardised ones, in every direction."""
    parts = [claims.greater(f"ave {d}", _at(records, RELEASED_CLUB, "ave", d), _at(records, "fcid", "ave", d),
                            names=("released scale", "standardised"))
             for d in _directions(records, "ave")]
    return claims.all_of("FCID transfers better with CLUB on unscaled features (released) than with the book "
                         "recipe's standardised ones (AVE)", parts, "directions")


def toc_claim(records: Sequence[dict]) -> claims.Verdict:
    """TOC's claim: keeping the dimensions TOC selects improves on FCID's full codes, per direction of the TOC
    task (:data:`TOC_TASK`)."""
    parts = [claims.greater(f"{TOC_TASK} {d}", _at(records, "fcid+toc", TOC_TASK, d),
                            _at(records, "fcid", TOC_TASK, d), names=("with TOC", "without"))
             for d in _directions([r for r in records if r["method"] == "fcid+toc"], TOC_TASK)]
    return claims.all_of(f"TOC improves on the codes it starts from (FCID's codes, {TOC_TASK.upper()})", parts,
                         "directions")


def micu_open_set_claims(records: Sequence[dict]) -> list[claims.Verdict]:
    """MICU's claim: a higher open-set H-score than Uni-Code in every direction, with the threshold chosen on
    validation and, as the release chooses it, on the test clips."""
    out = []
    for prefix, choice in CHOICES.items():
        value = f"metrics.{prefix}hscore"
        parts = [claims.greater(d, _at(records, "micu", OPEN_TASK, d, value),
                                _at(records, "unicode", OPEN_TASK, d, value), names=("MICU", "Uni-Code"))
                 for d in _directions(records, OPEN_TASK)]
        out.append(claims.all_of(f"MICU beats Uni-Code in open-set H-score (ICCV 2025; {choice})", parts,
                                 "directions"))
    return out


def threshold_optimism_claim(records: Sequence[dict], methods: Sequence[str] = ("unicode", "fcid", "micu")
                             ) -> claims.Verdict:
    """The released protocol's H-score (threshold and epoch chosen on the test clips) exceeds the H-score with
    the threshold and epoch chosen on validation, for every method and direction (paired per seed)."""
    parts = [claims.greater(f"{LABELS[m]} {d}", _at(records, m, OPEN_TASK, d, "metrics.released_hscore"),
                            _at(records, m, OPEN_TASK, d, "metrics.hscore"), names=("test-chosen", "validation"))
             for m in methods for d in _directions(records, OPEN_TASK)]
    return claims.all_of("choosing the threshold on the test clips (the release) overstates the H-score", parts,
                         "method x direction comparisons")


def after_unicode_claims(records: Sequence[dict]) -> list[claims.Verdict]:
    """Every verdict of the chapter, in its order."""
    fcid = [fcid_transfer_claim(records)]
    if any(r["method"] == RELEASED_CLUB for r in records):          # the book recipe's chapter has the row
        fcid += [fcid_club_scale_claim(records), fcid_transfer_claim(records, RELEASED_CLUB)]
    return [*fcid, toc_claim(records), *micu_open_set_claims(records), threshold_optimism_claim(records)]
