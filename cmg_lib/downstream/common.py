"""What every downstream task shares: split loading, frozen-code extraction (once per split), the head-training loop
and the two evaluation protocols.

Frozen encoder (paper Sec. 4.4). The codes of each needed split are computed ONCE, in eval mode, without gradients,
in batches; only the head is trained, on those in-memory codes. The released scripts instead put the frozen encoder
in *train* mode while training the head, so its transformer dropout (p = 0.1) makes the training codes stochastic
(book/differences.md#avs-protocol). That cannot be reproduced with precomputed codes and is skipped under both
protocols.

Protocols (``PROTOCOLS``):

* ``"heldout"`` (default): train on the training split, choose the epoch on the validation split where the subset
  has one (scored in the *training* modality, so no label of the unseen modality is used), report the test split;
  without a validation split the last epoch is reported.
* ``"released"``: the released scripts' choices where they differ: the epoch with the best *test* number is reported
  (AVVP: precision, AVE->AVVP: F1, AVE/UCF: accuracy); AVE and AVVP evaluate on the training clips themselves
  (the other modality's codes and labels of the same clips, ``ave.py:135``, ``avvp.py:83-120``); AVS picks the
  epoch on the validation split scored in the *test* modality.
"""
from __future__ import annotations

import copy
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..data import load_dataset
from ..data.common import split_tensors
from .metrics import clip_labels_from_segments

from ..data.schema import segment_key

PROTOCOLS = ("heldout", "released")
CACHE_SIZE = 16
_STORE_CACHE: "OrderedDict[tuple, dict[str, Tensor]]" = OrderedDict()


def clear_code_cache() -> None:
    """Forget every cached split (frozen codes and labels) of earlier runs in this process."""
    _STORE_CACHE.clear()


def model_fingerprint(model: nn.Module) -> tuple:
    """Identity + parameter sums of a model: a cached split is reused only for the same, unchanged weights."""
    sums = tuple(round(float(t.detach().double().sum()), 8) for t in model.state_dict().values()
                 if torch.is_tensor(t) and t.is_floating_point())
    return (id(model), sums)


@dataclass
class Context:
    """Inputs shared by every task function (built by ``run_task``)."""

    model: nn.Module
    data: Any                       # "avdigits", a folder, or a mapping split -> Dataset
    scale: str = "default"
    seed: int = 0
    protocol: str = "heldout"
    progress: bool = True
    data_seed: int | None = None
    extract_batch_size: int = 256
    code_cache: bool = True
    paths: dict | None = None       # official layout overrides (load_dataset's paths=)
    trained_on: dict | None = None  # the checkpoint's data identity (checkpoint.data_identity), checked per split
    allow_data_mismatch: bool = False
    notes: list[str] = field(default_factory=list)
    code_dims: tuple[int, ...] | None = None   # TOC (``toc.py``): the code dimensions the heads read; None: all

    def cache_key(self) -> tuple | None:
        """Key of this (model, data) pair for the in-process split cache; None (no caching) for in-memory data."""
        if not self.code_cache or not isinstance(self.data, str):
            return None
        return (model_fingerprint(self.model), self.data, self.scale, self.data_seed, self.code_dims)

    @property
    def dim(self) -> int:
        """The width of the code vectors the heads read (TOC's kept dimensions, else the model's)."""
        return len(self.code_dims) if self.code_dims is not None else int(self.model.config.model.hidden_dim)

    @property
    def segments(self) -> int:
        return int(self.model.config.model.segments)


@dataclass
class TaskOutcome:
    metrics: dict[str, float]
    best_epoch: int
    n_train: int
    n_test: int
    settings: dict[str, Any]
    history: list[dict[str, Any]]
    head: nn.Module | None = None


def load_split(ctx: Context, subset: str, split: str) -> Dataset:
    """One split of a subset: ``load_dataset(data, subset, split, scale=...)`` for a name or folder, or
    ``data[split]`` / ``data["subset/split"]`` for an in-memory mapping. Raises ValueError when it is missing or empty."""
    if isinstance(ctx.data, Mapping):
        for key in (f"{subset}/{split}", split):
            if key in ctx.data:
                dataset = ctx.data[key]
                break
        else:
            raise ValueError(f"the data mapping has no split {split!r} of subset {subset!r}; "
                             f"expected a key {split!r} or {subset + '/' + split!r}, got {sorted(ctx.data)}")
    else:
        kwargs = {"scale": ctx.scale}
        if ctx.data_seed is not None:
            kwargs["seed"] = ctx.data_seed
        if ctx.paths:
            kwargs["paths"] = dict(ctx.paths)
        dataset = load_dataset(ctx.data, subset, split, **kwargs)
        if _same_kind(ctx.trained_on, ctx.data):           # (an official folder's hash is read only for this)
            check_data(ctx, f"{subset}/{split}", {"hash": getattr(dataset, "manifest_hash", None)})
    if len(dataset) == 0:
        raise ValueError(f"split {split!r} of subset {subset!r} is empty; the task needs at least one clip")
    return dataset


def _same_kind(trained_on: dict | None, data: Any) -> bool:
    """Whether the checkpoint's pre-training data and the downstream ``data`` are both AV-Digits or both official
    folders (an in-memory mapping, or a checkpoint without a data identity, is never checked)."""
    if not trained_on or not isinstance(data, (str, os.PathLike)):
        return False
    return (trained_on.get("source") == "avdigits") == (str(data) == "avdigits")


def check_data(ctx: Context, what: str, actual: dict) -> None:
    """Refuse (ValueError) downstream data whose identity (``scale``, ``seed``, content ``hash``) differs from the
    checkpoint's pre-training data, when both are AV-Digits builds or both official-data folders (their content
    hash, ``official.content``); with ``allow_data_mismatch`` note it instead."""
    if not _same_kind(ctx.trained_on, ctx.data):
        return
    stored = ctx.trained_on
    from ..checkpoint import data_mismatch

    differ = data_mismatch(stored, {"scale": None, "seed": None, "hash": None, **actual})
    if not differ:
        return
    message = (f"{what}: downstream data differs from the checkpoint's pre-training data in {', '.join(differ)} "
               "(checkpoint -> here)")
    if not ctx.allow_data_mismatch:
        raise ValueError(f"{message}; use the checkpoint's scale and data seed (the defaults) or pass "
                         "allow_data_mismatch=True (--allow-data-mismatch)")
    if message not in ctx.notes:
        ctx.notes.append(message)


def _fit_segments(x: Tensor, segments: int) -> Tensor:
    """Tile a query shorter than the model's T along time (released AVS audio: 5 -> 10 by ``repeat(1, 2, 1)``)."""
    if x.shape[1] >= segments:
        return x
    reps = -(-segments // x.shape[1])
    return x.repeat(1, reps, *([1] * (x.dim() - 2)))[:, :segments]


def model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def extract(ctx: Context, dataset: Dataset, code_modalities: tuple[str, ...], keys: tuple[str, ...],
            where: str, reduce: Mapping[str, Callable[[Tensor], Tensor]] | None = None,
            tag: str = "") -> dict[str, Tensor]:
    """One pass over ``dataset``: the frozen code vectors ``codes/<modality>`` ``(N, T, D)`` of each modality in
    ``code_modalities`` (eval mode, no grad, batched) and the stacked tensors of ``keys`` (kept on the CPU), each
    batch of a key passed through ``reduce[key]`` first when given (e.g. downsampling AVS frames; ``tag`` names the
    reduction's settings).

    For named data (``"avdigits"`` or a folder) the result is cached in this process (``CACHE_SIZE`` splits, keyed
    by the model's identity and weights, the data, the split and these arguments), so further seeds, directions and
    protocols of the same checkpoint skip the data loading and encoding; ``code_cache=False`` turns it off."""
    reduce = reduce or {}
    base = ctx.cache_key()
    if base is not None:
        rows = tuple(dataset.indices) if isinstance(dataset, Subset) else len(dataset)
        key = (base, where, code_modalities, keys, tag, hash(rows))
        if key in _STORE_CACHE:
            _STORE_CACHE.move_to_end(key)
            return dict(_STORE_CACHE[key])
    store = _extract(ctx, dataset, code_modalities, keys, where, reduce)
    if base is not None:
        _STORE_CACHE[key] = store
        while len(_STORE_CACHE) > CACHE_SIZE:
            _STORE_CACHE.popitem(last=False)
        store = dict(store)
    return store


def _extract(ctx: Context, dataset: Dataset, code_modalities: tuple[str, ...], keys: tuple[str, ...], where: str,
             reduce: Mapping[str, Callable[[Tensor], Tensor]]) -> dict[str, Tensor]:
    first = dataset[0]
    needed = tuple(dict.fromkeys(code_modalities + keys))
    missing = [k for k in needed if k not in first]
    if missing:
        raise ValueError(f"{where} lacks the keys {missing}; the task needs {list(needed)} (has {sorted(first)})")
    model, device = ctx.model, model_device(ctx.model)
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {f"codes/{m}": [] for m in code_modalities}
    parts.update({k: [] for k in keys})
    try:
        with torch.no_grad():
            for batch in tqdm(_batches(dataset, needed, ctx.extract_batch_size, "frames" in first),
                              desc=f"codes {where}", disable=not ctx.progress, leave=False):
                for m in code_modalities:
                    x = _fit_segments(batch[m].float(), ctx.segments).to(device)
                    vectors = model.quantize(x, m)[1]
                    if ctx.code_dims is not None:                  # TOC: only the kept dimensions
                        vectors = vectors[..., list(ctx.code_dims)]
                    parts[f"codes/{m}"].append(vectors.float().cpu())
                for k in keys:
                    parts[k].append(reduce[k](batch[k]) if k in reduce else batch[k])
    finally:
        model.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}


def _batches(dataset: Dataset, keys: tuple[str, ...], size: int, renders: bool):
    """The split in order, ``size`` clips a batch, with ``keys``: sliced from its shared whole-split tensors
    (``data.common.split_tensors``) when the split names its content (an AV-Digits split, or a ``Subset`` of one)
    and renders no frames, so every checkpoint of a notebook reads the same materialised split; else through a
    ``DataLoader``. Both give the same batches."""
    base, rows = (dataset.dataset, dataset.indices) if isinstance(dataset, Subset) else (dataset, None)
    if renders or getattr(base, "table_identity", None) is None:
        yield from DataLoader(dataset, batch_size=size, shuffle=False)
        return
    tables = split_tensors(base)
    if rows is not None:
        tables = {k: tables[k][torch.as_tensor(rows, dtype=torch.long)] for k in keys}
    for start in range(0, len(dataset), size):
        yield {k: tables[k][start:start + size] for k in keys}


def clip_targets(store: dict[str, Tensor], modality: str) -> Tensor:
    """Clip class ids: the ``label`` key when present, else derived from the segment labels as released."""
    if "label" in store:
        return store["label"].long()
    return clip_labels_from_segments(store[segment_key(modality)])


def check_modalities(ctx: Context, task: str, *modalities: str) -> None:
    names = tuple(getattr(ctx.model, "modalities", None) or ctx.model.config.model.modality_names)
    for m in modalities:
        if m not in names:
            raise ValueError(f"task {task!r} needs codes of modality {m!r}, but the checkpoint was pre-trained on "
                             f"{names}; choose modalities from {names}")


def resolve_settings(task: str, defaults: dict[str, Any], epochs: int | None,
                     options: dict[str, Any]) -> dict[str, Any]:
    """Task defaults overridden by ``epochs`` and ``options``; an unknown option raises a ValueError listing them."""
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} for task {task!r}; expected some of {sorted(defaults)}")
    settings = {**defaults, **options}
    if epochs is not None:
        settings["epochs"] = int(epochs)
    if settings["epochs"] < 1:
        raise ValueError(f"epochs must be >= 1, got {settings['epochs']}")
    return settings


def fit(trainable: nn.Module, loss_on: Callable[[Tensor], Tensor], n_train: int,
        evaluate: Callable[[], dict[str, dict[str, float]]], settings: dict[str, Any], seed: int,
        select: tuple[str, str] | None, progress: bool, desc: str) -> tuple[int, list[dict[str, Any]], dict]:
    """Train ``trainable`` (head [+ loss parameters]) with the released recipe: Adam(lr), MultiStepLR(milestones,
    gamma) stepped per epoch, ``clip_grad_norm_(grad_clip)`` (skipped when None or 0), shuffled mini-batches of
    clip indices (a last batch smaller than ``settings["min_batch"]``, default 1, is skipped).

    ``loss_on(indices)`` returns the loss of those training clips; ``evaluate()`` returns ``{split: {metric: value}}``
    after every epoch. The reported epoch maximises ``history[e][select[0]][select[1]]`` (the first on ties), or is the
    last one when ``select`` is None. Returns (best epoch, 1-based; per-epoch history; the state dict at that epoch).
    """
    generator = torch.Generator().manual_seed(seed)
    # foreach: one multi-tensor kernel per update instead of a Python loop over parameters (the same arithmetic);
    # heads take thousands of small steps, where the per-parameter loop cost ~10 % of an AVS run (measured)
    optimizer = torch.optim.Adam(trainable.parameters(), lr=settings["lr"], foreach=True)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(settings["milestones"]), settings["gamma"])
    history: list[dict[str, Any]] = []
    best_epoch, best_score, best_state = 0, float("-inf"), None
    bar = tqdm(range(1, settings["epochs"] + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        trainable.train()
        order = torch.randperm(n_train, generator=generator)
        total, steps = 0.0, 0
        for start in range(0, n_train, settings["batch_size"]):
            batch = order[start:start + settings["batch_size"]]
            if len(batch) < settings.get("min_batch", 1):
                continue
            loss = loss_on(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings["grad_clip"]:
                nn.utils.clip_grad_norm_(trainable.parameters(), settings["grad_clip"])
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        scheduler.step()
        trainable.eval()
        with torch.no_grad():
            scores = evaluate()
        history.append({"epoch": epoch, "loss": total / max(steps, 1), **scores})
        score = scores[select[0]][select[1]] if select else float(epoch)
        if score > best_score:
            best_epoch, best_score = epoch, score
            best_state = copy.deepcopy(trainable.state_dict())
        if progress:
            bar.set_postfix(loss=f"{total / max(steps, 1):.3f}")
    return best_epoch, history, best_state


def percent(metrics: dict[str, float]) -> dict[str, float]:
    """Metric fractions -> percent, rounded to 4 decimals (the paper's tables are in %)."""
    return {k: round(100.0 * v, 4) for k, v in metrics.items()}
