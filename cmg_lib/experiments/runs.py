"""The run-once cache of pre-training runs: ``CMG_CACHE/runs/<config key>/final.pt``.

:func:`pretrained` trains a configuration once and returns its checkpoint path; later calls with the same *full*
configuration reuse it. A run is trained in a temporary folder and renamed into place only when complete, so a
crash leaves no entry; the run lock (``storage.locked``) makes a second kernel asking for the same configuration
wait instead of training it again. :func:`snapshot` finds the same run's checkpoint at an earlier step.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import read_checkpoint, snapshot_name, snapshot_step
from ..config import Config
from ..data import load_dataset
from ..storage import (TMP_MARK, atomic_write_json, cache_root, clean_stale, locked, read_json,
                       writable_cache_root)
from ..train import pretrain
from .budgets import budget, experiment_config


def run_key(config: Config, data: str | None = None, steps: int | None = None) -> tuple[Config, str]:
    """The configuration actually trained (``data`` and ``steps`` folded in) and its cache key."""
    d = config.to_dict()
    if data is not None:
        d["data"]["source"] = str(data)
    if steps is not None:
        if int(steps) < 1:
            raise ValueError(f"steps must be a positive number of optimiser steps, got {steps}")
        d["train"]["max_steps"] = int(steps)
        # snapshots at or past the last step would only copy final.pt: a run of fewer updates keeps those below it
        d["train"]["snapshot_steps"] = [s for s in d["train"]["snapshot_steps"] if s < int(steps)]
    full = Config.from_dict(d)
    return full, full.key()


def _default_trainer(config, dataset, out_dir, steps, progress):
    return pretrain(config, dataset, out_dir=out_dir, steps=steps, progress=progress)


def _default_dataset(config: Config):
    return load_dataset(config.data.source, "pretrain", config.data.pretrain_size, scale=config.data.scale)


def cached_run(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the run of cache key ``key`` keeps its ``final.pt`` (present once the run is complete)."""
    return cache_root(cache_dir) / "runs" / key / "final.pt"


def pretrained(config: Config, data: str | os.PathLike | None = None, *, steps: int | None = None,
               cache_dir: str | os.PathLike | None = None, progress: bool = False,
               trainer: Callable | None = None, dataset: Any = None, lock_timeout: float | None = None) -> Path:
    """Path of ``final.pt`` for ``config`` pre-trained on ``data`` (default ``config.data.source``) for ``steps``.

    Trains only if ``CMG_CACHE/runs/<key>/final.pt`` is absent; the key is ``Config.key()`` of the configuration
    with ``data`` and ``steps`` folded in, so any changed field trains a new run. ``trainer(config, dataset,
    out_dir, steps, progress) -> (model, history)`` defaults to ``cmg_lib.train.pretrain`` and must write
    ``out_dir/final.pt``; the history is stored beside it as ``history.json`` (see :func:`run_history`).
    """
    full, key = run_key(config, data, steps)
    final = cached_run(key, cache_dir)
    run_dir = final.parent
    runs = run_dir.parent
    if final.exists():
        return final
    writable_cache_root(cache_dir)              # names CMG_CACHE when that is what cannot take the run
    with locked(runs / f"{key}.lock", lock_timeout):
        if final.exists():                       # another kernel finished it while we waited
            return final
        clean_stale(runs)                       # temp folders of killed trainers
        tmp = runs / f"{key}{TMP_MARK}{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            atomic_write_json(tmp / "config.json", full.to_dict())
            ds = dataset if dataset is not None else _default_dataset(full)
            _model, history = (trainer or _default_trainer)(full, ds, str(tmp), full.train.max_steps, progress)
            if not (tmp / "final.pt").exists():
                raise RuntimeError(f"the trainer returned without writing {tmp / 'final.pt'}")
            atomic_write_json(tmp / "history.json", history_records(history))
            if run_dir.exists():                  # an unfinished leftover without final.pt
                shutil.rmtree(run_dir)
            os.replace(tmp, run_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def pretrain_run(preset_name: str, method: str = "unicode", *, scale: str, data: str = "avdigits", seed: int = 0,
                 device: str = "cpu", pretrain_size: str | None = None, overrides: Sequence[str] = (),
                 steps: int | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """:func:`pretrained` of ``experiment_config`` (``pretrain_size`` None: the preset's own) for the scale's number
    of steps for the preset's recipe (or ``steps``)."""
    cfg = experiment_config(preset_name, method, scale=scale, seed=seed, device=device, pretrain_size=pretrain_size,
                            overrides=overrides)
    return pretrained(cfg, data, steps=steps or budget(scale).steps_for(cfg.recipe), cache_dir=cache_dir)


def history_records(history: Any) -> list[dict]:
    """Training history as a list of per-log-step dicts (accepts a list of dicts or a dict of lists)."""
    if history is None:
        return []
    if isinstance(history, dict):
        keys = list(history)
        n = max((len(v) for v in history.values() if isinstance(v, Sequence)), default=0)
        return [{k: history[k][i] for k in keys if isinstance(history[k], Sequence) and i < len(history[k])}
                for i in range(n)]
    return [dict(h) for h in history]


def run_history(ckpt: str | os.PathLike) -> list[dict]:
    """The stored training history of a cached run (``history.json`` beside the checkpoint) up to the
    checkpoint's step (a ``step-<s>.pt`` snapshot sees the entries of steps <= s only); [] if absent."""
    history = read_json(Path(ckpt).parent / "history.json", default=[])
    step = snapshot_step(ckpt)
    return history if step is None else [h for h in history if h.get("step", 0) <= step]


def run_config(ckpt: str | os.PathLike) -> dict | None:
    """The stored full configuration of a cached run (``config.json`` beside the checkpoint), or None."""
    return read_json(Path(ckpt).parent / "config.json", default=None)


def checkpoint_key(ckpt: str | os.PathLike) -> str:
    """Cache identity of a checkpoint: the run key for cached runs, else a hash of the file's bytes."""
    path = Path(ckpt)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.parent.parent.name == "runs" and (path.parent / "config.json").exists():
        return path.parent.name if path.name == "final.pt" else f"{path.parent.name}-{path.stem}"   # snapshots
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "file-" + digest.hexdigest()[:16]


def snapshot(ckpt: str | os.PathLike, step: int) -> Path:
    """The checkpoint of the same cached run at optimiser step ``step``: ``final.pt`` itself when that is the run's
    last step, else its ``step-<s>.pt`` snapshot (``train.snapshot_steps``), identical to a ``step``-step run."""
    ckpt = Path(ckpt)
    path = ckpt.parent / snapshot_name(step)
    if path.exists():
        return path
    config = run_config(ckpt)
    if config is not None and config["train"].get("max_steps") == int(step):
        return ckpt
    if config is None and int(read_checkpoint(ckpt)["step"]) == int(step):
        return ckpt
    kept = sorted(p.name for p in ckpt.parent.glob("step-*.pt"))
    raise FileNotFoundError(f"no snapshot at step {step} beside {ckpt}; it has {kept or 'none'} (set "
                            f"train.snapshot_steps before pre-training)")
