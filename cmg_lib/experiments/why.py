"""The controlled experiments of the chapter "Why the released recipe behaves differently here".

Each experiment starts from the book recipe (``book_av``) and puts ONE released choice back (:data:`SWITCHES`),
over the same pre-training seeds, so a difference is caused by that switch alone. Three more rows frame them: the
whole released recipe (``released_av`` trained as long as the book recipe), and the book recipe for fewer
(``why_short_steps``, the default scale's old budget) and for more updates (``why_long_factor`` x its epochs). The
book recipe's runs train the longest of these; the recipe's own row and the fewer-updates row are their snapshots
(``runs.snapshot``: identical to runs stopped there, the learning rate being constant). For every row the chapter
measures transfer (AVE, held-out protocol: the labelled-modality bound and the cross-modal directions) and the
diagnostics of ``experiments.diagnostics``; each switch's verdict tests the mechanism it is suspected of, on paired
seeds.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import BOOK_EPOCHS
from . import claims
from .diagnostics import diagnose
from .evals import AV_DIRECTIONS
from .notebook import NotebookRun

LABELLED = (("audio", "audio"), ("video", "video"))
CROSS = AV_DIRECTIONS                              # V→A, A→V: the paper's cross-modal directions


@dataclass(frozen=True)
class Switch:
    """One released choice put back into the book recipe, and the measure that should show its harm."""

    overrides: tuple[str, ...]
    suspect: str              # what the released choice is suspected of, as the chapter states it
    measure: str              # the diagnostic (or transfer measure) that should be lower with it
    label: str                # how the measure reads in a verdict


SWITCHES: dict[str, Switch] = {
    "CLUB gradient into the code": Switch(
        ("model.club_grad=both",), "CLUB strips the class out of the codes", "purity",
        "code purity (mean over modalities)"),
    "CLUB on a projection only CLUB reads": Switch(
        ("model.club_target=projection",), "the video CLUB term is vacuous (its y collapses to a constant)",
        "mi/video", "the video mi estimate"),
    "CMCM without temperature": Switch(
        ("model.cmcm_temperature=1.0",), "CMCM stays at chance: per-clip code distributions are nearly uniform",
        "cmcm_margin", "CMCM's distance below chance"),
    "codebook near the origin, resets undone": Switch(
        ("model.codebook_init=uniform", "model.reset_stats=keep"), "few codes win early and resets do not stick",
        "same_code", "same code on aligned segments"),
}
LONGER = "book recipe, more updates"
SHORTER = "book recipe, fewer updates"
ROWS = ("book recipe", *SWITCHES, "released recipe", SHORTER, LONGER)
SIZE = "24k"                                       # the AV tables' main pre-training set


def steps(nb: NotebookRun) -> dict[str, int]:
    """Updates per row kind: ``recipe`` (the book recipe's epochs, or the budget's ``book_steps``), ``shorter``
    and ``longer``."""
    recipe = nb.budget.recipe_steps("book", nb.scale, SIZE)
    return {"recipe": recipe, "shorter": nb.budget.why_short_steps, "longer": nb.budget.why_long_factor * recipe}


def longer_runs(nb: NotebookRun, seeds: Sequence[int]) -> dict[int, str]:
    """The book recipe trained for the longer row's updates, per seed, keeping snapshots at the recipe's and the
    shorter row's updates (and the explorer's steps)."""
    n = steps(nb)
    kept = sorted({n["shorter"], n["recipe"], *nb.budget.explorer_steps} - {n["longer"]})
    return {s: nb.pretrain("book_av", seed=s, pretrain_size=SIZE, steps=n["longer"],
                           overrides=[f"train.snapshot_steps=[{','.join(map(str, kept))}]"]) for s in seeds}


def baseline_runs(nb: NotebookRun, seeds: Sequence[int]) -> dict[int, str]:
    """The targets' baseline: the book recipe with every Uni-Code component off, as long as the recipe."""
    return {s: nb.pretrain("book_av", "baseline", seed=s, pretrain_size=SIZE) for s in seeds}


def recipe_rows(nb: NotebookRun, seeds: Sequence[int]) -> dict[str, dict[int, str]]:
    """The book recipe's rows from its longer runs: ``book recipe`` and ``SHORTER`` (their snapshots at the
    recipe's and the shorter row's updates) and ``LONGER`` (the runs themselves), per seed."""
    n, longer = steps(nb), longer_runs(nb, seeds)
    return {"book recipe": {s: nb.snapshot(c, n["recipe"]) for s, c in longer.items()},
            SHORTER: {s: nb.snapshot(c, n["shorter"]) for s, c in longer.items()}, LONGER: longer}


def row_runs(nb: NotebookRun, seeds: Sequence[int] | None = None) -> dict[str, dict[int, str]]:
    """Checkpoint per (row, pre-training seed), in :data:`ROWS` order; every row trains as long as the book recipe
    except the shorter and longer rows (:func:`recipe_rows`)."""
    seeds = list(nb.budget.why_seeds if seeds is None else seeds)
    recipe = recipe_rows(nb, seeds)
    out: dict[str, dict[int, str]] = {"book recipe": recipe["book recipe"]}
    for name, switch in SWITCHES.items():
        out[name] = {s: nb.pretrain("book_av", seed=s, pretrain_size=SIZE, overrides=switch.overrides)
                     for s in seeds}
    # the released recipe for as long as the book recipe: its epochs, and exactly its number of updates
    out["released recipe"] = {s: nb.pretrain("released_av", seed=s, pretrain_size=SIZE, steps=steps(nb)["recipe"],
                                             overrides=[f"train.epochs={BOOK_EPOCHS}"]) for s in seeds}
    out[SHORTER], out[LONGER] = recipe[SHORTER], recipe[LONGER]
    return out


def transfer(nb: NotebookRun, runs: dict[str, dict[int, str]]) -> list[dict]:
    """AVE records (labelled and cross-modal directions) of every row and pre-training seed, tagged ``row`` and
    ``kind``; one head seed per run (the budget's first): the verdicts' intervals come from pre-training seeds."""
    records = []
    for row, ckpts in runs.items():
        for ckpt in ckpts.values():
            for kind, directions in (("labelled", LABELLED), ("cross", CROSS)):
                records += nb.evaluate(ckpt, "ave", directions, nb.seeds[:1], tags={"row": row, "kind": kind})
    return records


def diagnostics(nb: NotebookRun, runs: dict[str, dict[int, str]]) -> dict[str, dict[int, dict[str, float]]]:
    """``experiments.diagnostics.diagnose`` of every row and seed, plus the derived ``purity`` (mean over
    modalities) and ``cmcm_margin`` (chance minus the CMCM term: > 0 when CMCM has learned something)."""
    out = {}
    for row, ckpts in runs.items():
        per_seed = diagnose(ckpts, nb.data, scale=nb.scale, cache_dir=nb.cache_dir)
        for d in per_seed.values():
            d["purity"] = float(np.mean([v for k, v in d.items() if k.startswith("purity/")]))
            if "cmcm" in d:
                d["cmcm_margin"] = d["cmcm_chance"] - d["cmcm"]
        out[row] = per_seed
    return out


def switch_claims(diag: dict[str, dict[int, dict[str, float]]], records: list[dict]) -> list[claims.Verdict]:
    """Per switch: "<suspect>": the book recipe's measure exceeds the switched row's (paired over seeds); and for
    the whole released recipe and the shorter budget: cross-modal transfer is lower than the book recipe's."""
    out = []
    book = diag["book recipe"]
    for name, switch in SWITCHES.items():
        ours = {s: d[switch.measure] for s, d in book.items() if switch.measure in d}
        theirs = {s: d[switch.measure] for s, d in diag[name].items() if switch.measure in d}
        out.append(claims.greater(f"{switch.suspect} ({name}; measure: {switch.label})", ours, theirs,
                                  names=("book recipe", name), unit=""))
    cross = {row: claims.by_pretrain_seed(records, row=row, kind="cross")
             for row in ("book recipe", "released recipe", SHORTER, LONGER)}
    for row in ("released recipe", SHORTER):
        out.append(claims.greater(f"the book recipe transfers better across modalities than the {row} (AVE, mean "
                                  "of V→A and A→V)", cross["book recipe"], cross[row], names=("book recipe", row)))
    out.append(claims.greater("more updates transfer better: the number of updates still limits the book recipe "
                              "(AVE, mean of V→A and A→V)", cross[LONGER], cross["book recipe"],
                              names=(LONGER, "book recipe")))
    return out


def target_claims(records: list[dict], baseline: dict[int, float], diag: dict[int, dict[str, float]],
                  row: str = "book recipe") -> list[claims.Verdict]:
    """The targets of the book recipe (full method, AVE held-out) for ``row`` (the recipe, or the same runs with
    more updates): labelled-modality accuracy >= 80 %, cross-modal >= 0.8 x labelled and >= the baseline's + 30
    points, the same code on >= 50 % of aligned segments (``diag``: that row's diagnostics per seed)."""
    labelled = claims.by_pretrain_seed(records, row=row, kind="labelled")
    cross = claims.by_pretrain_seed(records, row=row, kind="cross")
    ratio = {s: cross[s] / labelled[s] for s in set(cross) & set(labelled) if labelled[s] > 0}
    same = {s: 100 * d["same_code"] for s, d in diag.items()}
    return [claims.exceeds("labelled-modality accuracy reaches 80 %", labelled, 80.0, what="mean of A→A, V→V",
                           unit=" %"),
            claims.exceeds("cross-modal transfer reaches 0.8 x the labelled bound", ratio, 0.8,
                           what="(mean of V→A, A→V) / labelled"),
            claims.greater("cross-modal transfer beats the baseline by 30 points", cross, baseline, 30.0,
                           names=(row, "baseline")),
            claims.exceeds("audio and video share the code on half of the aligned segments", same, 50.0,
                           what="same code on aligned segments", unit=" %")]
