"""The book's compute budget per scale: one typed table of steps, seeds, sizes and rows (the only place to change).

``smoke`` exercises every code path in minutes (CI); ``default`` is the published book on 2 CPU cores in under 45
minutes; ``full`` is everything (a GPU or a long CPU run). :func:`experiment_config` turns a preset into the
configuration a notebook trains at a scale, so equal rows of different tables share one cached run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

from ..config import ABLATIONS, BOOK_EPOCHS, METHODS, Config, preset
from ..data.avdigits.build import split_size
from ..data.avdigits.scales import SCALE_NAMES
from ..data.schema import PRETRAIN_SIZES

PUBLISHED_SCALE = "default"      # the scale the published book is built at (``make book``)


@dataclass(frozen=True)
class Budget:
    """What the notebooks run at one scale.

    ``seeds``: downstream head seeds; ``pretrain_seeds``: pre-training seeds of the runs a verdict rests on.
    ``pretrain_sizes[0]`` is the main size (every notebook's default pre-training set, so their runs are shared);
    ``size_sweep_methods`` are also pre-trained at the other sizes; ``ablation_sizes`` are Table 2's sizes.
    """

    seeds: tuple[int, ...]
    pretrain_seeds: tuple[int, ...]
    pretrain_steps: int
    pretrain_sizes: tuple[str, ...]
    downstream_epochs: int
    methods: tuple[str, ...]
    size_sweep_methods: tuple[str, ...]
    ablation_sizes: tuple[str, ...]
    codebook_sizes: tuple[int, ...]
    explorer_steps: tuple[int, ...]
    batch_size: int
    ablations: tuple[str, ...]
    avt_ablations: tuple[str, ...]
    explorer_classes: int
    avs_seeds: tuple[int, ...]
    avs_epochs: int
    book_steps: int | None            # updates of the book-recipe presets; None = the preset's epochs (6)
    why_seeds: tuple[int, ...]        # pre-training seeds of the "why" chapter's controlled experiments
    why_short_steps: int              # the shorter budget that chapter compares with (a snapshot of the same runs)
    why_long_factor: int              # that chapter's longer row: the book recipe for this many times its updates

    def steps_for(self, recipe: str) -> int | None:
        """Pre-training updates of a recipe's runs at this scale (``Config.recipe``): ``book_steps`` for the book
        recipe (None: its epochs), else ``pretrain_steps`` (the released recipe)."""
        return self.book_steps if recipe == "book" else self.pretrain_steps

    def recipe_steps(self, recipe: str, scale: str, pretrain_size: str) -> int:
        """The number of updates a recipe's run trains at this scale on ``pretrain_size``: ``steps_for``, or for
        the book recipe's epochs ``BOOK_EPOCHS`` x the batches of one epoch (``drop_last``, as ``train.pretrain``)."""
        steps = self.steps_for(recipe)
        return steps if steps is not None else BOOK_EPOCHS * epoch_batches(scale, pretrain_size, self.batch_size)

    @property
    def main_size(self) -> str:
        return self.pretrain_sizes[0]


BUDGETS: dict[str, Budget] = {
    # CI: every code path with tiny runs; the whole book must stay under 10 minutes on 2 cores.
    "smoke": Budget(seeds=(0,), pretrain_seeds=(0,), pretrain_steps=4, pretrain_sizes=("40k",), downstream_epochs=2,
                    methods=("baseline", "cmcm", "unicode"), size_sweep_methods=("baseline", "cmcm", "unicode"),
                    ablation_sizes=("40k",), codebook_sizes=(16, 64), explorer_steps=(2, 4), batch_size=16,
                    ablations=("w/o DCID", "full"), avt_ablations=("w/o CLUB", "full"), explorer_classes=2,
                    avs_seeds=(0,), avs_epochs=1, book_steps=6, why_seeds=(0,), why_short_steps=2,
                    why_long_factor=2),
    # The published book on 2 CPU cores, meant to stay under 45 minutes (benchmarks/book_budget.py estimates it):
    # every table on the book recipe (6 epochs: 222 updates on 24K, 372 on 40K) with three pre-training seeds and
    # one head seed, and the "why" chapter's controlled experiments on the same seeds (its runs of the book recipe
    # train 3x as long; their snapshots at 222 and 75 updates are the recipe's and the fewer-updates rows). Paid for
    # by rows that run at scale "full" only: Table 1 keeps the baseline, CMCM and Uni-Code at 24K (no 40K sweep, no
    # other compared method), Table 2 four rows at 24K, Table 3 two AVT rows, Fig. 3 three codebook sizes, AVS heads
    # of 4 epochs.
    "default": Budget(seeds=(0,), pretrain_seeds=(0, 1, 2), pretrain_steps=200, pretrain_sizes=("24k",),
                      downstream_epochs=15, methods=("baseline", "cmcm", "unicode"),
                      size_sweep_methods=("baseline", "unicode"), ablation_sizes=("24k",),
                      codebook_sizes=(16, 256), explorer_steps=(20, 60, 200), batch_size=64,
                      ablations=("w/o CLUB", "w/o Cross-CPC", "w/o CMCM", "full"),
                      avt_ablations=("w/o CLUB", "full"),
                      explorer_classes=3, avs_seeds=(0,), avs_epochs=4, book_steps=None, why_seeds=(0, 1, 2),
                      why_short_steps=75, why_long_factor=3),
    # Everything: all methods at all sizes, both ablation sizes, longer training, more seeds.
    "full": Budget(seeds=(0, 1, 2, 3, 4), pretrain_seeds=(0, 1, 2), pretrain_steps=2000,
                   pretrain_sizes=PRETRAIN_SIZES, downstream_epochs=30, methods=tuple(METHODS),
                   size_sweep_methods=tuple(METHODS), ablation_sizes=("24k", "40k"),
                   codebook_sizes=(16, 32, 64, 128, 256, 512), explorer_steps=(100, 500, 2000), batch_size=64,
                   ablations=tuple(ABLATIONS), avt_ablations=tuple(r for r in ABLATIONS if r != "w/o DCID"),
                   explorer_classes=3, avs_seeds=(0, 1, 2), avs_epochs=10, book_steps=None,
                   why_seeds=(0, 1, 2, 3, 4), why_short_steps=75, why_long_factor=3),
}


def budget(scale: str) -> Budget:
    """The :class:`Budget` of a book scale (one per AV-Digits build scale, ``SCALE_NAMES``)."""
    if scale not in BUDGETS:
        raise ValueError(f"unknown scale {scale!r}; expected one of {list(SCALE_NAMES)}")
    return BUDGETS[scale]


def epoch_batches(scale: str, pretrain_size: str, batch_size: int) -> int:
    """Optimiser steps in one epoch of the embedded AV-Digits pre-training set ``pretrain_size`` at ``scale``."""
    return split_size(scale, "pretrain", pretrain_size) // batch_size


def with_seeds(b: Budget, seeds=None) -> Budget:
    """``b`` with its head seeds replaced (a notebook's ``seeds`` parameter, :func:`parse_seeds`), the AVS task's
    too; unchanged for None."""
    seeds = parse_seeds(seeds)
    return b if seeds is None else replace(b, seeds=seeds, avs_seeds=seeds)


def parse_seeds(seeds) -> tuple[int, ...] | None:
    """A notebook's ``seeds`` parameter as integers: None stays None; a list, a tuple or one integer, or the same
    as text (``papermill -p seeds '[0, 1]'`` passes the text: ``"[0, 1]"``, ``"0,1"``, ``"2"``); a ValueError
    naming ``seeds`` for anything else, an empty list included (no head seed is no run)."""
    if seeds is None:
        return None
    values = seeds
    if isinstance(values, str):
        text = values.strip()
        try:
            values = json.loads(text if text.startswith("[") else f"[{text}]")
        except json.JSONDecodeError:
            values = None
    if isinstance(values, int):
        values = [values]
    if (not isinstance(values, (list, tuple)) or not values
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)):
        raise ValueError(f"seeds must be None (the scale's head seeds) or a non-empty list of non-negative integers "
                         f"such as [0, 1, 2], got {seeds!r}")
    return tuple(values)


def codebook_sweep(b: Budget, preset_name: str) -> list[int]:
    """Fig. 3's codebook sizes for a preset: the budget's ``codebook_sizes`` and the preset's own size (whose run
    the other tables share), in increasing order."""
    return sorted({*b.codebook_sizes, preset(preset_name).model.codebook_size})


def table1_grid(scale: str | Budget) -> list[tuple[str, str]]:
    """``(pretrain_size, method)`` pairs of Table 1 at a scale (or of a budget): every method at the main size,
    the ``size_sweep_methods`` at every size."""
    b = scale if isinstance(scale, Budget) else budget(scale)
    return [(size, m) for i, size in enumerate(b.pretrain_sizes) for m in b.methods
            if i == 0 or m in b.size_sweep_methods]


def experiment_config(preset_name: str, method: str = "unicode", *, scale: str, seed: int = 0, device: str = "cpu",
                      pretrain_size: str | None = None, overrides=()) -> Config:
    """A preset sized by the scale's budget: batch size, data scale, pre-training size (None: the preset's own,
    ``DataConfig.pretrain_size``), seed, device, logging; its recipe (``Config.recipe``) sets its updates.

    Runs keep no per-epoch checkpoints, only ``final.pt`` and the snapshots at the scale's ``explorer_steps`` (and,
    for the book recipe, at ``why_short_steps``; ``runs.snapshot``).
    """
    b = budget(scale)
    cfg = preset(preset_name, method)
    steps = b.steps_for(cfg.recipe)
    log_every = max(1, steps // 15) if steps else 10
    kept = set(b.explorer_steps) | ({b.why_short_steps} if cfg.recipe == "book" else set())
    snapshots = ",".join(str(s) for s in sorted(kept) if steps is None or s < steps)
    base = [f"train.batch_size={b.batch_size}", f"train.seed={int(seed)}", f"train.device={device}",
            f"train.log_every={log_every}", f"data.scale={scale}",
            f"data.pretrain_size={pretrain_size or cfg.data.pretrain_size}", "train.epoch_ckpts=false",
            f"train.snapshot_steps=[{snapshots}]"]
    return cfg.override(*base, *overrides)
