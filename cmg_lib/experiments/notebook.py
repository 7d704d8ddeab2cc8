"""A notebook's setup in one call: :func:`setup` reads the parameters cell's values and returns a
:class:`NotebookRun` that trains and evaluates with them (scale, data, device, cache, seeds); it shows
:func:`scale_banner`, what a page built at another scale than the published book's tells its readers."""
from __future__ import annotations

import html
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config
from ..presets import recipe_preset
from ..data.avdigits.scales import SCALE_NAMES
from . import claims
from .budgets import PUBLISHED_SCALE, Budget, budget, experiment_config, with_seeds
from .evals import avs_overlays, evaluate
from .runs import pretrained, snapshot

THREADS_ENV = "CMG_TORCH_THREADS"   # torch threads of a notebook's kernel (set by tools/build_book.py)


@dataclass
class NotebookRun:
    """The parameters of one executed notebook, the budget they select, and the runs it has asked for."""

    scale: str
    data: str
    device: str
    cache_dir: str | os.PathLike | None
    budget: Budget
    recipe: str = "book"
    trained: dict[tuple[str, str], set] = field(default_factory=dict)   # (preset, size) -> lengths asked for

    @property
    def seeds(self) -> list[int]:
        """Downstream head seeds."""
        return list(self.budget.seeds)

    @property
    def pretrain_seeds(self) -> list[int]:
        return list(self.budget.pretrain_seeds)

    @property
    def avs_seeds(self) -> list[int]:
        """Head seeds of the AVS task (its own budget entry: the costliest head; the notebook's ``seeds`` when
        given)."""
        return list(self.budget.avs_seeds)

    def preset(self, modalities: str) -> str:
        """This notebook's recipe's preset for ``modalities`` ("av", "at", "vt", "avt"; ``config.RECIPES``)."""
        return recipe_preset(self.recipe, modalities)

    def pretrain(self, preset_name: str, method: str = "unicode", *, seed: int = 0, pretrain_size: str | None = None,
                 overrides: Sequence[str] = (), steps: int | None = None, at: int | None = None) -> Path:
        """The cached run (``runs.pretrained``) of a preset at this notebook's scale (``budgets.experiment_config``;
        ``pretrain_size`` None: the preset's own), for ``steps`` or its recipe's updates at this scale; with ``at``,
        that run's checkpoint at ``at`` updates (its snapshot, ``Budget.curve_steps``: identical to a run of that
        length, and free where the full-length run is trained anyway). The updates of what is returned are
        remembered for :meth:`scope`."""
        cfg = self.config(preset_name, method, seed=seed, pretrain_size=pretrain_size, overrides=overrides)
        full = self.updates(cfg, steps)
        self._asked(cfg, at or full)
        ckpt = pretrained(cfg, self.data, steps=full, cache_dir=self.cache_dir)
        return ckpt if at in (None, full) else snapshot(ckpt, at)

    def updates(self, cfg: Config, steps: int | None = None) -> int:
        """What a run of ``cfg`` trains: ``steps``, else the budget's updates for its recipe."""
        return int(steps or self.budget.steps_for(cfg.recipe))

    def config(self, preset_name: str, method: str = "unicode", *, seed: int = 0, pretrain_size: str | None = None,
               overrides: Sequence[str] = ()) -> Config:
        """What :meth:`pretrain` trains (``budgets.experiment_config`` at this notebook's scale and device)."""
        return experiment_config(preset_name, method, scale=self.scale, seed=seed, device=self.device,
                                 pretrain_size=pretrain_size, overrides=overrides)

    def snapshot(self, ckpt, step: int) -> Path:
        """The same run's checkpoint at ``step`` (``runs.snapshot``)."""
        return snapshot(ckpt, step)

    def checkpoint_steps(self) -> list[int]:
        """The updates at which this notebook's full-length runs have checkpoints: for the book recipe its
        snapshots (``Budget.curve_steps``) and its full length, for the released recipe its full length."""
        full = self.budget.steps_for(self.recipe)
        kept = self.budget.curve_steps if self.recipe == "book" else ()
        return [*(s for s in kept if s < full), full]

    def short(self) -> int | None:
        """Updates of the runs of the chapters outside the converged set (``Budget.short``) for the book recipe;
        None (the budget's steps for the recipe) for the released one."""
        return self.budget.short if self.recipe == "book" else None

    def _asked(self, cfg: Config, updates: int) -> None:
        """Remember the updates of a checkpoint handed out (for :meth:`scope`)."""
        self.trained.setdefault((cfg.preset, cfg.data.pretrain_size), set()).add(int(updates))

    def steps_text(self) -> str:
        """The updates of the runs this notebook asked for, e.g. "222 (book_av, 24K); 372 (book_avt, 40K)"."""
        if not self.trained:
            return str(self.budget.pretrain_steps)
        parts = []
        for (preset_name, size), lengths in sorted(self.trained.items()):
            parts.append(f"{', '.join(map(str, sorted(lengths)))} ({preset_name}, {size.upper()})")
        return "; ".join(parts)

    def evaluate(self, ckpt, task: str, directions, seeds: Sequence[int] | None = None, **kwargs) -> list[dict]:
        """Cached downstream records of ``ckpt`` (``evals.evaluate``) over this notebook's head seeds."""
        return evaluate(ckpt, task, directions, self.seeds if seeds is None else seeds, scale=self.scale,
                        data=self.data, cache_dir=self.cache_dir, **kwargs)

    def avs_overlays(self, ckpt, **kwargs) -> dict:
        return avs_overlays(ckpt, scale=self.scale, data=self.data, cache_dir=self.cache_dir, **kwargs)

    def scope(self, head_seeds: Sequence[int] | None = None, *, steps: int | str | None = None,
              pretrain_seeds: Sequence[int] | None = None) -> claims.Scope:
        """What this notebook's verdicts rest on (printed above them): by default the updates of the runs it asked
        for (:meth:`steps_text`), the budget's ``pretrain_seeds`` and head seeds; a chapter with its own runs
        passes them."""
        return claims.Scope(self.scale, self.steps_text() if steps is None else steps,
                            tuple(self.pretrain_seeds if pretrain_seeds is None else pretrain_seeds),
                            tuple(self.seeds if head_seeds is None else head_seeds))


def setup(scale: str = "default", data: str = "avdigits", seeds: Sequence[int] | None = None, device: str = "cpu",
          cache_dir: str | os.PathLike | None = None, threads: int | None = None, recipe: str = "book") -> NotebookRun:
    """Quiet warnings, cap torch's threads at ``threads`` (None: ``$CMG_TORCH_THREADS``, which the book build sets
    when it runs notebooks side by side, else 4), show the scale banner (:func:`scale_banner`: at a
    non-default scale the numbers test code paths, not claims) and return the notebook's :class:`NotebookRun`;
    ``recipe`` picks the tables' presets ("book", the book's recipe, or "released"; ``config.RECIPES``)."""
    recipe_preset(recipe, "av")                        # an unknown recipe fails here, before any training
    warnings.filterwarnings("ignore")
    if threads is None:
        raw = os.environ.get(THREADS_ENV, "4")
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"${THREADS_ENV} must be a positive integer (torch threads per notebook), got {raw!r}")
        threads = int(raw)
    torch.set_num_threads(max(1, min(threads, torch.get_num_threads())))
    run = NotebookRun(scale, str(data), device, cache_dir, with_seeds(budget(scale), seeds), recipe)
    banner = scale_banner(scale)
    if banner:
        from IPython.display import HTML, display      # only inside a notebook kernel
        display(HTML(banner))
    return run


def scale_banner(scale: str) -> str:
    """HTML notice for a page built at ``scale``; ``""`` at the published scale (``budgets.PUBLISHED_SCALE``).

    Below the published scale the notice says the numbers test code paths, not the paper's claims; above it, that
    the numbers are not those of the published book. :func:`setup` displays it.
    """
    this = budget(scale)
    if scale == PUBLISHED_SCALE:
        return ""
    published = budget(PUBLISHED_SCALE)

    def run_text(b: Budget) -> str:
        experiments = "left to scale full" if b.experiment_steps is None else b.experiment_steps
        return (f"book recipe {b.steps_for('book')} updates (other chapters {b.short}, controlled experiments "
                f"{experiments}), released recipe {b.pretrain_steps} updates, pre-training seeds "
                f"{list(b.pretrain_seeds)}, head seeds {list(b.seeds)}")

    run = f"{run_text(this)}, {this.downstream_epochs} head epochs"
    if SCALE_NAMES.index(scale) < SCALE_NAMES.index(PUBLISHED_SCALE):
        title = f"Scale “{scale}”: these numbers test code paths, not claims"
        body = (f"This page was built at scale <code>{html.escape(scale)}</code> ({html.escape(run)}). At this "
                "scale the runs only check that every step of the code works; the tables, figures and verdicts "
                "below say nothing about the paper's claims. The published book is built at scale "
                f"<code>{PUBLISHED_SCALE}</code> (<code>make book</code>, {html.escape(run_text(published))}).")
    else:
        title = f"Scale “{scale}”: not the published book's numbers"
        body = (f"This page was built at scale <code>{html.escape(scale)}</code> ({html.escape(run)}), larger than "
                f"the published book's <code>{PUBLISHED_SCALE}</code> ({html.escape(run_text(published))}); its "
                "numbers differ from the published pages.")
    return (f'<div class="admonition warning cmg-scale-banner"><p class="admonition-title">{html.escape(title)}</p>'
            f"<p>{body}</p></div>")
