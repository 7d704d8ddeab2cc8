"""What the notebooks run, and how their results become tables and verdicts. Names that live elsewhere are
imported from their home (``cmg_lib.config``, ``cmg_lib.usage``, ``cmg_lib.downstream``, ``cmg_lib.storage``).

* ``budgets``: the one table of steps, seeds, sizes and rows per book scale; ``experiment_config``.
* ``runs``: the run-once cache of pre-training runs (``pretrained``, ``pretrain_run``, ``snapshot``).
* ``evals``: the run-once cache of downstream records (``downstream``, ``evaluate``, ``avs_overlays``).
* ``tables``: tables of mean ± standard deviation over the runs, ours beside the paper's; ``paper``: the paper's
  printed numbers.
* ``claims``: holds / does not hold / inconclusive over pre-training seeds, one tested function per claim.
* ``notebook``: a notebook's setup in one call (``setup``) and the scale banner it shows.
* ``chapters``: the runs and head trainings of each chapter (what the notebooks call), and ``plan``, which replays
  them without training (``benchmarks/book_budget.py`` counts the book's compute with it).
* ``diagnostics``: the measures behind the Fig. 4 chapter's verdicts and the released-recipe chapter's, and their
  interval tables; ``why``: that chapter's learning curve, controlled experiments and CLUB conditions.
* ``pool``: the book build trains every distinct run of ``chapters.plan`` first, one per core.
* ``successors``: the after-Uni-Code chapter's tables and verdicts (FCID, TOC and MICU against Uni-Code).
"""
from . import chapters, claims, diagnostics, pool, successors, why
from .budgets import BUDGETS, Budget, budget, codebook_sweep, experiment_config, table1_grid
from .evals import AV_DIRECTIONS, TASK_METRIC, avs_overlays, downstream, evaluate, load_results
from .notebook import NotebookRun, setup
from .paper import paper_table
from .runs import (checkpoint_key, history_records, pretrain_run, pretrained, run_config, run_history, run_key,
                   snapshot)
from .tables import aggregate, field, mean_metric, results_table, side_by_side

__all__ = ["AV_DIRECTIONS", "BUDGETS", "Budget", "NotebookRun", "TASK_METRIC", "aggregate", "avs_overlays", "budget",
           "chapters", "checkpoint_key", "claims", "codebook_sweep", "diagnostics", "downstream", "evaluate", "pool",
           "experiment_config", "field", "history_records", "load_results", "mean_metric", "paper_table",
           "pretrain_run", "pretrained", "results_table", "run_config", "run_history", "run_key", "setup",
           "side_by_side", "snapshot", "successors", "table1_grid", "why"]
