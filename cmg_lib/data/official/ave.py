"""AVE clips from the AVE-ECCV18 HDF5 files (book/official_data.md; ``dataset/AVE_dataset.py``,
``dataset/AVE_AVVP_dataset.py``).

* ``visual_feature.h5`` / ``audio_feature.h5`` / ``labels.h5``: dataset ``avadataset`` of shapes (N, 10, 7, 7, 512),
  (N, 10, 128), (N, 10, C+1) (one-hot per segment, background last); ``{split}_order.h5``: dataset ``order`` with the
  global row indices of the split. Arrays are cast to float32 (the release stores float64).
* AVE -> AVVP training side: the same feature files, labels ``AVE_AVVP/ave_avvp_labels.h5`` (12 shared classes +
  background, indexed by the **global** AVE row) and order ``AVE_AVVP/ave_avvp_order.h5``.

Items: ``audio`` (10, 128), ``video`` (10, 7, 7, 512), ``segment_label/audio`` = ``segment_label/video`` (10, C+1)
(AVE annotates one audio-visual event), and ``label`` = the clip class derived as ``ave.py:195-198`` does: the
per-segment argmax over the foreground columns, then the maximum of those indices over time
(:func:`clip_labels`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..schema import SEGMENTS, segment_key
from .base import AUDIO_ROW, VIDEO_ROW, OfficialDataset, resolve_modalities
from .files import H5Rows

AVE_CLASSES = 28


def clip_labels(segment_labels: np.ndarray) -> np.ndarray:
    """Clip class per row of ``(N, T, C+1)`` labels: max over T of the argmax over the C foreground columns.

    For AVE's single-event clips this is the event class (background segments give argmax 0, never above it).
    """
    return segment_labels[..., :-1].argmax(axis=-1).max(axis=-1).astype(np.int64)


def check_events(segment_labels: np.ndarray, order: np.ndarray, labels_path: Path) -> None:
    """Every selected clip must have a foreground segment: an all-background row would silently get clip class 0
    (:func:`clip_labels`), so it is an error naming the labels file and the first such (global) row. Every AVE clip
    is annotated with one event, so such a row means a damaged or misaligned labels or order file."""
    empty = np.flatnonzero(segment_labels[..., :-1].sum(axis=(-1, -2)) <= 0)
    if empty.size:
        raise ValueError(f"{labels_path}: {empty.size} of {len(order)} clips of the split have only background "
                         f"segments (first: row {int(order[empty[0]])}); expected one event per AVE clip (a damaged "
                         "or misaligned labels or order file?)")


def read_order(path: Path, n_rows: int, rows_note: str) -> np.ndarray:
    order_file = H5Rows(path, "order", (), "the split's integer row indices into the AVE feature files")
    order = order_file.all()
    order_file.close()
    if order.dtype.kind not in "iu" and not (order.dtype.kind == "f" and np.all(order == np.round(order))):
        raise ValueError(f"{path}: dataset 'order' has dtype {order.dtype}, expected integer row indices")
    order = order.astype(np.int64)
    if order.size and (order.min() < 0 or order.max() >= n_rows):
        raise ValueError(f"{path}: dataset 'order' holds indices in [{order.min()}, {order.max()}], expected "
                         f"[0, {n_rows - 1}] ({rows_note})")
    return order


class AVEClips(OfficialDataset):
    """AVE rows selected by an order file, with per-segment labels from a labels file (both indexed globally)."""

    def __init__(self, *, name: str, feature_dir: Path, order_path: Path, labels_path: Path,
                 class_names: Sequence[str], modalities: Sequence[str] | None = None):
        n_cls = len(class_names)
        self.video_rows = H5Rows(feature_dir / "visual_feature.h5", "avadataset", (SEGMENTS, *VIDEO_ROW),
                                 "AVE VGG19 pool5 features (N, 10, 7, 7, 512)")
        self.audio_rows = H5Rows(feature_dir / "audio_feature.h5", "avadataset", (SEGMENTS, *AUDIO_ROW),
                                 "AVE VGGish features (N, 10, 128)")
        if len(self.audio_rows) != len(self.video_rows):
            raise ValueError(f"{self.audio_rows.path} has {len(self.audio_rows)} rows but {self.video_rows.path} has "
                             f"{len(self.video_rows)}; expected the same clips in both")
        labels_file = H5Rows(labels_path, "avadataset", (SEGMENTS, n_cls + 1),
                             f"one-hot segment labels (N, 10, {n_cls + 1}), background last")
        self.order = read_order(order_path, min(len(self.audio_rows), len(labels_file)),
                                f"{len(self.audio_rows)} feature rows, {len(labels_file)} rows in {labels_path}")
        self.segment_labels = labels_file.all()[self.order].astype(np.float32)
        labels_file.close()
        check_events(self.segment_labels, self.order, labels_path)
        self.labels = clip_labels(self.segment_labels)
        mods = resolve_modalities(modalities, ("audio", "video"), False, name)
        super().__init__(name=name, modalities=mods, feature_shapes={"audio": AUDIO_ROW, "video": VIDEO_ROW},
                         class_names=class_names, length=len(self.order))

    def _read(self, i: int) -> dict:
        row, out = int(self.order[i]), {}
        if "audio" in self.modalities:
            out["audio"] = self.audio_rows.row(row)
        if "video" in self.modalities:
            out["video"] = self.video_rows.row(row)
        for m in ("audio", "video"):
            out[segment_key(m)] = self.segment_labels[i]
        out["label"] = int(self.labels[i])
        return out

    def close(self) -> None:
        self.audio_rows.close()
        self.video_rows.close()


def ave_dataset(paths, split: str, modalities=None) -> AVEClips:
    root = paths["ave"]
    names = tuple(f"ave_class_{k:02d}" for k in range(AVE_CLASSES))  # the h5 release carries no names
    return AVEClips(name=f"official/ave/{split}", feature_dir=root, order_path=root / f"{split}_order.h5",
                    labels_path=root / "labels.h5", class_names=names, modalities=modalities)
