"""Shared data plumbing: the Dataset over dicts of arrays, collate, whole-split tensors, array hashing (the cache
folder and atomic writes are ``cmg_lib.storage``'s).

Items follow the batch contract of ``schema.py``: ``dict[str, Tensor]``, floats as float32, integer labels as int64.
A dataset is backed by a ``gather(rows) -> dict[str, ndarray]`` function that materialises any set of rows at once
(vectorised), so single items, batches and whole splits come from the same code.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset


def hash_arrays(arrays: Mapping[str, np.ndarray], digest=None):
    """sha256 over names, dtypes, shapes and bytes of ``arrays`` in sorted-name order (returns the hash object)."""
    digest = digest or hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest


def to_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy -> torch per the batch contract: floating arrays become float32, integer/bool arrays int64."""
    out = {}
    for key, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind == "f":
            out[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        elif arr.dtype.kind in "iub":
            out[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))
        else:
            raise ValueError(f"array {key!r} has dtype {arr.dtype}; expected a numeric dtype")
    return out


class ArrayDataset(Dataset):
    """A split whose rows are materialised by ``gather(rows)`` into a dict of arrays with a leading row axis.

    Attributes (the ``load_dataset`` contract): ``name``, ``modalities``, ``feature_shapes``, ``num_classes``,
    ``class_names``; extra keyword attributes (``subset``, ``split``, ...) are stored as given.
    """

    def __init__(self, length: int, gather: Callable[[np.ndarray], dict[str, np.ndarray]], *, name: str,
                 modalities: tuple[str, ...], feature_shapes: dict[str, tuple[int, ...]], num_classes: int,
                 class_names: list[str], **extra):
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self._length = int(length)
        self._gather = gather
        self.name = name
        self.modalities = tuple(modalities)
        self.feature_shapes = {k: tuple(v) for k, v in feature_shapes.items()}
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        for key, value in extra.items():
            setattr(self, key, value)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], **attributes) -> "ArrayDataset":
        """A dataset over plain arrays that all share their first axis (rows)."""
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"arrays must share their first axis; got lengths {lengths}")
        n = next(iter(lengths.values()), 0)
        stored = dict(arrays)
        return cls(n, lambda rows: {k: v[rows] for k, v in stored.items()}, **attributes)

    def __len__(self) -> int:
        return self._length

    def rows(self, rows) -> dict[str, np.ndarray]:
        """Materialise several rows at once (numpy, leading row axis)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < -self._length or rows.max() >= self._length):
            raise IndexError(f"row index out of range for a split of {self._length} rows")
        rows = np.where(rows < 0, rows + self._length, rows)
        return self._gather(rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.rows([int(i)])
        return {k: v[0] for k, v in to_tensors(batch).items()}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Batched fetch used by ``DataLoader``: one vectorised gather for the whole batch."""
        batch = to_tensors(self.rows(indices))
        return [{k: v[j] for k, v in batch.items()} for j in range(len(indices))]

    def __repr__(self) -> str:
        return (f"ArrayDataset(name={self.name!r}, rows={self._length}, modalities={self.modalities}, "
                f"num_classes={self.num_classes})")


def collate(items: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of item dicts into a batch dict (every item must have the same keys)."""
    if not items:
        raise ValueError("cannot collate an empty list of items")
    keys = set(items[0])
    for j, item in enumerate(items):
        if set(item) != keys:
            raise ValueError(f"item {j} has keys {sorted(item)}, expected {sorted(keys)}")
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def as_tensors(dataset: Dataset, chunk: int = 1024) -> dict[str, torch.Tensor]:
    """The whole split as a dict of stacked tensors (for heads trained fully in memory)."""
    n = len(dataset)
    if isinstance(dataset, ArrayDataset):
        parts = [to_tensors(dataset.rows(np.arange(s, min(n, s + chunk)))) for s in range(0, n, chunk)]
        if not parts:
            raise ValueError("the dataset is empty")
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return collate([dataset[i] for i in range(n)])


SHARED_TABLES = 6          # whole splits kept per process by split_tensors (AV-Digits: at most ~0.2 GB each)
_TABLES: "OrderedDict[tuple, dict[str, torch.Tensor]]" = OrderedDict()


def split_tensors(dataset: Dataset) -> dict[str, torch.Tensor]:
    """The whole split as stacked tensors (:func:`as_tensors`), materialised once per dataset object and kept on
    it; a split that names its content (``table_identity``: an AV-Digits split's build hash, name and length) is
    also shared by every dataset object of that split in this process (the last ``SHARED_TABLES`` splits), so a
    notebook that loads the same split for every checkpoint materialises it once. Callers must not modify the
    tensors."""
    tables = getattr(dataset, "_split_tables", None)
    if tables is not None:
        return tables
    identity = getattr(dataset, "table_identity", None)
    if identity is not None and identity in _TABLES:
        _TABLES.move_to_end(identity)
        tables = _TABLES[identity]
    else:
        tables = as_tensors(dataset)
        if identity is not None:
            _TABLES[identity] = tables
            while len(_TABLES) > SHARED_TABLES:
                _TABLES.popitem(last=False)
    dataset._split_tables = tables
    return tables
