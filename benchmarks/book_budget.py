"""Estimate the book's pre-training compute from its budget table, in a couple of minutes (not a test).

The pre-training runs are enumerated as the notebooks make them (``book_runs``: notebooks 01-08 call
``experiments.pretrain_run`` / ``pretrained`` with these arguments; equal configurations share one cached run, so
they are counted once by their cache key). Each distinct configuration's step is timed on random inputs of its
shapes (``--steps`` steps after one warm-up, median), and the estimate is runs x steps x step time. The downstream
work is listed as the number of head trainings per task (runs x directions x seeds), not timed.

    python benchmarks/book_budget.py --scale default --threads 2
    python benchmarks/book_budget.py --scale default --set-budget pretrain_steps=600   # a changed budget

The budget is read through ``read_budget`` only, so it can be re-pointed when ``experiments`` moves.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_step import random_batch  # noqa: E402

from cmg_lib.config import BOOK_EPOCHS  # noqa: E402
from cmg_lib.data.avdigits import SCALES  # noqa: E402
from cmg_lib.model import build_model  # noqa: E402
from cmg_lib.train import make_optimizers, seed_everything, train_step  # noqa: E402

LIMIT_S = 45 * 60          # the default book's build limit on 2 cores
PRETRAIN_CLIPS = {scale: dict(zip(("24k", "40k", "81k"), table.splits["pretrain"])) for scale, table in SCALES.items()}


def read_budget(scale: str):
    """The budget of ``scale`` and its Table 1 grid (``cmg_lib.experiments.budgets``)."""
    from cmg_lib import experiments as ex
    return ex.budget(scale), ex.table1_grid(scale)


def book_runs(b, scale: str, grid: list[tuple[str, str]]) -> list[dict]:
    """Every ``pretrain_run`` call of notebooks 01-09 for budget ``b`` (before de-duplication), in notebook order;
    evals: the downstream head trainings made on that checkpoint as ``(task, directions, seeds)``."""
    from cmg_lib import experiments as ex
    seeds, main, av = len(b.seeds), b.pretrain_sizes[0], len(ex.AV_DIRECTIONS)
    runs = [dict(nb="01", preset="tiny", method="unicode", size="40k", overrides=(), evals=[])]
    runs += [dict(nb="02", preset="tiny_av", method=m, size=s, overrides=(),
                  evals=[("ave", av, seeds), ("avvp", av, seeds)]) for s, m in grid]
    runs += [dict(nb="03", preset="tiny_av", method="unicode", size=s, overrides=tuple(ex.ablation_overrides(r)),
                  evals=[("ave", av, seeds), ("avvp", av, seeds)]) for s in b.ablation_sizes for r in b.ablations]
    runs += [dict(nb="04", preset="tiny", method="unicode", size="40k", overrides=tuple(ex.ablation_overrides(r)),
                  evals=[("ave+avvp+ucf_vgg", av, seeds)]) for r in b.avt_ablations]
    runs += [dict(nb="04", preset="tiny", method="unicode", size="40k", overrides=(),
                  evals=[("ave+avvp+ucf_vgg labeled modality", 2, seeds)])]
    runs += [dict(nb="05", preset="tiny_av", method="unicode", size=main, overrides=(f"model.codebook_size={L}",),
                  evals=[("ave", av, seeds)]) for L in b.codebook_sizes]
    runs += [dict(nb="06", preset="tiny_av", method=m, size=main, overrides=(), evals=[])
             for m in ("baseline", "cmcm", "unicode") if m in b.methods]
    runs += [dict(nb="07", preset="tiny", method=m, size="40k", overrides=(), evals=[("avs", 2, len(b.avs_seeds))])
             for m in ("baseline", "unicode")]
    size = "24k" if "24k" in b.pretrain_sizes else main
    runs += [dict(nb="08", preset="tiny_vt", method=m, size=size, overrides=(), evals=[("retrieval", 2, seeds)])
             for m in ("baseline", "unicode")]
    runs = [dict(r, seed=s) for r in runs for s in b.pretrain_seeds]           # every notebook loops over them
    per_epoch = PRETRAIN_CLIPS.get(scale, {}).get("24k", 0) // b.batch_size
    why = [("book_av", "unicode", ())] + [("book_av", "unicode", sw.overrides) for sw in ex.why.SWITCHES.values()]
    why += [("tiny_av", "unicode", (f"train.epochs={BOOK_EPOCHS}",)), ("book_av", "baseline", ())]
    runs += [dict(nb="09", preset=p, method=m, size="24k", overrides=o, seed=s,
                  evals=[("ave", 2 * av, 1)], steps=b.book_steps or BOOK_EPOCHS * per_epoch)
             for p, m, o in why for s in b.why_seeds]
    return runs


def _config(run: dict, scale: str, b):
    from cmg_lib import experiments as ex
    cfg = ex.experiment_config(run["preset"], run["method"], scale=scale, seed=run["seed"],
                               pretrain_size=run["size"], overrides=run["overrides"])
    steps = run.get("steps") or b.steps_for(run["preset"])
    return cfg, ex.run_key(cfg, "avdigits", steps)[1]


def step_seconds(cfg, steps: int) -> float:
    """Median seconds of one training step of ``cfg`` at its batch size, random inputs, after one warm-up."""
    seed_everything(0)
    model = build_model(cfg)
    main_opt, club_opt, _ = make_optimizers(model, cfg)
    batch = random_batch(cfg, cfg.train.batch_size, torch.device("cpu"))
    train_step(model, batch, main_opt, club_opt, cfg)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(model, batch, main_opt, club_opt, cfg)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per distinct configuration")
    parser.add_argument("--set-budget", nargs="*", default=[], metavar="KEY=VALUE",
                        help="budget entries to change (JSON values), e.g. pretrain_steps=600")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.steps < 1:
        raise SystemExit(f"book_budget.py: error: --threads and --steps must be positive, got {args.threads}, "
                         f"{args.steps}")
    torch.set_num_threads(args.threads)
    try:
        b, grid = read_budget(args.scale)
    except ValueError as err:
        raise SystemExit(f"book_budget.py: error: {err}") from None
    known = {f.name for f in dataclasses.fields(b)}
    for item in args.set_budget:
        key, _, raw = item.partition("=")
        if key not in known:
            raise SystemExit(f"book_budget.py: error: unknown budget key {key!r}; known: {sorted(known)}")
        value = json.loads(raw)
        b = dataclasses.replace(b, **{key: tuple(value) if isinstance(value, list) else value})
    if any(item.startswith(("methods=", "size_sweep_methods=", "pretrain_sizes=")) for item in args.set_budget):
        grid = [(s, m) for i, s in enumerate(b.pretrain_sizes) for m in b.methods
                if i == 0 or m in b.size_sweep_methods]
    calls = book_runs(b, args.scale, grid)
    runs: dict[str, dict] = {}
    for run in calls:
        cfg, key = _config(run, args.scale, b)
        runs.setdefault(key, {**run, "config": cfg, "evals": []})["evals"] += run["evals"]
    timed: dict[tuple, float] = {}
    started = time.perf_counter()
    for run in runs.values():                # the data size does not change a step's cost: time each shape once
        shape = (run["preset"], run["method"], run["overrides"])
        if shape not in timed:
            timed[shape] = step_seconds(run["config"], args.steps)
        run["step_s"] = timed[shape]
    for r in runs.values():
        r["steps"] = r.get("steps") or b.steps_for(r["preset"])
    total = sum(r["step_s"] * r["steps"] for r in runs.values())
    print(f"scale={args.scale} threads={torch.get_num_threads()} pretrain_steps={b.pretrain_steps} "
          f"book_steps={b.book_steps} batch={b.batch_size} "
          f"({len(calls)} pretrain_run calls in the notebooks, {len(runs)} distinct runs, {len(timed)} step shapes "
          f"timed in {time.perf_counter() - started:.0f} s)")
    by_nb: dict[str, list] = {}
    for r in runs.values():
        by_nb.setdefault(r["nb"], []).append(r)
    for nb, rs in sorted(by_nb.items()):
        kinds = sorted({f"{r['preset']}/{r['method']} {r['step_s'] * 1e3:.0f} ms" for r in rs})
        print(f"  notebook {nb}: {len(rs):2d} new runs, {sum(r['step_s'] * r['steps'] for r in rs):7.0f} s "
              f"(steps: {', '.join(kinds)})")
    heads: dict[str, int] = {}
    for r in runs.values():
        for task, directions, seeds in r["evals"]:
            heads[task] = heads.get(task, 0) + directions * seeds
    print(f"pre-training estimate: {total:.0f} s = {total / 60:.1f} min of the {LIMIT_S // 60}-minute limit "
          f"({total / LIMIT_S:.0%})")
    print("downstream head trainings (runs x directions x seeds; not timed): "
          + ", ".join(f"{t} {n}" for t, n in heads.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
