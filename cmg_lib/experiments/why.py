"""The experiments of the chapter "Why the released recipe behaves differently here".

Four parts, all on the AV tables' main pre-training set (``Budget.main_size``, 24K) and the same pre-training
seeds:

* **The learning curve** of the book recipe: its runs train as long as the released recipe (``Budget.steps_for``,
  3,000 updates; the same runs as Table 1's Uni-Code row) and keep snapshots at ``Budget.curve_steps``; with a
  constant learning rate a snapshot at step s *is* the run of s steps, so the curve is the evidence for the length.
  The targets of the recipe are judged at full length against references the build measures (:func:`target_claims`).
* **The plateau test** (:func:`plateau_runs`, where ``Budget.plateau_test``): the recipe trained for twice its
  updates on the same seeds, against its own runs (:func:`plateau_table`, :func:`curve_claim`); and, for the CLUB
  part, "w/o CLUB" as long (:func:`doubled_club_runs`, :func:`delay_claims`): does CLUB's effect last?
* **Controlled experiments**: each starts from the book recipe (``book_av``) and puts ONE released choice back
  (:data:`SWITCHES`), or all of them (the released recipe, at the book's batch), for ``Budget.experiment_steps``
  updates, against the recipe's own snapshot at the same updates; each switch's verdict tests the mechanism it is
  suspected of, on paired seeds (:func:`switch_claims`).
* **What CLUB does to the codes** (:data:`CLUB_CONDITIONS`): with CLUB the decoder rebuilds the input through the
  code, without it through the specific features alone; the conditions change CLUB's presence, weight and
  estimator scale, cut the reconstruction's gradient into the code and widen the audio specific encoder to its
  released width, to find which path lowers the share of aligned segments that get the same code. Those of
  :data:`CONVERGED_CLUB` train as long as the recipe (:func:`club_claims`), the others (:data:`OTHER_CLUB`) the
  experiments' length (:func:`condition_claims`).

A scale whose ``Budget.experiment_steps`` is None trains no run shorter than the recipe here
(:func:`trains_experiments`): the switches, the released recipe and :data:`OTHER_CLUB` are left to scale ``full``
(:func:`left_to_full`), so that every verdict of the chapter rests on runs as long as the recipe; one without
``Budget.plateau_test`` leaves the plateau test there too (:func:`plateau_left_to_full`).

Every row is measured by its AVE transfer (held-out protocol: the labelled-modality bound and the cross-modal
directions, :func:`transfer`) and by ``experiments.diagnostics`` (:func:`diagnostics`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..presets import PAPER_MODALITIES, ablation_overrides
from . import claims
from .diagnostics import diagnose
from .evals import AV_DIRECTIONS, raw_reference
from .notebook import NotebookRun
from .paper import transfer_ratio

LABELLED = (("audio", "audio"), ("video", "video"))
CROSS = AV_DIRECTIONS                              # V→A, A→V: the paper's cross-modal directions
RECIPE = "book recipe"


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
RELEASED = "released recipe"
ROWS = (RECIPE, *SWITCHES, RELEASED)

NO_CLUB = "w/o CLUB"
NO_RECON_GRADIENT = "CLUB, reconstruction does not train the code"
TENTH_CLUB = "CLUB at a tenth of its weight"
UNSCALED_CLUB = "CLUB on unscaled features (released)"
WIDE_AUDIO = "CLUB, audio specific encoder at the released width"
RELEASED_AUDIO_WIDTH = PAPER_MODALITIES["audio"].specific_dim             # 256, four times the book's 64
CLUB_CONDITIONS: dict[str, tuple[str, ...]] = {
    NO_CLUB: tuple(ablation_overrides("w/o CLUB")),                        # Table 2's row (its snapshot)
    NO_RECON_GRADIENT: ("model.recon_trains_code=false",),
    TENTH_CLUB: ("model.club_weight=0.1",),
    UNSCALED_CLUB: ("model.club_y_scale=raw",),
    # the specific encoder's capacity: the audio Psi (where CLUB makes the decoder lean on the code) as released
    WIDE_AUDIO: (f"model.modalities.audio.specific_dim={RELEASED_AUDIO_WIDTH}",
                 f"model.modalities.audio.club_dim={RELEASED_AUDIO_WIDTH}"),
}
# The conditions that train as long as the recipe: CLUB's effect on the shared codes and the path it takes are the
# chapter's finding, so their verdicts rest on converged runs; the others train the experiments' length.
CONVERGED_CLUB = (NO_CLUB, NO_RECON_GRADIENT)
OTHER_CLUB = tuple(name for name in CLUB_CONDITIONS if name not in CONVERGED_CLUB)


def lengths(nb: NotebookRun) -> dict[str, int | None]:
    """Updates per kind of run: ``recipe`` (full length), ``experiment`` (the controlled experiments; None where the
    scale leaves them to scale ``full``), the learning curve's points ``curve`` (the snapshots below full length,
    then full length) and ``doubled`` (twice the recipe: the plateau test, :func:`doubled_runs`)."""
    recipe = nb.budget.steps_for("book")
    return {"recipe": recipe, "experiment": nb.budget.experiment_steps, "curve": nb.checkpoint_steps(),
            "doubled": 2 * recipe}


def recipe_runs(nb: NotebookRun, seeds: Sequence[int], method: str = "unicode", overrides: Sequence[str] = (),
                at: int | None = None) -> dict[int, str]:
    """The book recipe's full-length runs per seed (``method``, ``overrides``: Table 1's and Table 2's runs), or
    their snapshots ``at`` that many updates."""
    return {s: nb.pretrain("book_av", method, seed=s, pretrain_size=nb.budget.main_size, overrides=overrides, at=at)
            for s in seeds}


def experiment_runs(nb: NotebookRun, seeds: Sequence[int], overrides: Sequence[str]) -> dict[int, str]:
    """Runs of the controlled experiments' length (``Budget.experiment_steps``) per seed: the book recipe
    (``book_av``, Uni-Code) on the main set with ``overrides``."""
    return {s: nb.pretrain("book_av", seed=s, pretrain_size=nb.budget.main_size, overrides=overrides,
                           steps=lengths(nb)["experiment"]) for s in seeds}


def _why_seeds(nb: NotebookRun, seeds: Sequence[int] | None) -> list[int]:
    return list(nb.budget.why_seeds if seeds is None else seeds)


def trains_experiments(nb: NotebookRun) -> bool:
    """Whether this scale trains the controlled experiments shorter than the recipe (the switches, the released
    recipe, :data:`OTHER_CLUB`): ``Budget.experiment_steps`` is set."""
    return nb.budget.experiment_steps is not None


def left_to_full(nb: NotebookRun, what: str) -> str:
    """What the chapter prints in place of ``what`` (some of its controlled experiments) at a scale that leaves them
    to scale ``full`` (:func:`trains_experiments`): why, and the commands that train them."""
    return (f"**At this scale, {what} are left to scale `full`.** Every verdict of this chapter rests on runs as "
            f"long as the recipe ({lengths(nb)['recipe']} updates), and these runs do not fit this scale's budget at "
            f"that length; at the length they could afford, the other chapters' {nb.budget.short} updates, they "
            "would compare how fast each condition learns, not where it ends. `make book SCALE=full` trains them "
            "as long as the recipe; `python tools/heldout_targets.py --scale default --seeds 0,1,2 "
            "--club-condition NAME`, `--switch NAME` (repeatable; NAME one of the CLUB conditions or of the "
            "released choices) or `--released` trains one that long on the book's seeds and prints its measures "
            "against the recipe's.")


def curve_runs(nb: NotebookRun, seeds: Sequence[int]) -> dict[int, dict[int, str]]:
    """The learning curve's checkpoints: ``{updates: {seed: checkpoint}}`` of the recipe's full-length runs."""
    return {step: recipe_runs(nb, seeds, at=step) for step in lengths(nb)["curve"]}


def trains_plateau(nb: NotebookRun) -> bool:
    """Whether this scale trains the plateau test (``Budget.plateau_test``): the recipe for twice its updates."""
    return nb.budget.plateau_test


def plateau_runs(nb: NotebookRun, seeds: Sequence[int] | None = None) -> dict[int, dict[int, str]]:
    """The plateau test's checkpoints, ``{updates: {seed: checkpoint}}``: the recipe's full-length runs and
    :func:`doubled_runs`; none where the scale leaves the test to scale ``full`` (:func:`trains_plateau`)."""
    seeds = _why_seeds(nb, seeds)
    if not trains_plateau(nb):
        return {}
    return {lengths(nb)["recipe"]: recipe_runs(nb, seeds), lengths(nb)["doubled"]: doubled_runs(nb, seeds)}


def doubled_club_runs(nb: NotebookRun, seeds: Sequence[int] | None = None) -> dict[str, dict[int, str]]:
    """The recipe and "w/o CLUB" trained for twice the recipe's updates, ``{row: {seed: checkpoint}}``: does CLUB's
    effect on the codes last, or does it fade with training? None where the scale leaves the plateau test to scale
    ``full`` (:func:`trains_plateau`)."""
    seeds = _why_seeds(nb, seeds)
    if not trains_plateau(nb):
        return {}
    return {RECIPE: doubled_runs(nb, seeds), NO_CLUB: doubled_runs(nb, seeds, CLUB_CONDITIONS[NO_CLUB])}


def plateau_left_to_full(nb: NotebookRun, what: str = "the plateau test", runs: str = "the recipe",
                         flags: str = "--doubled") -> str:
    """What the chapter prints in place of ``what`` (runs of ``runs`` twice as long as the recipe) at a scale that
    leaves the plateau test to scale ``full``; ``flags``: the options of ``tools/heldout_targets.py`` that train
    them."""
    n = lengths(nb)
    return (f"**At this scale, {what} is left to scale `full`.** It trains {runs} for {n['doubled']} updates on "
            f"each seed, which does not fit this scale's budget beside the runs the verdicts rest on. `make book "
            f"SCALE=full` trains it; `python tools/heldout_targets.py --scale default --seeds 0,1,2 {flags}` trains "
            "it on the book's seeds and prints the same measures and verdicts.")


def doubled_runs(nb: NotebookRun, seeds: Sequence[int], overrides: Sequence[str] = ()) -> dict[int, str]:
    """The book recipe (with ``overrides``: a condition of the chapter) trained for twice its updates, per seed:
    the issue's test of a plateau (doubling the updates moves the metric by less than its seed interval), against
    the recipe's own runs on the same seeds. With a constant learning rate the first half of such a run is the
    recipe's run."""
    return {s: nb.pretrain("book_av", seed=s, pretrain_size=nb.budget.main_size, overrides=overrides,
                           steps=lengths(nb)["doubled"]) for s in seeds}


def row_runs(nb: NotebookRun, seeds: Sequence[int] | None = None) -> dict[str, dict[int, str]]:
    """The controlled experiments' checkpoints per (row, seed), in :data:`ROWS` order, all at the experiment's
    updates: the recipe's snapshot, one run per switch, and the released recipe at the book's batch; none where
    the scale leaves them to scale ``full``."""
    seeds = _why_seeds(nb, seeds)
    if not trains_experiments(nb):
        return {}
    out = {RECIPE: recipe_runs(nb, seeds, at=lengths(nb)["experiment"])}
    for name, switch in SWITCHES.items():
        out[name] = experiment_runs(nb, seeds, switch.overrides)
    out[RELEASED] = released_runs(nb, seeds, lengths(nb)["experiment"])
    return out


def released_runs(nb: NotebookRun, seeds: Sequence[int], steps: int) -> dict[int, str]:
    """The released recipe (``released_av``, every released choice) at the book's batch at this scale, ``steps``
    updates per seed: the controlled experiments' last row, or (``tools/heldout_targets.py --released``) a run as
    long as the recipe."""
    batch = nb.config("book_av").train.batch_size
    return {s: nb.pretrain("released_av", seed=s, pretrain_size=nb.budget.main_size,
                           overrides=[f"train.batch_size={batch}"], steps=steps) for s in seeds}


def club_runs(nb: NotebookRun, seeds: Sequence[int] | None = None) -> dict[str, dict[int, str]]:
    """The conditions of :data:`OTHER_CLUB` per (condition, seed), runs of the experiment's length, beside the
    recipe and "w/o CLUB" at the same updates (snapshots of their full-length runs) they are compared with; none
    where the scale leaves them to scale ``full``."""
    seeds, n = _why_seeds(nb, seeds), lengths(nb)["experiment"]
    if not trains_experiments(nb):
        return {}
    out = {RECIPE: recipe_runs(nb, seeds, at=n),
           NO_CLUB: recipe_runs(nb, seeds, overrides=CLUB_CONDITIONS[NO_CLUB], at=n)}
    out.update({name: experiment_runs(nb, seeds, CLUB_CONDITIONS[name]) for name in OTHER_CLUB})
    return out


def converged_club_runs(nb: NotebookRun, seeds: Sequence[int] | None = None) -> dict[str, dict[int, str]]:
    """The recipe and the conditions of :data:`CONVERGED_CLUB` at full length (the recipe and "w/o CLUB" are Table
    1's and Table 2's runs), per seed."""
    seeds = _why_seeds(nb, seeds)
    out = {RECIPE: recipe_runs(nb, seeds)}
    out.update({name: recipe_runs(nb, seeds, overrides=CLUB_CONDITIONS[name]) for name in CONVERGED_CLUB})
    return out


def baseline_runs(nb: NotebookRun, seeds: Sequence[int]) -> dict[int, str]:
    """The targets' baseline: the book recipe with every Uni-Code component off, at full length (Table 1's)."""
    return recipe_runs(nb, seeds, method="baseline")


def transfer(nb: NotebookRun, runs: Mapping[str, Mapping[int, str]], key: str = "row") -> list[dict]:
    """AVE records (labelled and cross-modal directions) of every row and pre-training seed, tagged ``key`` (the
    row's name) and ``kind``; one head seed per run (the budget's first): the intervals come from pre-training
    seeds."""
    records = []
    for row, ckpts in runs.items():
        for ckpt in ckpts.values():
            for kind, directions in (("labelled", LABELLED), ("cross", CROSS)):
                records += nb.evaluate(ckpt, "ave", directions, nb.seeds[:1], tags={key: row, "kind": kind})
    return records


_DIAGNOSED: dict[tuple, dict[str, float]] = {}      # (checkpoint, data, scale) -> its diagnostics, per kernel


def diagnostics(nb: NotebookRun, runs: Mapping[str, Mapping[int, str]]) -> dict[str, dict[int, dict[str, float]]]:
    """``experiments.diagnostics.diagnose`` of every row and seed, plus the derived ``purity`` and
    ``code_reliance`` (means over modalities) and ``cmcm_margin`` (chance minus the CMCM term: > 0 when CMCM has
    learned something); a checkpoint that several parts share is diagnosed once per kernel."""
    out = {}
    for row, ckpts in runs.items():
        keys = {s: (str(c), nb.data, nb.scale) for s, c in ckpts.items()}
        todo = {s: c for s, c in ckpts.items() if keys[s] not in _DIAGNOSED}
        for s, d in diagnose(todo, nb.data, scale=nb.scale, cache_dir=nb.cache_dir).items():
            for name in ("purity", "code_reliance"):
                d[name] = float(np.mean([v for k, v in d.items() if k.startswith(f"{name}/")]))
            if "cmcm" in d:
                d["cmcm_margin"] = d["cmcm_chance"] - d["cmcm"]
            _DIAGNOSED[keys[s]] = d
        out[row] = {s: dict(_DIAGNOSED[keys[s]]) for s in ckpts}
    return out


def per_seed(diag: Mapping[str, Mapping[int, Mapping[str, float]]], row: str, measure: str,
             scale: float = 1.0) -> dict[int, float]:
    """One diagnostic of one row per seed (times ``scale``), for the verdicts."""
    return {s: scale * d[measure] for s, d in diag[row].items() if measure in d}


def curve_table(records: list[dict], diag: Mapping[int, Mapping[int, Mapping[str, float]]]) -> list[dict]:
    """The learning curve as rows ``{updates, seed, labelled, cross, same code}`` (``records`` tagged ``updates``
    by :func:`transfer`, ``diag[updates][seed]``), one per (updates, seed)."""
    rows = []
    for step, seeds in diag.items():
        labelled = claims.by_pretrain_seed(records, updates=step, kind="labelled")
        cross = claims.by_pretrain_seed(records, updates=step, kind="cross")
        for s, d in seeds.items():
            rows.append({"updates": step, "seed": s, "labelled": labelled.get(s, np.nan),
                         "cross": cross.get(s, np.nan), "same code": 100 * d["same_code"]})
    return rows


def plateau_table(curve: Sequence[Mapping], first: int, last: int) -> dict[str, dict[str, float | str]]:
    """The plateau test as ``{measure: {column: value}}`` from :func:`curve_table` rows at ``first`` (the recipe)
    and ``last`` (twice as many) updates: per measure (labelled, cross, same code) its mean and 95 % half-width
    over the seeds at ``first``, its mean at ``last``, the seed-paired change, and whether doubling moved it by
    less than that half-width (the issue's plateau: doubling moves the metric by less than its seed interval; one
    seed has no interval)."""
    out = {}
    for measure in ("labelled", "cross", "same code"):
        at = {n: {r["seed"]: r[measure] for r in curve if r["updates"] == n} for n in (first, last)}
        seeds = sorted(set(at[first]) & set(at[last]))
        mean, half, _ = claims.t_interval([at[first][s] for s in seeds])
        change, change_half, _ = claims.t_interval([at[last][s] - at[first][s] for s in seeds])
        out[measure] = {f"{first} updates": mean, "its 95 % half-width": half,
                        f"{last} updates": float(np.mean([at[last][s] for s in seeds])),
                        "change (paired)": change, "change's 95 % half-width": change_half,
                        "moved less than the half-width": ("no interval (one seed)" if not np.isfinite(half)
                                                           else "yes" if abs(change) < half else "no")}
    return out


# ------------------------------------------------------------------------------------------------------ verdicts
def switch_claims(diag: Mapping[str, Mapping[int, Mapping[str, float]]], records: list[dict]) -> list[claims.Verdict]:
    """Per switch: "<suspect>": the book recipe's measure exceeds the switched row's (paired over seeds); and for
    the whole released recipe: cross-modal transfer is lower than the book recipe's."""
    out = [switch_claim(name, per_seed(diag, RECIPE, switch.measure), per_seed(diag, name, switch.measure))
           for name, switch in SWITCHES.items()]
    cross = {row: claims.by_pretrain_seed(records, row=row, kind="cross") for row in (RECIPE, RELEASED)}
    return out + [released_claim(cross[RECIPE], cross[RELEASED])]


def switch_claim(name: str, recipe: Mapping[int, float], switched: Mapping[int, float]) -> claims.Verdict:
    """One switch's verdict: "<suspect>": the measure it is suspected of lowering, per seed, is higher with the book
    recipe (``recipe``) than with the released choice put back (``switched``)."""
    switch = SWITCHES[name]
    return claims.greater(f"{switch.suspect} ({name}; measure: {switch.label})", recipe, switched,
                          names=(RECIPE, name), unit="")


def released_claim(recipe: Mapping[int, float], released: Mapping[int, float]) -> claims.Verdict:
    """The book recipe's cross-modal transfer (``recipe``, per seed) exceeds the released recipe's."""
    return claims.greater(f"the book recipe transfers better across modalities than the {RELEASED} (AVE, mean of "
                          "V→A and A→V)", recipe, released, names=(RECIPE, RELEASED))


def curve_claim(records: list[dict], first: int, last: int) -> claims.Verdict:
    """The last doubling of the updates still raises cross-modal transfer (``first`` -> ``last`` updates, paired
    over seeds): the evidence that the length matters (holds) or that the curve has flattened (inconclusive or
    does not hold)."""
    at = {n: claims.by_pretrain_seed(records, updates=n, kind="cross") for n in (first, last)}
    return claims.greater(f"cross-modal transfer still rises from {first} to {last} updates (AVE, mean of V→A and "
                          "A→V)", at[last], at[first], names=(f"{last} updates", f"{first} updates"))


def target_claims(records: list[dict], baseline: Mapping[int, float], raw: Mapping[str, float],
                  diag: Mapping[int, Mapping[str, float]], paper_ratio: float, updates: int) -> list[claims.Verdict]:
    """The book recipe at ``updates`` (the learning curve's ``records``, tagged ``updates``; ``diag``: its
    diagnostics per seed there) against references the build measures or reads: the same head on the raw features
    (``raw``: per modality, mean over head seeds), the paper's own transfer ratio (``paper_ratio``, from its
    tables), the baseline's cross-modal accuracy (``baseline`` per seed), and the same-code rate of independent
    choices (chance, per seed)."""
    labelled = claims.by_pretrain_seed(records, updates=updates, kind="labelled")
    cross = claims.by_pretrain_seed(records, updates=updates, kind="cross")
    raw_mean = float(np.mean(list(raw.values())))
    ratio = {s: cross[s] / labelled[s] for s in set(cross) & set(labelled) if labelled[s] > 0}
    same = {s: 100 * d["same_code"] for s, d in diag.items()}
    chance = {s: 100 * d["same_code_chance"] for s, d in diag.items()}
    return [claims.greater("the codes keep the class information of the raw features: a head on one modality's "
                           "codes does as well as the same head on its raw features (AVE, mean of A→A and V→V)",
                           labelled, {s: raw_mean for s in labelled}, names=("codes", "raw features")),
            claims.exceeds(f"cross-modal transfer keeps the paper's share of the labelled bound ({paper_ratio:.2f}, "
                           "from its tables)", ratio, paper_ratio,
                           what="(mean of V→A, A→V) / (mean of A→A, V→V)"),
            claims.greater("cross-modal transfer beats the baseline, which has no Uni-Code component", cross,
                           baseline, names=(RECIPE, "baseline")),
            claims.greater("audio and video share the code on aligned segments beyond chance", same, chance,
                           names=("same code", "independent choices"))]


def club_claims(full: Mapping[str, Mapping[int, Mapping[str, float]]]) -> list[claims.Verdict]:
    """What CLUB does to the codes at full length, on paired seeds: ``full`` holds the recipe and
    :data:`CONVERGED_CLUB` (their diagnostics per seed)."""
    same = {row: per_seed(full, row, "same_code", 100) for row in full}
    rely = {row: per_seed(full, row, "code_reliance") for row in full}
    cut = NO_RECON_GRADIENT
    return [
        claims.greater("CLUB lowers the share of aligned segments that get the same code", same[NO_CLUB],
                       same[RECIPE], names=(NO_CLUB, RECIPE)),
        claims.greater("with CLUB the decoder rebuilds the input through the code (reconstruction error with other "
                       "clips' codes / with its own)", rely[RECIPE], rely[NO_CLUB], names=(RECIPE, NO_CLUB),
                       unit=""),
        claims.greater("the effect travels through the reconstruction's gradient into the code: cut it, keep CLUB, "
                       "and the same code returns", same[cut], same[RECIPE], names=(cut, RECIPE)),
    ]


def delay_claims(full: Mapping[str, Mapping[int, Mapping[str, float]]],
                 doubled: Mapping[str, Mapping[int, Mapping[str, float]]]) -> list[claims.Verdict]:
    """Does CLUB's effect on the same code last? ``full`` and ``doubled`` hold the recipe and "w/o CLUB" (their
    diagnostics per seed) at the recipe's length and at twice it (:func:`doubled_club_runs`): whether CLUB still
    lowers the same code at twice the updates, and whether its gap to "w/o CLUB" shrinks (paired over seeds)."""
    same = {n: {row: per_seed(d, row, "same_code", 100) for row in (RECIPE, NO_CLUB)}
            for n, d in (("full", full), ("doubled", doubled))}
    gap = {n: {s: same[n][NO_CLUB][s] - same[n][RECIPE][s] for s in same[n][RECIPE] if s in same[n][NO_CLUB]}
           for n in same}
    return [
        claims.greater("at twice the updates, CLUB still lowers the share of aligned segments that get the same code",
                       same["doubled"][NO_CLUB], same["doubled"][RECIPE], names=(NO_CLUB, RECIPE)),
        claims.greater("CLUB's effect fades with training: w/o CLUB's lead in the same code is smaller at twice the "
                       "updates", gap["full"], gap["doubled"], names=("lead at the recipe's length",
                                                                      "lead at twice it")),
    ]


def condition_claims(diag: Mapping[str, Mapping[int, Mapping[str, float]]]) -> list[claims.Verdict]:
    """What CLUB's weight, its estimator's scale and the specific encoder's width change, on paired seeds: ``diag``
    holds :data:`OTHER_CLUB`, the recipe and "w/o CLUB" at the experiment's updates (:func:`club_runs`)."""
    same = {row: per_seed(diag, row, "same_code", 100) for row in diag}
    tenth, raw, wide = TENTH_CLUB, UNSCALED_CLUB, WIDE_AUDIO
    return [
        claims.greater("less CLUB, more shared codes", same[tenth], same[RECIPE], names=(tenth, RECIPE)),
        claims.greater("it is not the stabilised estimator: CLUB on unscaled features (released) lowers the same "
                       "code too", same[NO_CLUB], same[raw], names=(NO_CLUB, raw)),
        claims.greater(f"the specific encoder's capacity does not undo it: with the audio one at the released "
                       f"width ({RELEASED_AUDIO_WIDTH}), CLUB still lowers the same code", same[NO_CLUB], same[wide],
                       names=(NO_CLUB, wide)),
    ]


def references(nb: NotebookRun) -> tuple[dict[str, float], float]:
    """The targets' references that are not runs: the AVE head on each modality's raw features (mean over the head
    seed the chapter uses) and the paper's transfer ratio (``paper.transfer_ratio``)."""
    raw = {m: float(np.mean([r["metric"] for r in raw_reference("ave", m, nb.seeds[:1], scale=nb.scale,
                                                                  data=nb.data, cache_dir=nb.cache_dir)]))
           for m, _ in LABELLED}
    return raw, transfer_ratio()
