"""What each chapter trains and evaluates: the pre-training runs and head trainings of notebooks 01-10, one function
per chapter, each taking the notebook's :class:`NotebookRun`.

The notebooks call these functions; :func:`plan` calls the same functions on a :class:`PlanRecorder`, a
``NotebookRun`` that records every run and head training instead of doing it, so the book's compute is counted
from the code that spends it (``benchmarks/book_budget.py``) and there is no second list of runs to keep in step.
Run lists and evaluation loops live here; the tables, figures and verdicts stay in the notebooks and ``claims``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import snapshot_name
from ..config import Config
from ..presets import ablation_overrides
from ..downstream.toc import released_dims
from . import why
from .budgets import Budget, budget, codebook_sweep, table1_grid, with_seeds
from .evals import AV_DIRECTIONS, avvp_floor
from .notebook import NotebookRun
from .runs import run_key
from .successors import (CLOSED_TASKS, OPEN_TASK, RELEASED_CLUB, RELEASED_CLUB_OVERRIDES, TOC_TASK,
                         floor_records)

AV_TASKS = ("ave", "avvp")
AVT_TASKS = ("ave", "avvp", "ave_avvp", "ucf_vgg")
LABELLED_TASKS = ("ave", "avvp", "ucf_vgg")           # Table 3's labelled-modality row
LABELLED_ROW = ((("video", "video"),), "V→A"), ((("audio", "audio"),), "A→V")   # (directions, the column it sits in)
AVS_DIRECTIONS = (("audio", "text"), ("text", "audio"))
RETRIEVAL_DIRECTIONS = (("video", "text"), ("text", "video"))
FIG4_METHODS = ("baseline", "cmcm", "unicode")
PAIR_METHODS = ("baseline", "unicode")               # Tables 4 and 5: the baseline against Uni-Code


def _per_measure(records: list[dict], measures: Sequence[str]) -> list[dict]:
    """One record per (record, measure), ``metric`` set to that measure (Tables 4 and 5 report two each)."""
    return [{**r, "metric": r["metrics"][k], "measure": k} for r in records for k in measures]


# ------------------------------------------------------------------------------------------------------ chapters
def pretraining(nb: NotebookRun) -> dict[int, Path]:
    """Notebook 02: one AVT Uni-Code run per pre-training seed (the other chapters' length, :meth:`short`)."""
    return {s: nb.pretrain(nb.preset("avt"), "unicode", seed=s, steps=nb.short()) for s in nb.pretrain_seeds}


def table1(nb: NotebookRun) -> list[dict]:
    """Notebook 03: AVE and AVVP records of the scale's methods at its sizes (``budgets.table1_grid``), tagged
    ``method`` and ``pretrain_size``."""
    records = []
    for size, method in table1_grid(nb.budget):
        for seed in nb.pretrain_seeds:
            ckpt = nb.pretrain(nb.preset("av"), method, seed=seed, pretrain_size=size)
            for task in AV_TASKS:
                records += nb.evaluate(ckpt, task, AV_DIRECTIONS, tags={"method": method, "pretrain_size": size})
    return records


def table2(nb: NotebookRun) -> list[dict]:
    """Notebook 04: AVE and AVVP records of the AV ablation rows at the budget's ``ablation_sizes``, tagged
    ``row`` and ``pretrain_size``."""
    records = []
    for size in nb.budget.ablation_sizes:
        for row in nb.budget.ablations:
            for seed in nb.pretrain_seeds:
                ckpt = nb.pretrain(nb.preset("av"), "unicode", seed=seed, pretrain_size=size,
                                   overrides=ablation_overrides(row))
                for task in AV_TASKS:
                    records += nb.evaluate(ckpt, task, AV_DIRECTIONS, tags={"row": row, "pretrain_size": size})
    return records


def table3(nb: NotebookRun) -> list[dict]:
    """Notebook 05: records of the AVT ablation rows on the four tasks, and the labelled-modality row (the full
    model's head trained and tested on the same modality, shown in the column of the direction it bounds), tagged
    ``row`` (and ``direction`` for that row)."""
    records = []
    for row in nb.budget.avt_ablations:
        for seed in nb.pretrain_seeds:
            ckpt = nb.pretrain(nb.preset("avt"), "unicode", seed=seed, overrides=ablation_overrides(row),
                               steps=nb.short())
            for task in AVT_TASKS:
                records += nb.evaluate(ckpt, task, AV_DIRECTIONS, tags={"row": row})
    for seed in nb.pretrain_seeds:
        ckpt = nb.pretrain(nb.preset("avt"), "unicode", seed=seed, steps=nb.short())
        for task in LABELLED_TASKS:
            for same, label in LABELLED_ROW:
                records += nb.evaluate(ckpt, task, same, tags={"row": "labeled modality", "direction": label})
    return records


def figure3(nb: NotebookRun) -> list[dict]:
    """Notebook 06: AVE records of Uni-Code per codebook size (``budgets.codebook_sweep``) at the other chapters'
    length (:meth:`short`), tagged ``codebook_size``; the preset's own size is Table 1's run (at that length its
    snapshot)."""
    records, own = [], nb.config(nb.preset("av")).model.codebook_size
    for size in codebook_sweep(nb.budget, nb.preset("av")):
        for seed in nb.pretrain_seeds:
            if size == own:              # Table 1's run, at the short length its snapshot
                ckpt = nb.pretrain(nb.preset("av"), "unicode", seed=seed, pretrain_size=nb.budget.main_size,
                                   at=nb.short())
            else:
                ckpt = nb.pretrain(nb.preset("av"), "unicode", seed=seed, pretrain_size=nb.budget.main_size,
                                   overrides=[f"model.codebook_size={size}"], steps=nb.short())
            records += nb.evaluate(ckpt, "ave", AV_DIRECTIONS, tags={"codebook_size": size})
    return records


def figure4(nb: NotebookRun) -> dict[tuple[str, int], Path]:
    """Notebook 07: the AV runs whose codes the chapter maps, per (method, pre-training seed), for the methods of
    :data:`FIG4_METHODS` the budget trains."""
    return {(m, s): nb.pretrain(nb.preset("av"), m, seed=s, pretrain_size=nb.budget.main_size)
            for m in FIG4_METHODS if m in nb.budget.methods for s in nb.pretrain_seeds}


def table4(nb: NotebookRun, count: int = 4) -> tuple[list[dict], dict[str, dict]]:
    """Notebook 08: AVS records (one per measure, mIoU and F-score, tagged ``method`` and ``measure``) over the
    AVS head seeds, and Fig. 5's T→A masks of the first ``count`` test clips per method (the first pre-training
    seed; the same cached head run as the table's first T→A seed)."""
    records, masks = [], {}
    epochs = nb.budget.avs_epochs
    for method in PAIR_METHODS:
        for seed in nb.pretrain_seeds:
            ckpt = nb.pretrain(nb.preset("avt"), method, seed=seed, steps=nb.short())
            if seed == nb.pretrain_seeds[0]:
                masks[method] = nb.avs_overlays(ckpt, train_modality="text", test_modality="audio",
                                                seed=nb.avs_seeds[0], epochs=epochs, count=count)
            records += _per_measure(nb.evaluate(ckpt, "avs", AVS_DIRECTIONS, nb.avs_seeds, tags={"method": method},
                                                epochs=epochs), ("miou", "f_score"))
    return records, masks


def table5(nb: NotebookRun) -> list[dict]:
    """Notebook 09: video-text retrieval records (one per measure, R@5 and R@10), tagged ``method`` and
    ``measure``, pre-trained on 24K (the paper's VT set) when the budget has it."""
    size = "24k" if "24k" in nb.budget.pretrain_sizes else nb.budget.main_size
    records = []
    for method in PAIR_METHODS:
        for seed in nb.pretrain_seeds:
            ckpt = nb.pretrain(nb.preset("vt"), method, seed=seed, pretrain_size=size, steps=nb.short())
            records += _per_measure(nb.evaluate(ckpt, "retrieval", RETRIEVAL_DIRECTIONS, tags={"method": method}),
                                    ("R@5", "R@10"))
    return records


def after_unicode(nb: NotebookRun) -> list[dict]:
    """Notebook 10: AVE, AVVP and open-set (``oscmg``) records of Uni-Code and its successors FCID and MICU on the
    AV preset's main set at equal updates (the other chapters' length, :meth:`NotebookRun.short`: Uni-Code is Table
    1's run at that snapshot, FCID and MICU train that long; the released recipe: every run its full length), and
    FCID's AVVP records with TOC at the release's AVVP share of dimensions (``toc.released_dims``), and with the book
    recipe FCID once more with CLUB on unscaled features (``successors.RELEASED_CLUB``), tagged ``method``
    (``successors.ROWS``)."""
    length = nb.short()
    size, preset_name = nb.budget.main_size, nb.preset("av")
    toc = released_dims(TOC_TASK, nb.config(preset_name, "fcid").model.hidden_dim)
    records = []
    for seed in nb.pretrain_seeds:
        ckpts = {"unicode": nb.pretrain(preset_name, "unicode", seed=seed, pretrain_size=size, at=length),
                 "fcid": nb.pretrain(preset_name, "fcid", seed=seed, pretrain_size=size, steps=length)}
        if nb.recipe == "book":                 # the released recipe's FCID has CLUB on unscaled features already
            ckpts[RELEASED_CLUB] = nb.pretrain(preset_name, "fcid", seed=seed, pretrain_size=size, steps=length,
                                               overrides=RELEASED_CLUB_OVERRIDES)
        ckpts["micu"] = nb.pretrain(preset_name, "micu", seed=seed, pretrain_size=size, steps=length)
        for method, ckpt in ckpts.items():
            for task in (*CLOSED_TASKS, OPEN_TASK):
                records += nb.evaluate(ckpt, task, AV_DIRECTIONS, tags={"method": method})
            if method == "fcid":
                records += nb.evaluate(ckpt, TOC_TASK, AV_DIRECTIONS, tags={"method": "fcid+toc"}, toc_dims=toc)
    return records


def after_unicode_floor(nb: NotebookRun, records: Sequence[dict]) -> list[dict]:
    """Notebook 10's AVVP reference row (``successors.floor_records``): per AVVP direction of ``records``, what a
    head scores that calls every segment background, on the clips the task scores (``evals.avvp_floor``)."""
    return floor_records(records, lambda modality, protocol: avvp_floor(
        modality, scale=nb.scale, data=nb.data, protocol=protocol, cache_dir=nb.cache_dir))


def why_released_recipe(nb: NotebookRun) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Notebook 01: the checkpoints per part (``why``) over ``why_seeds``: ``curve`` and ``plateau`` {updates: {seed:
    ckpt}} (the learning curve; the recipe at its length and twice it), ``rows`` and ``club`` {row: {seed: ckpt}}
    (the controlled experiments at their length), ``full club`` (the recipe and the CLUB conditions of
    ``why.CONVERGED_CLUB`` at full length), ``doubled club`` (the recipe and "w/o CLUB" twice as long) and
    ``baseline`` {seed: ckpt}; ``plateau``, ``doubled club``, ``rows`` and ``club`` are empty at a scale that
    leaves them to scale ``full`` (``why.trains_plateau``, ``why.trains_experiments``). Also their AVE records (the
    same keys; ``baseline``: its cross-modal directions)."""
    seeds = nb.budget.why_seeds
    runs = {"curve": why.curve_runs(nb, seeds), "plateau": why.plateau_runs(nb, seeds),
            "rows": why.row_runs(nb, seeds), "club": why.club_runs(nb, seeds),
            "full club": why.converged_club_runs(nb, seeds), "doubled club": why.doubled_club_runs(nb, seeds),
            "baseline": why.baseline_runs(nb, seeds)}
    records = {"curve": why.transfer(nb, runs["curve"], key="updates"),
               "plateau": why.transfer(nb, runs["plateau"], key="updates"), "rows": why.transfer(nb, runs["rows"]),
               "club": why.transfer(nb, runs["club"]), "full club": why.transfer(nb, runs["full club"]),
               "doubled club": why.transfer(nb, runs["doubled club"]),
               "baseline": [r for c in runs["baseline"].values()
                            for r in nb.evaluate(c, "ave", why.CROSS, nb.seeds[:1], tags={"row": "baseline"})]}
    return runs, records


# ------------------------------------------------------------------------------------------------------ the plan
@dataclass
class PlannedRun:
    """One distinct pre-training run of the book: the configuration trained, its updates, the first chapter that
    asks for it, and the head trainings made on it (``(task, checkpoint, direction, seed, epochs, options)``,
    checkpoint being ``final.pt`` or a snapshot's name, options ``head_options``)."""

    key: str
    config: Config
    steps: int
    chapter: str
    preset: str
    method: str
    overrides: tuple[str, ...]
    heads: set[tuple] = field(default_factory=set)
    chapters: set[str] = field(default_factory=set)         # every chapter that asks for it

    def heads_per_checkpoint(self) -> dict[tuple[str, str], int]:
        """Head trainings per ``(task, checkpoint)``: the first on each extracts that checkpoint's codes."""
        out: dict[tuple[str, str], int] = {}
        for task, ckpt, *_ in self.heads:
            out[(task, ckpt)] = out.get((task, ckpt), 0) + 1
        return out


def head_options(kwargs: dict) -> tuple:
    """The options of an ``evaluate`` call that make a head training distinct (all but ``epochs`` and ``tags``,
    e.g. TOC's ``toc_dims``), as a sorted tuple of pairs: the last field of a planned head."""
    return tuple(sorted((k, v) for k, v in kwargs.items() if k not in ("epochs", "tags")))


class PlanRecorder(NotebookRun):
    """A :class:`NotebookRun` that trains and evaluates nothing: ``pretrain`` records the run (by its cache key,
    as ``runs.pretrained`` would find it) and returns where its ``final.pt`` would be, ``evaluate`` records the head
    trainings (as the result cache would de-duplicate them) and returns no records."""

    PLACEHOLDER = Path("<planned>")

    def __init__(self, scale: str, b: Budget, recipe: str = "book", device: str = "cpu", data: str = "avdigits"):
        super().__init__(scale, data, device, None, b, recipe)
        self.chapter = ""
        self.runs: dict[str, PlannedRun] = {}
        self.calls = 0

    def pretrain(self, preset_name: str, method: str = "unicode", *, seed: int = 0, pretrain_size: str | None = None,
                 overrides: Sequence[str] = (), steps: int | None = None, at: int | None = None) -> Path:
        self.calls += 1
        cfg = self.config(preset_name, method, seed=seed, pretrain_size=pretrain_size, overrides=overrides)
        full = self.updates(cfg, steps)
        self._asked(cfg, at or full)
        full_cfg, key = run_key(cfg, self.data, full)
        run = self.runs.setdefault(key, PlannedRun(key, full_cfg, full, self.chapter, cfg.preset, method,
                                                   tuple(overrides)))
        run.chapters.add(self.chapter)
        path = self.PLACEHOLDER / key / "final.pt"
        return path if at in (None, full) else self.snapshot(path, at)

    def snapshot(self, ckpt, step: int) -> Path:
        return Path(ckpt).parent / snapshot_name(step)

    def evaluate(self, ckpt, task: str, directions, seeds: Sequence[int] | None = None, **kwargs) -> list[dict]:
        ckpt = Path(ckpt)
        epochs = kwargs.get("epochs", self.budget.downstream_epochs)
        options = head_options(kwargs)
        for train_m, test_m in directions:
            for seed in self.seeds if seeds is None else seeds:
                self.runs[ckpt.parent.name].heads.add((task, ckpt.name, (train_m, test_m), int(seed), epochs,
                                                       options))
        return []

    def avs_overlays(self, ckpt, **kwargs) -> dict:
        return {}


def plan(scale: str, recipe: str = "book", b: Budget | None = None, seeds: Sequence[int] | None = None,
         device: str = "cpu") -> PlanRecorder:
    """Every pre-training run and head training of notebooks 01-10 at ``scale`` but those of the chapters the
    budget leaves to scale ``full`` (``Budget.full_only``), recorded without training (budget ``b``, default the
    scale's; ``seeds``: the notebooks' head-seed parameter; ``device``: theirs, part of each run's configuration):
    the recorder's ``runs`` (distinct runs by cache key, in the order the chapters first ask for them) and
    ``calls`` (pretrain calls)."""
    recorder = PlanRecorder(scale, with_seeds(b if b is not None else budget(scale), seeds), recipe, device)
    chapters = {"02": pretraining, "03": table1, "04": table2, "05": table3, "06": figure3, "07": figure4,
                "08": table4, "09": table5, "10": after_unicode}
    for name, chapter in chapters.items():
        if name not in recorder.budget.full_only:          # a chapter left to scale "full" trains nothing here
            recorder.chapter = name
            chapter(recorder)
    recorder.chapter = "01"                      # the why chapter names its presets itself (book_av, released_av)
    why_released_recipe(recorder)
    return recorder
