"""Run-or-load results cache and table helpers for the notebooks.

* :func:`pretrained` pre-trains a configuration once (``cmg_lib.train.pretrain``) and returns the checkpoint path
  ``CMG_CACHE/runs/<config.key()>/final.pt``; later calls with the same *full* configuration reuse it. A run is
  trained in a temporary folder and renamed into place only when complete, so a crash leaves no entry; a lock file
  makes a second notebook kernel asking for the same configuration wait instead of training it again.
* :func:`downstream` does the same for one downstream evaluation (``cmg_lib.downstream.run_task``), keyed by
  (checkpoint, task, directions, seed, protocol, options); the result is one JSON object (architecture contract
  "Results") written atomically to ``CMG_CACHE/results/<key>.json``.
* :func:`results_table` / :func:`aggregate` turn result records into mean ± std tables over seeds;
  :func:`paper_table` holds the paper's printed numbers for Tables 1-5 (the only numbers typed by hand in the
  project, from the paper text, shown beside ours only); :func:`side_by_side` puts the two next to each other.
* :func:`budget` is the one table of steps / seeds / sizes per book scale.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config

# ------------------------------------------------------------------------------------------------ budgets per scale

ABLATIONS_ORDER = ("w/o CLUB", "w/o Cross-CPC", "w/o DCID", "w/o MM-EMA", "w/o reset", "w/o CMCM",
                   "w/o MM-EMA, reset", "full")

_ALL_METHODS = ("baseline", "smit", "mst", "codis", "turn", "cmcm", "dcid+smit", "dcid+mst", "dcid+turn",
                "dcid+codis", "dcid+cmcm", "unicode")
_BUDGETS: dict[str, dict[str, Any]] = {
    # CI: every code path with tiny runs; the whole book must stay under 10 minutes on 2 cores.
    "smoke": dict(seeds=(0,), pretrain_steps=4, pretrain_sizes=("40k",), downstream_epochs=2,
                  methods=("baseline", "cmcm", "unicode"), size_sweep_methods=("baseline", "cmcm", "unicode"),
                  ablation_sizes=("40k",), codebook_sizes=(16, 64), explorer_steps=(2, 4), batch_size=16,
                  ablations=("w/o DCID", "full"), avt_ablations=("w/o CLUB", "full"), explorer_classes=2,
                  avs_seeds=(0,), avs_epochs=1),
    # The published book on 2 CPU cores in under 45 minutes (measured; see book/reproduce.md): 200 steps (AV-Digits
    # results at 200 and 300 steps were alike, measured), two head seeds; every Table 1 method at the main size
    # (24k), the baseline and Uni-Code at every size; the AV ablations at 24k; five AVT rows; AVS heads (trained from
    # scratch on frames, ~11 s a run) with two seeds, like the other heads.
    "default": dict(seeds=(0, 1), pretrain_steps=200, pretrain_sizes=("24k", "40k", "81k"), downstream_epochs=15,
                    methods=_ALL_METHODS, size_sweep_methods=("baseline", "unicode"), ablation_sizes=("24k",),
                    codebook_sizes=(16, 64, 256), explorer_steps=(20, 60, 200), batch_size=64,
                    ablations=tuple(ABLATIONS_ORDER),
                    avt_ablations=("w/o CLUB", "w/o Cross-CPC", "w/o MM-EMA, reset", "w/o CMCM", "full"),
                    explorer_classes=3, avs_seeds=(0, 1), avs_epochs=6),
    # Everything: all methods at all sizes, both ablation sizes, longer training, more seeds (GPU or a long CPU run).
    "full": dict(seeds=(0, 1, 2, 3, 4), pretrain_steps=2000, pretrain_sizes=("24k", "40k", "81k"),
                 downstream_epochs=30, methods=_ALL_METHODS, size_sweep_methods=_ALL_METHODS,
                 ablation_sizes=("24k", "40k"), codebook_sizes=(16, 32, 64, 128, 256, 512),
                 explorer_steps=(100, 500, 2000), batch_size=64, ablations=tuple(ABLATIONS_ORDER),
                 avt_ablations=tuple(r for r in ABLATIONS_ORDER if r != "w/o DCID"),
                 explorer_classes=3, avs_seeds=(0, 1, 2), avs_epochs=10),
}


def budget(scale: str) -> dict[str, Any]:
    """Steps, seeds, pre-training sizes, methods and sweep values for a book scale (a fresh copy).

    ``pretrain_sizes[0]`` is the main size (every notebook's default pre-training set, so their runs are shared);
    ``size_sweep_methods`` are also pre-trained at the other sizes; ``ablation_sizes`` are Table 2's sizes.
    """
    if scale not in _BUDGETS:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(_BUDGETS)}")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in _BUDGETS[scale].items()}


def table1_grid(scale: str) -> list[tuple[str, str]]:
    """``(pretrain_size, method)`` pairs of Table 1 at a scale: every method at the main size, the
    ``size_sweep_methods`` at every size."""
    b = budget(scale)
    return [(size, m) for i, size in enumerate(b["pretrain_sizes"]) for m in b["methods"]
            if i == 0 or m in b["size_sweep_methods"]]


# Ablation rows of Tables 2 and 3: switches turned off on top of the full Uni-Code method (paper Sec. 5.4).
ABLATIONS: dict[str, dict[str, bool]] = {
    "w/o CLUB": {"club": False},
    "w/o Cross-CPC": {"cross_cpc": False},
    "w/o DCID": {"club": False, "cross_cpc": False},
    "w/o MM-EMA": {"mm_ema": False},
    "w/o reset": {"reset_code": False},
    "w/o CMCM": {"cmcm": False},
    "w/o MM-EMA, reset": {"mm_ema": False, "reset_code": False},
    "full": {},
}


def ablation_overrides(name: str) -> list[str]:
    """``key=value`` overrides (for ``preset(..., method="unicode", overrides=...)``) of one ablation row."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; expected one of {list(ABLATIONS)}")
    return [f"model.{k}={str(v).lower()}" for k, v in ABLATIONS[name].items()]


# ------------------------------------------------------------------------------------------------ cache locations

def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The results cache: ``cache_dir``, else ``$CMG_CACHE``, else ``./.cache``."""
    return Path(cache_dir or os.environ.get("CMG_CACHE") or ".cache").expanduser().resolve()


def run_key(config: Config, data: str | None = None, steps: int | None = None) -> tuple[Config, str]:
    """The configuration actually trained (``data`` and ``steps`` folded in) and its cache key."""
    d = config.to_dict()
    if data is not None:
        d["data"]["source"] = str(data)
    if steps is not None:
        if int(steps) < 1:
            raise ValueError(f"steps must be a positive number of optimiser steps, got {steps}")
        d["train"]["max_steps"] = int(steps)
    full = Config.from_dict(d)
    return full, full.key()


# ------------------------------------------------------------------------------------------------ locking

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(lock_path: Path, timeout: float | None, poll: float = 2.0):
    """Hold an exclusive lock file; wait while another live process holds it; take over a dead holder's lock."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    start = time.monotonic()
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(lock_path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                holder = {}
            if holder.get("host") == me["host"] and "pid" in holder and not _pid_alive(int(holder["pid"])):
                with contextlib.suppress(FileNotFoundError):
                    lock_path.unlink()       # stale: its process died without cleaning up
                continue
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"{lock_path} is held by {holder or 'another process'} for more than {timeout} s; "
                                   "delete it if that process is gone")
            time.sleep(poll)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):        # numpy arrays/scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a results record")


# ------------------------------------------------------------------------------------------------ pre-training

def _default_trainer(config, dataset, out_dir, steps, progress):
    from .train import pretrain

    return pretrain(config, dataset, out_dir=out_dir, steps=steps, progress=progress)


def _default_dataset(config: Config):
    from .data import load_dataset

    return load_dataset(config.data.source, "pretrain", config.data.pretrain_size, scale=config.data.scale)


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
    runs = cache_root(cache_dir) / "runs"
    run_dir = runs / key
    final = run_dir / "final.pt"
    if final.exists():
        return final
    with _locked(runs / f"{key}.lock", lock_timeout):
        if final.exists():                       # another kernel finished it while we waited
            return final
        tmp = runs / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _atomic_write_json(tmp / "config.json", full.to_dict())
            ds = dataset if dataset is not None else _default_dataset(full)
            train = trainer or _default_trainer
            _model, history = train(full, ds, str(tmp), full.train.max_steps, progress)
            if not (tmp / "final.pt").exists():
                raise RuntimeError(f"the trainer returned without writing {tmp / 'final.pt'}")
            _atomic_write_json(tmp / "history.json", _history_records(history))
            if run_dir.exists():                  # an unfinished leftover without final.pt
                shutil.rmtree(run_dir)
            os.replace(tmp, run_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _history_records(history: Any) -> list[dict]:
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
    """The stored training history of a cached run (``history.json`` beside the checkpoint); [] if absent."""
    path = Path(ckpt).parent / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def run_config(ckpt: str | os.PathLike) -> dict | None:
    """The stored full configuration of a cached run (``config.json`` beside the checkpoint), or None."""
    path = Path(ckpt).parent / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


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


# ------------------------------------------------------------------------------------------------ downstream

def direction_label(train_modality: str, test_modality: str) -> str:
    """The paper's column name: ``V→A`` = head trained on video codes, evaluated on audio codes."""
    return f"{train_modality[0].upper()}→{test_modality[0].upper()}"


def _default_runner(task, ckpt, **kwargs):
    from .downstream import run_task

    return run_task(task, ckpt=ckpt, progress=False, **kwargs)


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
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]
    results = cache_root(cache_dir) / "results"
    path = results / f"{task}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    kwargs = dict(train_modality=train_modality, test_modality=test_modality, seed=int(seed), data=data, **options)
    if protocol is not None:
        kwargs["protocol"] = protocol
    result = (runner or _default_runner)(task, str(ckpt), **kwargs)
    if not isinstance(result, dict):
        raise TypeError(f"downstream runner for {task!r} returned {type(result).__name__}, expected a dict")
    from . import __version__

    record = dict(result)
    defaults = dict(task=task, train_modality=train_modality, test_modality=test_modality,
                    direction=direction_label(train_modality, test_modality), seed=int(seed), protocol=protocol,
                    data=str(data), pretrain=run_config(ckpt))
    for name, value in defaults.items():          # the runner's own fields win (e.g. its default protocol)
        if record.get(name) is None:
            record[name] = value
    record.update(options=options, ckpt_key=ident["ckpt"], cache_key=key)
    record.setdefault("version", __version__)
    results.mkdir(parents=True, exist_ok=True)
    _atomic_write_json(path, record)
    return json.loads(path.read_text())


def avs_overlays(ckpt: str | os.PathLike, *, train_modality: str, test_modality: str, seed: int = 0, scale: str,
                 data: str = "avdigits", cache_dir: str | os.PathLike | None = None, count: int = 4,
                 **options) -> dict:
    """Fig. 5: predicted masks of the first ``count`` AVS test clips, from the head of the cached ``avs`` run of
    these arguments (``downstream`` key; options default to the scale's ``avs_epochs``), so the table and the
    figure share one head training. The arrays (``frames``, ``masks``, ``prob``, ``pred``, ``index``) are stored
    beside the record as ``results/avs-overlays-<key>.npz``; ``result`` is the run's record."""
    from .downstream.tasks import avs_predictions

    options.setdefault("epochs", budget(scale)["avs_epochs"])
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
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return {**arrays, "result": record}


def load_results(cache_dir: str | os.PathLike | None = None, task: str | None = None) -> list[dict]:
    """Every cached downstream record (optionally of one task)."""
    folder = cache_root(cache_dir) / "results"
    pattern = f"{task}-*.json" if task else "*.json"
    return [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))] if folder.exists() else []


# ------------------------------------------------------------------------------------------------ notebook helpers

# The number each paper table reports per task (run_task returns percentages under record["metrics"]).
TASK_METRIC = {"ave": "accuracy", "avvp": "accuracy", "ave_avvp": "f1", "ucf_vgg": "accuracy", "avs": "miou",
               "retrieval": "R@5"}


def experiment_config(preset_name: str, method: str = "unicode", *, scale: str, seed: int = 0, device: str = "cpu",
                      pretrain_size: str = "40k", overrides: Sequence[str] = ()) -> Config:
    """A preset sized by the scale's budget: batch size, data scale, pre-training size, seed, device, logging.

    Every notebook builds its configurations here, so equal rows of different tables share one cached run. Runs
    keep no per-epoch checkpoints, only ``final.pt`` and the snapshots at the scale's ``explorer_steps`` (see
    :func:`snapshot`).
    """
    from .config import preset

    b = budget(scale)
    log_every = max(1, b["pretrain_steps"] // 15)
    snapshots = ",".join(str(s) for s in b["explorer_steps"] if s < b["pretrain_steps"])
    base = [f"train.batch_size={b['batch_size']}", f"train.seed={int(seed)}", f"train.device={device}",
            f"train.log_every={log_every}", f"data.scale={scale}", f"data.pretrain_size={pretrain_size}",
            "train.epoch_ckpts=false", f"train.snapshot_steps=[{snapshots}]"]
    return preset(preset_name, method, overrides=base + list(overrides))


def pretrain_run(preset_name: str, method: str = "unicode", *, scale: str, data: str = "avdigits", seed: int = 0,
                 device: str = "cpu", pretrain_size: str = "40k", overrides: Sequence[str] = (),
                 steps: int | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """:func:`pretrained` of :func:`experiment_config` for the scale's number of steps (or ``steps``)."""
    cfg = experiment_config(preset_name, method, scale=scale, seed=seed, device=device, pretrain_size=pretrain_size,
                            overrides=overrides)
    return pretrained(cfg, data, steps=steps or budget(scale)["pretrain_steps"], cache_dir=cache_dir)


def snapshot(ckpt: str | os.PathLike, step: int) -> Path:
    """The checkpoint of the same cached run at optimiser step ``step``: ``final.pt`` itself when that is the run's
    last step, else its ``step-<s>.pt`` snapshot (``train.snapshot_steps``), identical to a ``step``-step run."""
    from .train import read_checkpoint, snapshot_name

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


def evaluate(ckpt: str | os.PathLike, task: str, directions: Sequence[tuple[str, str]], seeds: Sequence[int], *,
             scale: str, data: str = "avdigits", protocol: str | None = None,
             cache_dir: str | os.PathLike | None = None, tags: dict | None = None, **options) -> list[dict]:
    """Cached :func:`downstream` runs of one checkpoint over directions x seeds, with the scale's head epochs.

    Each returned record gets ``metric`` (the task's reported number, :data:`TASK_METRIC`) and the ``tags``
    (e.g. ``{"method": "unicode", "pretrain_size": "24k"}``) as top-level fields for :func:`results_table`.
    """
    options.setdefault("epochs", budget(scale)["downstream_epochs"])
    out = []
    for train_m, test_m in directions:
        for seed in seeds:
            rec = downstream(task, ckpt, train_modality=train_m, test_modality=test_m, seed=seed, protocol=protocol,
                             data=data, cache_dir=cache_dir, scale=scale, **options)
            rec = dict(rec)
            rec["metric"] = float(rec["metrics"][TASK_METRIC[task]]) if task in TASK_METRIC else math.nan
            rec.update(tags or {})
            out.append(rec)
    return out


AV_DIRECTIONS = (("video", "audio"), ("audio", "video"))


def mean_metric(records: Iterable[dict], value: str = "metric", **where) -> float:
    """Mean of ``value`` over the records whose fields equal ``where`` (NaN when none match)."""
    vals = [float(field(r, value)) for r in records if all(field(r, k) == v for k, v in where.items())]
    return float(np.mean(vals)) if vals else math.nan


# ------------------------------------------------------------------------------------------------ tables

def field(record: dict, path: str) -> Any:
    """``record[a][b]`` for ``path="a.b"``; a KeyError names the missing part."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"record has no field {path!r} (missing {part!r}); top-level keys: {sorted(record)}")
        value = value[part]
    return value


def _as_list(names: str | Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def aggregate(records: Iterable[dict], rows: str | Sequence[str], cols: str | Sequence[str],
              value: str) -> "pd.DataFrame":
    """Mean, sample standard deviation (ddof=1; 0 for one seed) and count of ``value`` per (row, col) group.

    ``rows`` / ``cols`` / ``value`` are record field paths (``"method"``, ``"pretrain.model.codebook_size"``).
    Returns a long DataFrame with the row and col fields as columns plus ``mean``, ``std``, ``n``, groups in the
    order they first appear.
    """
    import pandas as pd

    row_keys, col_keys = _as_list(rows), _as_list(cols)
    groups: dict[tuple, list[float]] = {}
    for r in records:
        k = tuple(field(r, f) for f in row_keys + col_keys)
        groups.setdefault(k, []).append(float(field(r, value)))
    out = []
    for k, vals in groups.items():
        arr = np.asarray(vals, dtype=np.float64)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        out.append(dict(zip(row_keys + col_keys, k), mean=float(arr.mean()), std=std, n=int(arr.size)))
    return pd.DataFrame(out, columns=row_keys + col_keys + ["mean", "std", "n"])


def results_table(records: Iterable[dict], rows: str | Sequence[str] = "method",
                  cols: str | Sequence[str] = ("task", "direction"), value: str = "metric",
                  fmt: str = "{:.1f}", scale: float = 1.0) -> "pd.DataFrame":
    """A wide table of ``mean ± std`` strings over seeds (just the mean where one seed ran).

    ``scale`` multiplies values first (e.g. 100 to show fractions as percentages). The index is the ``rows``
    field(s), the columns the ``cols`` field(s) (a MultiIndex for several), both in first-appearance order.
    """
    import pandas as pd

    agg = aggregate(records, rows, cols, value)
    row_keys, col_keys = _as_list(rows), _as_list(cols)
    if agg.empty:
        return pd.DataFrame()

    def cell(mean, std, n):
        text = fmt.format(mean * scale)
        return text if n < 2 else f"{text} ± {fmt.format(std * scale)}"

    agg["cell"] = [cell(m, s, n) for m, s, n in zip(agg["mean"], agg["std"], agg["n"])]
    row_index = list(dict.fromkeys(agg[row_keys].itertuples(index=False, name=None)))
    col_index = list(dict.fromkeys(agg[col_keys].itertuples(index=False, name=None)))
    table = pd.DataFrame("–", index=range(len(row_index)), columns=range(len(col_index)), dtype=object)
    rpos = {k: i for i, k in enumerate(row_index)}
    cpos = {k: i for i, k in enumerate(col_index)}
    nr = len(row_keys)
    for rec, text in zip(agg[row_keys + col_keys].itertuples(index=False, name=None), agg["cell"]):
        table.iat[rpos[tuple(rec[:nr])], cpos[tuple(rec[nr:])]] = text
    table.index = (pd.Index([r[0] for r in row_index], name=row_keys[0]) if len(row_keys) == 1
                   else pd.MultiIndex.from_tuples(row_index, names=row_keys))
    table.columns = (pd.Index([c[0] for c in col_index], name=col_keys[0]) if len(col_keys) == 1
                     else pd.MultiIndex.from_tuples(col_index, names=col_keys))
    return table


# The paper's printed numbers (NeurIPS 2023 main text, Tables 1-5). Typed here once, only to show beside ours.
_DIRS = ("V→A", "A→V")
_TABLE1 = {  # method: 24K (AVE V→A, A→V, AVVP V→A, A→V), 40K (...), 81K (...)
    "baseline": (4.4, 5.9, 7.6, 8.4, 5.5, 5.4, 6.9, 8.7, 7.1, 9.3, 5.6, 7.2),
    "smit": (12.7, 16.9, 17.2, 22.8, 14.4, 15.9, 19.0, 22.3, 13.4, 17.0, 20.9, 22.8),
    "mst": (13.3, 19.0, 25.7, 29.1, 19.5, 23.1, 22.7, 24.5, 18.6, 20.5, 19.1, 24.8),
    "codis": (18.5, 22.0, 29.4, 33.7, 20.8, 26.4, 35.1, 37.9, 28.5, 30.2, 34.0, 37.8),
    "turn": (17.7, 21.0, 29.4, 32.4, 19.1, 24.3, 36.9, 39.3, 27.6, 31.4, 33.8, 38.1),
    "cmcm": (28.9, 35.9, 42.6, 50.4, 32.7, 36.8, 41.9, 45.1, 31.1, 34.0, 39.3, 44.8),
    "dcid+smit": (28.1, 32.3, 45.9, 49.2, 32.2, 34.0, 47.8, 53.0, 34.8, 37.6, 51.9, 53.5),
    "dcid+mst": (31.2, 35.0, 50.7, 52.1, 34.9, 37.8, 54.4, 59.1, 33.5, 35.4, 57.1, 59.2),
    "dcid+turn": (29.4, 35.3, 53.4, 56.0, 29.7, 36.9, 55.2, 58.2, 31.9, 36.8, 56.2, 60.9),
    "dcid+codis": (33.4, 36.0, 53.8, 60.2, 36.7, 41.0, 52.6, 62.0, 35.9, 40.1, 54.3, 59.0),
    "dcid+cmcm": (34.1, 38.8, 57.6, 60.8, 36.4, 42.9, 58.7, 62.8, 38.8, 41.4, 57.5, 60.5),
    "unicode": (44.0, 49.7, 61.9, 65.7, 47.7, 52.3, 64.0, 65.6, 41.2, 45.6, 60.5, 61.7),
}
_TABLE2 = {  # ablation: 24K (AVE V→A, A→V, AVVP V→A, A→V), 40K (...)
    "w/o CLUB": (34.9, 35.1, 50.6, 54.0, 37.2, 40.3, 52.9, 59.5),
    "w/o Cross-CPC": (4.6, 5.8, 10.9, 24.6, 5.2, 7.1, 12.3, 24.1),
    "w/o DCID": (29.8, 34.6, 30.4, 32.5, 35.2, 36.9, 32.3, 34.0),
    "w/o MM-EMA": (34.1, 38.8, 57.6, 60.8, 36.4, 42.9, 58.7, 62.8),
    "w/o reset": (37.8, 41.2, 59.1, 61.5, 38.9, 40.3, 55.4, 62.1),
    "w/o CMCM": (39.7, 42.6, 58.2, 62.1, 41.3, 46.0, 58.7, 62.8),
    "w/o MM-EMA, reset": (28.2, 30.9, 41.4, 49.2, 31.5, 33.8, 46.0, 48.3),
    "full": (44.0, 49.7, 61.9, 65.7, 47.7, 52.3, 64.0, 65.6),
}
_TABLE3 = {  # AVT 40K: AVE, AVVP, AVE→AVVP, UCF(v)↔VGG(a); each V→A, A→V
    "w/o CLUB": (50.2, 51.8, 62.4, 66.2, 50.1, 51.2, 9.87, 9.59),
    "w/o Cross-CPC": (43.8, 49.2, 59.3, 61.1, 45.5, 50.6, 60.6, 54.6),
    "w/o MM-EMA": (52.9, 49.9, 62.0, 67.3, 48.1, 46.8, 66.5, 60.5),
    "w/o MM-EMA, reset": (33.0, 35.5, 56.7, 61.2, 7.4, 12.6, 43.3, 35.2),
    "w/o reset": (50.8, 47.8, 56.4, 61.1, 47.9, 50.4, 60.0, 49.8),
    "w/o CMCM": (52.4, 54.5, 57.5, 72.9, 50.5, 48.7, 69.9, 59.7),
    "full": (54.1, 55.0, 63.4, 71.0, 53.0, 52.4, 67.1, 60.6),
    "labeled modality": (64.8, 65.8, 71.0, 72.9, math.nan, math.nan, 80.0, 85.4),
}
_TABLE4 = {  # AVS-S4 (AVT pre-training): A2T mIoU, F-score; T2A mIoU, F-score
    "baseline": (69.8, 81.4, 69.9, 81.3),
    "unicode": (78.0, 87.1, 77.7, 86.7),
    "SST (A2A)": (60.3, 80.1, math.nan, math.nan),
    "AVS (A2A)": (78.7, 87.9, math.nan, math.nan),
}
# Table 5, X-to-audio retrieval: "V2T" = retrieval head trained with video queries, tested with text queries
# (gallery = audio), "T2V" the reverse (cmg_lib.downstream.retrieval); our direction labels V→T and T→V.
_TABLE5 = {
    "baseline": (0.47, 1.03, 0.62, 0.85),
    "unicode": (10.3, 21.9, 8.47, 16.7),
}


def paper_table(name: str) -> "pd.DataFrame":
    """The paper's printed numbers for ``"table1"`` .. ``"table5"`` as a float DataFrame (NaN where blank).

    Index = our method names (``METHODS`` keys) or ablation names (``ABLATIONS`` keys); columns = the same
    (pretrain_size, task, direction) / (task, direction) / (direction, metric) tuples our records produce, so
    :func:`side_by_side` can align them with :func:`results_table` output.
    """
    import pandas as pd

    sizes = ("24k", "40k", "81k")
    if name == "table1":
        cols = [(s, t, d) for s in sizes for t in ("ave", "avvp") for d in _DIRS]
        data, names = _TABLE1, ["pretrain_size", "task", "direction"]
    elif name == "table2":
        cols = [(s, t, d) for s in sizes[:2] for t in ("ave", "avvp") for d in _DIRS]
        data, names = _TABLE2, ["pretrain_size", "task", "direction"]
    elif name == "table3":
        cols = [(t, d) for t in ("ave", "avvp", "ave_avvp", "ucf_vgg") for d in _DIRS]
        data, names = _TABLE3, ["task", "direction"]
    elif name == "table4":
        cols = [(d, m) for d in ("A→T", "T→A") for m in ("miou", "f_score")]
        data, names = _TABLE4, ["direction", "metric"]
    elif name == "table5":
        cols = [(d, m) for d in ("V→T", "T→V") for m in ("R@5", "R@10")]
        data, names = _TABLE5, ["direction", "metric"]
    else:
        raise ValueError(f"unknown paper table {name!r}; expected one of table1..table5")
    return pd.DataFrame([list(v) for v in data.values()], index=pd.Index(list(data), name="row"),
                        columns=pd.MultiIndex.from_tuples(cols, names=names), dtype=float)


def side_by_side(ours: "pd.DataFrame", paper: "pd.DataFrame", fmt: str = "{:.1f}") -> "pd.DataFrame":
    """Our table next to the paper's: for every column of ``ours`` an ``ours`` and a ``paper`` sub-column.

    Rows and columns are those of ``ours`` (the paper's values are looked up by the same labels; "–" where the
    paper has none). Paper values are formatted with ``fmt``.
    """
    import pandas as pd

    cols = list(ours.columns)
    ptab = paper.copy()
    if not isinstance(ptab.columns, pd.MultiIndex) and isinstance(ours.columns, pd.MultiIndex):
        raise ValueError("ours has MultiIndex columns but the paper table does not")
    ptab = ptab.reindex(index=ours.index, columns=ours.columns)
    out = {}
    for c in cols:
        key = c if isinstance(c, tuple) else (c,)
        out[key + ("ours",)] = ours[c].astype(object).tolist()
        out[key + ("paper",)] = ["–" if (v is None or (isinstance(v, float) and math.isnan(v))) else fmt.format(v)
                                 for v in ptab[c].tolist()]
    names = (list(ours.columns.names) if isinstance(ours.columns, pd.MultiIndex) else [ours.columns.name]) + [""]
    frame = pd.DataFrame(out, index=ours.index)
    frame.columns = pd.MultiIndex.from_tuples(list(out), names=names)
    return frame


def claims_markdown(claims: Iterable[tuple[str, bool, str]]) -> str:
    """A markdown list of the paper's claims with a computed verdict: ``(claim, holds, evidence)`` per item."""
    lines = []
    for claim, holds, evidence in claims:
        verdict = "**holds**" if holds else "**does not hold**"
        lines.append(f"- {claim}: {verdict} on this data ({evidence}).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ code usage

def code_usage(model, dataset, modalities: Sequence[str] | None = None, batch_size: int = 128,
               label_key: str = "label") -> dict[Any, dict[str, np.ndarray]]:
    """Per-class code-usage counts: ``{class | "all": {modality: counts (L,)}}`` from ``model.quantize``.

    Runs the frozen encoder over ``dataset`` (items are batch dicts, see ``cmg_lib.data.schema``) and counts, per
    clip class, how often each modality's segments pick each code (``np.bincount``, vectorised per batch). The
    explorer (``cmg_lib.viz.explorer``) and the Fig. 4 code maps take this structure.
    """
    import torch
    from torch.utils.data import DataLoader

    mods = list(modalities or model.config.model.modality_names)
    size = int(model.config.model.codebook_size)
    counts: dict[Any, dict[str, np.ndarray]] = {"all": {m: np.zeros(size, dtype=np.int64) for m in mods}}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            labels = batch[label_key].numpy() if label_key in batch else None
            for m in mods:
                idx = model.quantize(batch[m].to(device), m)[0].cpu().numpy()      # (B, T)
                counts["all"][m] += np.bincount(idx.ravel(), minlength=size)
                if labels is None:
                    continue
                # one bincount over (class, code) pairs: class c, code k -> c * size + k
                classes = np.repeat(labels, idx.shape[1])
                uniq = np.unique(labels)
                for c in uniq.tolist():
                    counts.setdefault(int(c), {mm: np.zeros(size, dtype=np.int64) for mm in mods})
                flat = np.bincount(classes * size + idx.ravel(), minlength=(int(uniq.max()) + 1) * size)
                flat = flat.reshape(-1, size)
                for c in uniq.tolist():
                    counts[int(c)][m] += flat[c]
    model.train(was_training)
    return counts
