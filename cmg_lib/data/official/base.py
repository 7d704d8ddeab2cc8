"""The Dataset behind every official-format reader: ``common.ArrayDataset`` fed by per-row file reads.

Items follow ``schema.py`` (float32 features and labels, int64 ``label`` and ``index``); ``ArrayDataset`` does the
tensor conversion, batched ``__getitems__`` and ``as_tensors`` support.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..common import ArrayDataset
from ..schema import SEGMENTS
from .files import fit_rows, read_feature_zip


class OfficialDataset(ArrayDataset):
    """Base class: subclasses implement ``_read(i) -> dict[str, np.ndarray | int]`` for row ``i`` of the split.

    Rows are read lazily from the files when gathered (one file read per row); ``preload()`` reads every row once,
    stacks them in memory (all files closed afterwards) and serves later gathers by plain indexing. Attributes (the
    ``load_dataset`` contract): ``name``, ``modalities``, ``feature_shapes``, ``num_classes``, ``class_names``, and
    ``manifest_hash``, the folder's content hash, as an AV-Digits split has its build's.
    """

    def __init__(self, *, name: str, modalities: Sequence[str], feature_shapes: dict[str, tuple[int, ...]],
                 class_names: Sequence[str], length: int):
        modalities = tuple(modalities)
        super().__init__(int(length), self._gather_rows, name=name, modalities=modalities,
                         feature_shapes={m: tuple(feature_shapes[m]) for m in modalities},
                         num_classes=len(class_names), class_names=list(class_names))
        self._preloaded: dict[str, np.ndarray] | None = None
        self.data_paths = None                    # the Paths it was read from (load_official sets them)
        self._content_hash: str | None = None

    @property
    def manifest_hash(self) -> str | None:
        """The content hash of the official folder this split was read from (``content.content_hash``), computed
        on first use (``checkpoint.data_identity``, the downstream data check); None without ``data_paths``."""
        if self._content_hash is None and self.data_paths is not None:
            from .content import content_hash

            self._content_hash = content_hash(self.data_paths)
        return self._content_hash

    def _read(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def _gather_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        if self._preloaded is not None:
            return {k: v[rows] for k, v in self._preloaded.items()}
        reads = [self._read(int(i)) for i in rows]
        if not reads:
            raise ValueError(f"{self.name}: no rows requested")
        out = {}
        for key in reads[0]:
            stacked = np.stack([np.asarray(r[key]) for r in reads])
            out[key] = stacked.astype(np.float32, copy=False) if stacked.dtype.kind == "f" else stacked
        out["index"] = np.asarray(rows, dtype=np.int64)
        return out

    def preload(self) -> "OfficialDataset":
        """Read every row into memory now (e.g. before forking DataLoader workers); returns ``self``."""
        if self._length:
            self._preloaded = self._gather_rows(np.arange(self._length))
        self.close()
        return self

    def close(self) -> None:
        """Close cached file handles (reopened on demand)."""


AUDIO_ROW = (128,)          # VGGish embedding per ~1 s segment
VIDEO_ROW = (7, 7, 512)     # VGG19 pool5 map per 1 s segment
TEXT_DIM = 768              # BERT-base token embedding


def read_av_clip(video_id: str, modalities: Sequence[str], audio_dir: Path, video_dir: Path) -> dict[str, np.ndarray]:
    """The zip-of-pickle VGGish audio (padded/truncated to 10 rows) and VGG19 video features of one clip."""
    out = {}
    if "audio" in modalities:
        path = Path(audio_dir) / f"{video_id}.zip"
        out["audio"] = fit_rows(read_feature_zip(path, (None, *AUDIO_ROW), "VGGish audio features (T, 128)"),
                                SEGMENTS, str(path))
    if "video" in modalities:
        out["video"] = read_feature_zip(Path(video_dir) / f"{video_id}.zip", (SEGMENTS, *VIDEO_ROW),
                                        "VGG19 pool5 video features (10, 7, 7, 512)")
    return out


def resolve_modalities(requested: Sequence[str] | None, available: Sequence[str], text_folder_exists: bool,
                       where: str) -> tuple[str, ...]:
    """The modalities to read: ``requested`` (checked against ``available``), or by default all of ``available``
    with ``text`` only when a ``text_embeddings`` folder exists (asking for text explicitly without it raises a
    FileNotFoundError from the embedding reader)."""
    if requested is None:
        return tuple(m for m in available if m != "text" or text_folder_exists)
    requested = tuple(requested)
    bad = [m for m in requested if m not in available]
    if bad or not requested:
        raise ValueError(f"{where}: modalities {list(requested)} not available; expected a non-empty subset of "
                         f"{list(available)}")
    return requested
