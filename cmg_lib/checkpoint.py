"""The checkpoint format (architecture contract "Checkpoint"): what a ``.pt`` holds, how it is written and read.

One ``.pt`` per save, written atomically (``storage.atomic_torch_save``)::

    {"format": "cmg-checkpoint/1", "config": dict, "step": int, "epoch": int, "model": state_dict,
     "optimizers": {"main", "scheduler"[, "club"]}, "rng": {...}, "metrics": dict, "version": str,
     "position": {"epoch", "batch"}, "history": [...], "monitor": {...}, "data": {...}, "digest": str}

``data`` (:func:`data_identity`) says what the model was trained on, so downstream runs default to the same build
and refuse another (absent in older files, which load as before). ``digest`` (:func:`content_digest`, a sha256 of
every other value, tensors by their bytes) is checked on every read: a changed byte in a tensor or a value is a
:class:`CheckpointError` naming the file (files written before it have none and load as before). ``position``,
``history`` and ``monitor`` let ``pretrain(resume=...)`` continue exactly (data position, the logged history and
the open logging window). :func:`load_checkpoint` rebuilds the model from the stored config alone. Files are read with
``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain containers, never code.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import shutil
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, TrainConfig
from .model import UniCode, build_model
from .storage import NotWritableError, atomic_torch_save

CHECKPOINT_FORMAT = "cmg-checkpoint/1"
REQUIRED_KEYS = ("format", "config", "step", "epoch", "model", "optimizers", "rng", "metrics", "version")


class CheckpointError(ValueError):
    """A file that is not a readable cmg checkpoint; the message names the file and what is wrong."""


def snapshot_name(step: int) -> str:
    """File name of the checkpoint saved at optimiser step ``step`` (``ckpt_every`` / ``snapshot_steps``)."""
    return f"step-{int(step):07d}.pt"


def snapshot_step(path: str | os.PathLike) -> int | None:
    """The step of a :func:`snapshot_name` file (``step-0000075.pt`` -> 75), None for any other name."""
    match = re.fullmatch(r"step-(\d+)\.pt", Path(path).name)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------------- RNG state
def rng_state(loader: torch.Generator | torch.Tensor) -> dict:
    """Python, NumPy, torch (and CUDA) generator states plus the data loader's (its generator, or the state to
    store for it), as tensors and plain values."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state(),
             "loader": loader.get_state() if isinstance(loader, torch.Generator) else loader.clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    """Restore what :func:`rng_state` stored."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------- data identity
IDENTITY_KEYS = ("scale", "seed", "hash")       # compared between a checkpoint's data and other data


def data_identity(config: Config, dataset: Any) -> dict:
    """What a model is trained on: ``source`` and ``pretrain_size`` from the config; ``name``, ``scale``, ``seed``
    and the content ``hash`` from the dataset where it carries them (AV-Digits: ``scale``, ``seed``,
    ``manifest_hash``), else None."""
    def plain(value):
        return value if value is None or isinstance(value, (str, int)) else str(value)

    return {"source": str(config.data.source), "pretrain_size": str(config.data.pretrain_size),
            "name": plain(getattr(dataset, "name", None)), "scale": plain(getattr(dataset, "scale", None)),
            "seed": plain(getattr(dataset, "seed", None)), "hash": plain(getattr(dataset, "manifest_hash", None))}


def data_mismatch(stored: dict | None, actual: dict) -> list[str]:
    """``"<key> (<stored> -> <actual>)"`` for each of :data:`IDENTITY_KEYS` known on both sides that differs."""
    stored = stored or {}
    return [f"{k} ({stored[k]!r} -> {actual[k]!r})" for k in IDENTITY_KEYS
            if stored.get(k) is not None and actual.get(k) is not None and stored[k] != actual[k]]


# ---------------------------------------------------------------------------------------------------- integrity
DIGEST_KEY = "digest"
ZIP_MAGIC = b"PK\x03\x04"           # torch.save's archive (the only format this library writes)


def content_digest(state: dict) -> str:
    """``"sha256:<hex>"`` of every value of ``state`` but :data:`DIGEST_KEY`: tensors by dtype, shape and bytes,
    other values by type and ``repr``, dict keys in sorted order, so the same content always gives the same
    digest, before and after a ``torch.save`` / ``torch.load`` round trip."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, dict):
            h.update(f"D{len(value)}:".encode())
            for key in sorted(value, key=repr):
                feed(key)
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            h.update(f"{type(value).__name__}{len(value)}:".encode())
            for item in value:
                feed(item)
        else:
            h.update(f"{type(value).__name__}:{value!r};".encode())

    feed({k: v for k, v in state.items() if k != DIGEST_KEY})
    return f"sha256:{h.hexdigest()}"


def seal(state: dict) -> dict:
    """``state`` with its :func:`content_digest` stored under :data:`DIGEST_KEY` (what :func:`save_checkpoint`
    writes; a deliberately edited checkpoint must be sealed again to load)."""
    return {**state, DIGEST_KEY: content_digest(state)}


def check_digest(ckpt: dict, path: str | os.PathLike) -> None:
    """A :class:`CheckpointError` naming ``path`` when the stored digest does not match the content (none: a file
    older than the digest, accepted)."""
    stored = ckpt.get(DIGEST_KEY)
    if stored is not None and stored != content_digest(ckpt):
        raise CheckpointError(f"checkpoint {path} is damaged: its content does not match the digest stored in it "
                              f"({str(stored)[:19]}...); it changed after it was written (a flipped bit, a bad "
                              "copy or an edit): use another copy or train it again")


class _ValuePickler(pickle.Pickler):
    """A pickler without a memo (``fast`` mode): its bytes depend on the values only, not on which equal strings or
    tuples happen to be one object. A resumed run holds strings unpickled from its checkpoint where the original
    holds Python's interned literals; with a memo the two pickle the same state to different bytes."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fast = True


VALUE_PICKLE = types.ModuleType("cmg_value_pickle")      # torch.save(pickle_module=...) needs only ``Pickler``
VALUE_PICKLE.Pickler = _ValuePickler


# ---------------------------------------------------------------------------------------------------- write / read
def save_checkpoint(path: str | os.PathLike, *, config: Config, model: UniCode, step: int, epoch: int,
                    optimizers: dict, loader_gen: torch.Generator | torch.Tensor, **extra: Any) -> Path:
    """Write one checkpoint atomically; ``extra`` adds keys such as ``position``, ``history``, ``monitor``;
    ``loader_gen``: the data loader's generator or the state to store for it (:func:`rng_state`)."""
    from . import __version__                 # the package's version; cmg_lib/__init__ imports nothing eagerly
    history = extra.get("history") or []
    state = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "step": int(step), "epoch": int(epoch),
             "model": model.state_dict(), "optimizers": optimizers, "rng": rng_state(loader_gen),
             "metrics": history[-1] if history else {}, "version": __version__, **extra}
    return atomic_torch_save(seal(state), path, pickle_module=VALUE_PICKLE)


def checkpoint_bytes(model: UniCode, *optimizers: torch.optim.Optimizer | None) -> int:
    """Bytes of one checkpoint, before the first step: the model's state, Adam's two moments and step per trained
    parameter, and 1 MiB for the rest (config, history, RNG states, archive overhead)."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = [p for opt in optimizers if opt is not None for group in opt.param_groups for p in group["params"]]
    return state + sum(2 * p.numel() * p.element_size() + 8 for p in params) + 2 ** 20


def planned_checkpoints(tc: TrainConfig, start: int, total: int, per_epoch: int) -> list[str]:
    """Names of the checkpoints a run from step ``start`` to ``total`` writes (``train`` settings ``tc``)."""
    names = ["final.pt"]
    for s in range(start + 1, total + 1):
        if tc.epoch_ckpts and s % per_epoch == 0:
            names.append(f"epoch-{s // per_epoch - 1}.pt")
        if (tc.ckpt_every and s % tc.ckpt_every == 0) or s in tc.snapshot_steps:
            names.append(snapshot_name(s))
    return sorted(set(names))


def check_space(out_dir: Path, per_file: int, names: list[str]) -> None:
    """A ``storage.NotWritableError`` before any step when ``out_dir``'s device has less free space than the
    checkpoints ``names`` (``per_file`` bytes each; one more while a file is replaced) need."""
    new = [n for n in names if not (out_dir / n).exists()]
    need = per_file * (len(new) + (len(new) < len(names)))
    free = shutil.disk_usage(out_dir).free
    if free < need:
        mib = 2 ** 20
        raise NotWritableError(f"not enough free space in {out_dir} for this run's checkpoints: {len(names)} files "
                               f"of about {per_file / mib:.1f} MiB need {need / mib:.1f} MiB, {free / mib:.1f} MiB "
                               "are free; free space, write fewer (train.ckpt_every, train.snapshot_steps, "
                               "train.epoch_ckpts) or choose another --out")



def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict after checking that it is one: a :class:`CheckpointError` (one line naming the file)
    for a truncated, empty, foreign (not a torch archive, e.g. a text file) or code-carrying file, a wrong format
    tag, a missing key or content that no longer matches its digest (:func:`check_digest`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a write that never finished?")
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a cmg checkpoint: it starts with {head!r}, expected a torch.save "
                              f"archive (a zip file, {ZIP_MAGIC!r})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()
        detail = next((line.strip() for line in reason if "GLOBAL" in line or "Unsupported" in line), reason[0])
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain containers, refused "
                              f"unread ({detail[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError, TypeError, IndexError,
            AttributeError) as err:                 # what a damaged archive or pickle stream can raise
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or corrupt: "
                              f"{first[:160]})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a cmg checkpoint (expected a dict, got {type(ckpt).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks key(s) {missing}; a {CHECKPOINT_FORMAT} file has "
                              f"{list(REQUIRED_KEYS)}")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {ckpt['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    check_digest(ckpt, path)
    return ckpt


def checkpoint_config(ckpt: dict, path: str | os.PathLike) -> Config:
    """The stored config as a ``Config``; a :class:`CheckpointError` names the file for an invalid one."""
    try:
        return Config.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} has an invalid config: {err}") from None


def load_model_state(model: UniCode, state: dict, path: str | os.PathLike) -> None:
    """``model.load_state_dict(state)`` with one-line errors naming ``path`` for missing, unexpected or
    mis-shaped entries."""
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise CheckpointError(f"checkpoint {path} does not match its config's model: shapes differ for "
                              f"{wrong[:3]} (stored vs expected)")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"checkpoint {path} does not match its config's model: missing "
                              f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UniCode:
    """Rebuild the model from the stored config alone; eval mode, with ``.config``, ``.step``, ``.metrics`` and
    ``.data_identity`` (the stored ``data`` dict, or None for a checkpoint older than it)."""
    ckpt = read_checkpoint(path, map_location)
    model = build_model(checkpoint_config(ckpt, path)).to(map_location)
    load_model_state(model, ckpt["model"], path)
    model.step, model.metrics = int(ckpt["step"]), dict(ckpt["metrics"])
    model.data_identity = dict(ckpt["data"]) if isinstance(ckpt.get("data"), dict) else None
    return model.eval()
