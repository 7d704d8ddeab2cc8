"""The run-once cache of downstream evaluations: ``CMG_CACHE/results/<task>-<key>.json``, one record each.

:func:`downstream` computes one ``cmg_lib.downstream.run_task`` record once per (checkpoint, task, directions,
seed, protocol, options) and stores it atomically (architecture contract "Results"); :func:`evaluate` runs a
checkpoint over directions x head seeds with the scale's epochs and tags the records for the tables;
:func:`avs_overlays` keeps the Fig. 5 arrays of the same head run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from ..checkpoint import load_checkpoint
from ..data import load_dataset, schema
from ..data.common import split_tensors
from ..downstream import avs_predictions, direction_label, raw_features, run_task
from ..downstream.localisation import LOCALISE_DEFAULTS
from ..downstream.metrics import background_only_scores
from ..storage import atomic_write_with, atomic_write_json, cache_root, json_default, read_json
from .budgets import budget
from .runs import checkpoint_key, run_config

# The number each paper table reports per task (run_task returns percentages under record["metrics"]).
TASK_METRIC = {"ave": "accuracy", "avvp": "accuracy", "ave_avvp": "f1", "ucf_vgg": "accuracy", "avs": "miou",
               "retrieval": "R@5", "oscmg": "hscore"}
AV_DIRECTIONS = (("video", "audio"), ("audio", "video"))


LOADED_MODELS = 2          # checkpoints kept loaded per process (one notebook evaluates one checkpoint at a time)
_MODELS: "OrderedDict[tuple, object]" = OrderedDict()


def loaded(ckpt: str | os.PathLike):
    """The frozen model of a checkpoint, loaded once per process while it is among the last ``LOADED_MODELS``
    used (keyed by path, size and modification time): every direction, head seed and task of a checkpoint then
    runs on one model object, so the downstream code cache (``downstream.common.extract``) serves its splits once."""
    path = Path(ckpt).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _MODELS:
        _MODELS[key] = load_checkpoint(path)
        while len(_MODELS) > LOADED_MODELS:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(key)
    return _MODELS[key]


def _default_runner(task, ckpt, **kwargs):
    record = run_task(task, model=loaded(ckpt), progress=False, **kwargs)
    return {**record, "checkpoint": str(ckpt)}


def downstream(task: str, ckpt: str | os.PathLike, *, train_modality: str, test_modality: str, seed: int = 0,
               protocol: str | None = None, data: str = "avdigits", cache_dir: str | os.PathLike | None = None,
               runner: Callable | None = None, **options) -> dict:
    """Result record of one downstream run, computed once and cached.

    Key: (checkpoint key, task, train/test modality, seed, protocol, data, options). ``runner(task, ckpt,
    train_modality=, test_modality=, seed=, data=, [protocol=], **options) -> dict`` defaults to
    ``cmg_lib.downstream.run_task``. The record adds the bookkeeping fields the tables use: ``task``,
    ``train_modality``, ``test_modality``, ``direction``, ``seed``, ``protocol``, ``ckpt_key``, ``pretrain``
    (the full pre-training config, when known) and ``version``, keeping the runner's own values where it set them.
    Options such as ``scale`` and ``epochs`` are passed on to the runner and are part of the key.
    """
    ident = {"ckpt": checkpoint_key(ckpt), "task": task, "train_modality": train_modality,
             "test_modality": test_modality, "seed": int(seed), "protocol": protocol, "data": str(data),
             "options": options}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=json_default).encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / "results" / f"{task}-{key}.json"
    cached = read_json(path)
    if cached is not None:
        return cached
    kwargs = dict(train_modality=train_modality, test_modality=test_modality, seed=int(seed), data=data, **options)
    if protocol is not None:
        kwargs["protocol"] = protocol
    result = (runner or _default_runner)(task, str(ckpt), **kwargs)
    if not isinstance(result, dict):
        raise TypeError(f"downstream runner for {task!r} returned {type(result).__name__}, expected a dict")
    record = dict(result)
    defaults = dict(task=task, train_modality=train_modality, test_modality=test_modality,
                    direction=direction_label(train_modality, test_modality), seed=int(seed), protocol=protocol,
                    data=str(data), pretrain=run_config(ckpt))
    for name, value in defaults.items():          # the runner's own fields win (e.g. its default protocol)
        if record.get(name) is None:
            record[name] = value
    record.update(options=options, ckpt_key=ident["ckpt"], cache_key=key)
    record.setdefault("version", __version__)
    atomic_write_json(path, record)
    return read_json(path)


def raw_reference(task: str, modality: str, seeds: Sequence[int], *, scale: str, data: str = "avdigits",
                  cache_dir: str | os.PathLike | None = None, **options) -> list[dict]:
    """Records of ``task`` with the head trained and tested on ``modality``'s raw features instead of codes
    (``downstream.RawFeatures``), per head seed, with the scale's head epochs: the reference a labelled-modality
    number is held against. Cached under ``results/`` like :func:`downstream` (key: modality, task, seed, scale,
    data, options); each record gets ``metric``."""
    options.setdefault("epochs", budget(scale).downstream_epochs)
    out = []
    for seed in seeds:
        ident = {"raw": modality, "task": task, "seed": int(seed), "scale": scale, "data": str(data),
                 "options": options}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=json_default).encode()).hexdigest()[:16]
        path = cache_root(cache_dir) / "results" / f"{task}-raw-{key}.json"
        record = read_json(path)
        if record is None:
            reference = raw_features(load_dataset(data, task, "train", scale=scale, cache_dir=cache_dir), modality)
            record = run_task(task, model=reference, data=data, train_modality=modality, test_modality=modality,
                              seed=int(seed), scale=scale, progress=False, **options)
            record.update(cache_key=key, options=options)
            atomic_write_json(path, record)
            record = read_json(path)
        out.append({**record, "metric": float(record["metrics"][TASK_METRIC[task]])})
    return out


def avvp_floor(test_modality: str, *, scale: str, data: str = "avdigits", protocol: str = "heldout",
               cache_dir: str | os.PathLike | None = None) -> float:
    """AVVP's reported number (percent) for a head that calls every segment background and reads no code
    (``downstream.metrics.background_only_scores``): the floor of an AVVP head, on the clips the task scores
    (heldout: split ``test``; released: the training clips) with ``test_modality``'s segment labels."""
    split = "train" if protocol == "released" else "test"
    labels = split_tensors(load_dataset(data, "avvp", split, scale=scale, cache_dir=cache_dir))
    scores = background_only_scores(labels[schema.segment_key(test_modality)].float(),
                                    LOCALISE_DEFAULTS["eval_batch_size"], LOCALISE_DEFAULTS["threshold"])
    return 100 * scores["precision"]


def evaluate(ckpt: str | os.PathLike, task: str, directions: Sequence[tuple[str, str]], seeds: Sequence[int], *,
             scale: str, data: str = "avdigits", protocol: str | None = None,
             cache_dir: str | os.PathLike | None = None, tags: dict | None = None, **options) -> list[dict]:
    """Cached :func:`downstream` runs of one checkpoint over directions x seeds, with the scale's head epochs.

    Each returned record gets ``metric`` (the task's reported number, :data:`TASK_METRIC`) and the ``tags``
    (e.g. ``{"method": "unicode", "pretrain_size": "24k"}``) as top-level fields for ``tables.results_table``.
    """
    options.setdefault("epochs", budget(scale).downstream_epochs)
    out = []
    for train_m, test_m in directions:
        for seed in seeds:
            rec = dict(downstream(task, ckpt, train_modality=train_m, test_modality=test_m, seed=seed,
                                  protocol=protocol, data=data, cache_dir=cache_dir, scale=scale, **options))
            rec["metric"] = float(rec["metrics"][TASK_METRIC[task]]) if task in TASK_METRIC else math.nan
            rec.update(tags or {})
            out.append(rec)
    return out


def avs_overlays(ckpt: str | os.PathLike, *, train_modality: str, test_modality: str, seed: int = 0, scale: str,
                 data: str = "avdigits", cache_dir: str | os.PathLike | None = None, count: int = 4,
                 **options) -> dict:
    """Fig. 5: predicted masks of the first ``count`` AVS test clips, from the head of the cached ``avs`` run of
    these arguments (``downstream`` key; options default to the scale's ``avs_epochs``), so the table and the
    figure share one head training. The arrays (``frames``, ``masks``, ``prob``, ``pred``, ``index``) are stored
    beside the record as ``results/avs-overlays-<key>.npz``; ``result`` is the run's record."""
    options.setdefault("epochs", budget(scale).avs_epochs)
    fresh: dict = {}

    def runner(task, ck, **kwargs):
        fresh.update(avs_predictions(ckpt=ck, count=count, progress=False, **kwargs))
        return fresh["result"]

    record = downstream("avs", ckpt, train_modality=train_modality, test_modality=test_modality, seed=seed,
                        data=data, cache_dir=cache_dir, runner=runner, scale=scale, **options)
    path = cache_root(cache_dir) / "results" / f"avs-overlays-{record['cache_key']}-{int(count)}.npz"
    keys = ("frames", "masks", "prob", "pred", "index")
    if not fresh and path.exists():
        with np.load(path) as f:
            return {**{k: f[k] for k in keys}, "result": record}
    if not fresh:          # the record was cached by evaluate() without the arrays: train the head again
        fresh.update(avs_predictions(ckpt=str(ckpt), data=data, train_modality=train_modality,
                                     test_modality=test_modality, seed=seed, scale=scale, count=count,
                                     progress=False, **options))
    arrays = {k: np.asarray(fresh[k]) for k in keys}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write_with(path, write)
    return {**arrays, "result": record}


def load_results(cache_dir: str | os.PathLike | None = None, task: str | None = None) -> list[dict]:
    """Every cached downstream record (optionally of one task)."""
    folder = cache_root(cache_dir) / "results"
    pattern = f"{task}-*.json" if task else "*.json"
    return [read_json(p) for p in sorted(folder.glob(pattern))] if folder.exists() else []
