"""Estimate the book's pre-training and downstream compute from its budget table, in a few minutes (not a test).

The pre-training runs are the ones the notebooks make (``book_runs``: ``experiments.chapters.plan`` replays the
chapter functions that notebooks 01-09 call, recording instead of training; equal configurations share one cached
run, so they are counted once by their cache key). Each distinct configuration's step is timed on random inputs of
its shapes (``pretrain_step.step_seconds``: ``--steps`` steps after one warm-up, median) with ``--threads`` threads
and with one thread; the estimate is runs x steps x step time, one run at a time on ``--threads`` threads, and in
the build's pool (``experiments.pool``: ``--workers`` one-thread workers, longest run first, each run given to the
first free worker; steps timed alone, so the neighbours' share of the memory bandwidth is not counted). Each
downstream task's head training is timed once on a randomly initialised model (needs the scale's data: ``make
data``) and multiplied by the number of head trainings the chapters make (the first on each checkpoint extracts its
codes).

    python benchmarks/book_budget.py --scale default --threads 2
    python benchmarks/book_budget.py --scale default --set-budget pretrain_steps=600   # a changed budget

The budget is read through ``read_budget`` only, so it can be re-pointed when ``experiments`` moves.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_step import step_seconds  # noqa: E402

from cmg_lib.config import RECIPES  # noqa: E402
from cmg_lib.hardware import gemm_gflops, usable_cores  # noqa: E402
from cmg_lib.model import build_model  # noqa: E402
from cmg_lib.train import seed_everything  # noqa: E402

LIMIT_S = 60 * 60          # the default book's build limit on 2 cores of the slower machines
SLOW_GEMM_GFLOPS = 110     # their float32 GEMM rate (2 threads, AVX2)


def read_budget(scale: str):
    """The budget of ``scale`` (``cmg_lib.experiments.budgets``)."""
    from cmg_lib import experiments as ex
    return ex.budget(scale)


def book_runs(b, scale: str, recipe: str = "book"):
    """The distinct pre-training runs of notebooks 01-09 for budget ``b`` and the tables' ``recipe``, with the head
    trainings made on each: ``experiments.chapters.plan``, the chapters' own functions replayed without training."""
    from cmg_lib import experiments as ex
    return ex.chapters.plan(scale, recipe, b)


# the head trainings of each task: (preset of the checkpoint, directions timed, epochs field of the budget)
HEAD_SHAPES = {"ave": ("released_av", ("video", "audio"), "downstream_epochs"),
               "avvp": ("released_av", ("video", "audio"), "downstream_epochs"),
               "ave_avvp": ("released_avt", ("video", "audio"), "downstream_epochs"),
               "ucf_vgg": ("released_avt", ("video", "audio"), "downstream_epochs"),
               "avs": ("released_avt", ("text", "audio"), "avs_epochs"),
               "retrieval": ("released_vt", ("video", "text"), "downstream_epochs"),
               "oscmg": ("released_av", ("video", "audio"), "downstream_epochs")}


def pool_seconds(run_seconds: list[float], workers: int) -> float:
    """When the last of the runs ends if each, longest first, goes to the first free of ``workers`` workers (the
    order ``experiments.pool`` submits them in)."""
    free = [0.0] * max(1, workers)
    for sec in sorted(run_seconds, reverse=True):
        free[free.index(min(free))] += sec
    return max(free)


def downstream_seconds(tasks, scale: str, b, threads: int) -> dict[str, tuple[float, float]] | None:
    """Per task, seconds of a checkpoint's first head training (its frozen codes extracted) and of each further
    one (codes reused, as ``run_task``'s code cache does within a notebook): ``cmg_lib.downstream.run_task`` on a
    randomly initialised model of the task's preset with the budget's epochs, after a warm-up call on another
    model (a kernel pays the one-time imports and the data loading once, not per checkpoint); None when the data is
    not built."""
    from cmg_lib import experiments as ex
    from cmg_lib.data.avdigits import folder
    from cmg_lib.downstream import run_task

    if not (folder(scale) / "manifest.json").is_file():
        return None
    torch.set_num_threads(threads)
    out = {}
    for task in tasks:
        preset_name, (train_m, test_m), epochs = HEAD_SHAPES[task]
        times = []
        for model_seed, seed in ((1, 0), (0, 0), (0, 1)):   # a warm-up (one-time imports, data loading), then timed
            if seed == 0:                                   # a new model: its codes are extracted again
                seed_everything(model_seed)
                model = build_model(ex.experiment_config(preset_name, "unicode", scale=scale)).eval()
            start = time.perf_counter()
            run_task(task, model=model, data="avdigits", scale=scale, train_modality=train_m, test_modality=test_m,
                     seed=seed, epochs=getattr(b, epochs), progress=False, allow_data_mismatch=True)
            times.append(time.perf_counter() - start)
        out[task] = (times[1], times[2])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=usable_cores(), help="the build's pool (default: the cores)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per distinct configuration")
    parser.add_argument("--recipe", default="book", choices=sorted(RECIPES),
                        help="the tables' recipe (the notebooks' `recipe` parameter)")
    parser.add_argument("--set-budget", nargs="*", default=[], metavar="KEY=VALUE",
                        help="budget entries to change (JSON values), e.g. pretrain_steps=600")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.steps < 1:
        raise SystemExit(f"book_budget.py: error: --threads and --steps must be positive, got {args.threads}, "
                         f"{args.steps}")
    torch.set_num_threads(args.threads)
    try:
        b = read_budget(args.scale)
    except ValueError as err:
        raise SystemExit(f"book_budget.py: error: {err}") from None
    known = {f.name for f in dataclasses.fields(b)}
    for item in args.set_budget:
        key, _, raw = item.partition("=")
        if key not in known:
            raise SystemExit(f"book_budget.py: error: unknown budget key {key!r}; known: {sorted(known)}")
        value = json.loads(raw)
        b = dataclasses.replace(b, **{key: tuple(value) if isinstance(value, list) else value})
    plan = book_runs(b, args.scale, args.recipe)
    runs = plan.runs
    timed: dict[tuple, tuple[float, float]] = {}
    started = time.perf_counter()
    step_s: dict[str, tuple[float, float]] = {}     # run key -> (step seconds, step seconds on one thread)
    for key, run in runs.items():           # the data size does not change a step's cost: time each shape once
        shape = (run.preset, run.method, run.overrides)
        if shape not in timed:
            timed[shape] = (step_seconds(run.config, args.steps, threads=args.threads),
                            step_seconds(run.config, args.steps, threads=1))
        step_s[key] = timed[shape]
    total = sum(step_s[k][0] * r.steps for k, r in runs.items())
    pooled = pool_seconds([step_s[k][1] * r.steps for k, r in runs.items()], args.workers)
    print(f"scale={args.scale} recipe={args.recipe} threads={args.threads} pretrain_steps={b.pretrain_steps} "
          f"book_steps={b.steps_for('book')} short_steps={b.short} experiment_steps={b.experiment_steps} "
          f"({plan.calls} pretrain calls in the notebooks, {len(runs)} distinct runs, {len(timed)} step shapes "
          f"timed in {time.perf_counter() - started:.0f} s)")
    by_nb: dict[str, list] = {}
    for key, r in runs.items():
        by_nb.setdefault(r.chapter, []).append(key)
    for nb, keys in sorted(by_nb.items()):
        kinds = sorted({f"{runs[k].preset}/{runs[k].method} {step_s[k][0] * 1e3:.0f} ms" for k in keys})
        print(f"  notebook {nb}: {len(keys):2d} new runs, {sum(step_s[k][0] * runs[k].steps for k in keys):7.0f} s "
              f"(steps: {', '.join(kinds)})")
    heads: dict[str, int] = {}
    for r in runs.values():
        for task, *_ in r.heads:
            heads[task] = heads.get(task, 0) + 1
    print(f"pre-training, one run at a time ({args.threads} threads): {total:.0f} s = {total / 60:.1f} min")
    print(f"pre-training in the build's pool, {args.workers} one-thread workers, longest first: {pooled:.0f} s = "
          f"{pooled / 60:.1f} min")
    per_head = downstream_seconds(heads, args.scale, b, args.threads)
    if per_head is None:
        print("downstream heads (not timed: the AV-Digits data of this scale is not built; `make data SCALE=...`): "
              + ", ".join(f"{t} {n}" for t, n in heads.items()))
        down = 0.0
    else:        # per checkpoint and task: the first head extracts the codes, the others reuse them
        print("downstream heads (count; seconds of a checkpoint's first / each further one, on a random model): "
              + ", ".join(f"{t} {heads[t]}; {a:.1f} / {r:.1f} s" for t, (a, r) in per_head.items()))
        down = sum(per_head[t][0] + (n - 1) * per_head[t][1] for r in runs.values()
                   for (t, _ckpt), n in r.heads_per_checkpoint().items())
    best = min(total, pooled) + down / 2             # the notebooks run two at a time
    torch.set_num_threads(args.threads)              # the one-thread timings above left torch at one thread; the
    rate = gemm_gflops()                             # build prints, and SLOW_GEMM_GFLOPS is, the rate at --threads
    print(f"estimate: pre-training {min(total, pooled) / 60:.1f} min + downstream {down / 60:.1f} min over two "
          f"notebooks at a time = {best / 60:.1f} min of compute on this machine (GEMM rate {rate:.0f} GFLOP/s with "
          f"{torch.get_num_threads()} threads), {best * rate / SLOW_GEMM_GFLOPS / 60:.1f} min scaled to a "
          f"{SLOW_GEMM_GFLOPS}-GFLOP/s machine by the GEMM rate (the limit: {LIMIT_S // 60} min); the data build, "
          "diagnostics, figures, kernel starts and the HTML build come on top (book/measured_timings.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
