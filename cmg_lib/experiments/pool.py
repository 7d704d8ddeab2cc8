"""Train the book's distinct pre-training runs before any notebook runs: a pool of one-thread worker processes.

The book's models are small, so one torch thread per run and as many runs at a time as the machine has cores beats
fewer runs with more threads each (``benchmarks/book_budget.py`` measures both). :func:`train_runs` takes the runs
:func:`chapters.plan` lists (every configuration once, by its cache key), skips those already in the cache, and
trains the rest through ``runs.pretrained`` (the same cache, lock and atomic rename the notebooks use), longest
first, so that the last runs to finish are short ones and the cores stay busy to the end. The notebooks then find
every run cached and only train their downstream heads.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from ..hardware import usable_cores
from .runs import cached_run


@dataclass(frozen=True)
class RunJob:
    """One pre-training run to train: its full configuration (data and steps folded in, as ``runs.run_key``),
    its updates, its cache key and a label for the progress lines."""

    config_dict: dict
    steps: int
    key: str
    label: str
    cost: float           # relative cost (updates x modalities x batch), for the longest-first order


def job_cost(config_dict: dict, steps: int) -> float:
    """Relative cost of a run: updates x batch size x modalities (the step is linear in both at these sizes)."""
    return float(steps) * config_dict["train"]["batch_size"] * len(config_dict["model"]["modalities"])


def jobs_from_plan(planned: Sequence, data: str | None = None) -> list[RunJob]:
    """A :class:`RunJob` per planned run (``chapters.PlannedRun``: ``key``, ``config``, ``steps``, ``preset``,
    ``method``, ``overrides``), longest first."""
    jobs = []
    for run in planned:
        d = run.config.to_dict()
        seed = d["train"]["seed"]
        extra = f" {' '.join(run.overrides)}" if run.overrides else ""
        label = f"{run.preset}/{run.method} seed {seed}, {run.steps} updates{extra}"
        jobs.append(RunJob(d, int(run.steps), run.key, label, job_cost(d, int(run.steps))))
    return sorted(jobs, key=lambda j: -j.cost)


def _worker_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _train_one(job: RunJob, data: str | None, cache_dir: str | None) -> tuple[str, float]:
    """Train one run into the cache (a worker process); returns its key and seconds."""
    from ..config import Config
    from .runs import pretrained

    start = time.perf_counter()
    pretrained(Config.from_dict(job.config_dict), data, steps=job.steps, cache_dir=cache_dir)
    return job.key, time.perf_counter() - start


def pending(jobs: Sequence[RunJob], cache_dir: str | os.PathLike | None = None) -> list[RunJob]:
    """The jobs whose run is not in the cache yet (no ``runs/<key>/final.pt``)."""
    return [j for j in jobs if not cached_run(j.key, cache_dir).exists()]


def train_runs(jobs: Sequence[RunJob], data: str | None = None, *, cache_dir: str | os.PathLike | None = None,
               workers: int | None = None, log: Callable[[str], None] = print) -> dict[str, float]:
    """Train every job not yet cached, ``workers`` at a time (default: the usable cores), one torch thread each,
    longest first; returns seconds per trained key. A failing run stops the pool: the runs already started finish
    (each is written to the cache only when complete), no further run starts, and the failure is raised naming
    the run. Ctrl-C stops every worker at once (a run is renamed into the cache only when complete, so an
    interrupted one leaves only a temp folder that the next run removes)."""
    todo = pending(jobs, cache_dir)
    workers = max(1, workers or usable_cores())
    if not todo:
        log(f"[runs] all {len(jobs)} pre-training runs are cached")
        return {}
    total_cost = sum(j.cost for j in todo)
    log(f"[runs] training {len(todo)} of {len(jobs)} pre-training runs, {workers} at a time, one torch thread each "
        f"({sum(j.steps for j in todo)} updates in all)")
    cache = None if cache_dir is None else str(Path(cache_dir))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")   # no fork of a parent with torch's thread pools started
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                             initargs=(1,)) as pool:
        futures = {pool.submit(_train_one, job, data, cache): job for job in todo}
        remaining = set(futures)
        try:
            _collect(futures, remaining, seconds, todo, total_cost, start, log, workers)
        except KeyboardInterrupt:                    # Ctrl-C: stop the workers now (their runs leave no entry)
            for future in futures:
                future.cancel()
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise
    return seconds


def eta_seconds(total_cost: float, done_cost: float, run_seconds: float, workers: int) -> float:
    """Seconds left for the pool: the cost not yet finished at the rate of the finished runs (their cost per
    second of their own time), ``workers`` at a time. (Elapsed time over finished cost would count the runs still in
    flight as idle time: twice too long with two workers after the first run.) NaN before any run has finished."""
    if done_cost <= 0 or run_seconds <= 0:
        return float("nan")
    return (total_cost - done_cost) * run_seconds / done_cost / max(1, workers)


def _collect(futures: dict, remaining: set, seconds: dict[str, float], todo: Sequence[RunJob], total_cost: float,
             start: float, log: Callable[[str], None], workers: int = 1) -> None:
    """Wait for the pool's runs, logging each as it ends; a failed run cancels the ones not started and raises."""
    done_cost = 0.0
    while remaining:
        done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
        for future in done:
            job = futures[future]
            error = future.exception()
            if error is not None:
                for other in remaining:
                    other.cancel()
                raise RuntimeError(f"pre-training run {job.label} (cache key {job.key}) failed: "
                                   f"{type(error).__name__}: {error}") from error
            key, sec = future.result()
            seconds[key] = sec
            done_cost += job.cost
            elapsed = time.perf_counter() - start
            eta = eta_seconds(total_cost, done_cost, sum(seconds.values()), min(workers, len(todo)))
            log(f"[runs] {len(seconds)}/{len(todo)} {job.label}: {sec:.0f} s "
                f"(elapsed {elapsed / 60:.1f} min, about {eta / 60:.1f} min left)")
