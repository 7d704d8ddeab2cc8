"""Data for Uni-Code: the embedded AV-Digits dataset or the official released features, behind one loader.

``load_dataset(data, subset, split, ...)`` returns a ``torch.utils.data.Dataset`` of ``dict[str, Tensor]`` items
(``schema.py``) with attributes ``name``, ``modalities``, ``feature_shapes``, ``num_classes``, ``class_names``.
``as_tensors(dataset)`` stacks a whole split; ``collate`` stacks a list of items.
"""
from __future__ import annotations

import os

from .common import ArrayDataset, as_tensors, collate

__all__ = ["load_dataset", "as_tensors", "collate", "ArrayDataset"]


def load_dataset(data: str = "avdigits", subset: str = "pretrain", split: str = "40k", scale: str = "default",
                 seed: int = 0, cache_dir=None, paths=None):
    """Load one split: ``data="avdigits"`` (built offline on first use) or a folder of official features.

    ``scale`` and ``seed`` select the AV-Digits build (smoke | default | full); they are ignored for official data.
    ``paths`` overrides entries of the official layout (``official.LAYOUT``; book/official_data.md); it is an error
    for AV-Digits.
    """
    if paths and data == "avdigits":
        raise ValueError(f"paths= overrides the official data layout; AV-Digits has none (got {sorted(paths)})")
    if data == "avdigits":
        from .avdigits import load

        return load(subset, split, scale=scale, seed=seed, cache_dir=cache_dir)
    if isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        from .official import load_official

        return load_official(data, subset, split, paths=paths)
    raise ValueError(f"data must be 'avdigits' or an existing folder of official features, got {data!r}")
