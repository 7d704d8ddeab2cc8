"""AVVP (LLP eval) segment annotations and features (book/official_data.md; ``dataset/AVVP_dataset.py``).

Annotation files are **tab**-separated with columns ``filename, onset, offset, event_labels``; a video's events are
comma-joined in each cell (``0,5,0`` / ``1,9,5`` / ``Speech,Speech,Violin_fiddle``). onset/offset are integer seconds
with ``[onset, offset)`` windows. The label is ``(10, C+1)``: for each event its window is OR-ed into the class
column; the background column (last) is 1 exactly where no event is present (``AVVP_dataset.py:63-77``).

The released protocol trains on one modality's annotations and tests on the other's, over the **same** videos
(``avvp.py:83-120``; no held-out split, book/differences.md#downstream-protocol). So both our splits hold every video
annotated in either file (audio file order first), with ``segment_label/audio`` from the audio file and
``segment_label/video`` from the visual file (a video absent from a file has no event in that modality: all background).
Features come from ``{audio|video}/zip/{filename[:11]}.zip`` (the YouTube id): audio (T, 128) fitted to 10 rows, video
(10, 7, 7, 512).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..schema import SEGMENTS, segment_key
from .base import AUDIO_ROW, VIDEO_ROW, OfficialDataset, read_av_clip, resolve_modalities
from .files import column, index_of, read_lines, read_table

_COLUMNS = ("filename", "onset", "offset", "event_labels")


def _seconds(cells: list[str], path: Path, what: str) -> np.ndarray:
    try:
        values = np.asarray([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: {what} values {cells[:5]} are not numbers, expected integer seconds") from None
    if not np.all(values == np.round(values)):
        raise ValueError(f"{path}: {what} values must be integer seconds, found {values[values != np.round(values)][:3]}")
    return values.astype(np.int64)


def parse_events(path: Path, class_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Filenames (first-appearance order) and their ``(N, 10, C+1)`` float32 multi-hot labels from one csv."""
    header, rows = read_table(path, "a tab-separated AVVP annotation file (filename, onset, offset, event_labels)",
                              _COLUMNS, delimiter="\t")
    cells = {c: column(header, rows, c, path) for c in _COLUMNS}
    filenames = list(dict.fromkeys(cells["filename"]))
    row_of = {f: k for k, f in enumerate(filenames)}
    ev_row, ev_on, ev_off, ev_cls = [], [], [], []
    for r, (name, on, off, labels) in enumerate(zip(*(cells[c] for c in _COLUMNS))):
        parts = [on.split(","), off.split(","), labels.split(",")]
        if len({len(p) for p in parts}) != 1:
            raise ValueError(f"{path}: data row {r + 1} ({name}) lists {len(parts[0])} onsets, {len(parts[1])} "
                             f"offsets and {len(parts[2])} event labels; expected the same number of each")
        ev_row += [row_of[name]] * len(parts[0])
        ev_on += parts[0]
        ev_off += parts[1]
        ev_cls += [p.strip() for p in parts[2]]
    onset, offset = _seconds(ev_on, path, "onset"), _seconds(ev_off, path, "offset")
    if np.any(onset < 0) or np.any(offset < onset):
        raise ValueError(f"{path}: expected 0 <= onset <= offset for every event")
    cls = index_of(class_names, ev_cls, path, "event labels")
    seg = np.arange(SEGMENTS)
    inside = (seg[None, :] >= onset[:, None]) & (seg[None, :] < offset[:, None])          # (E, 10)
    labels = np.zeros((len(filenames), SEGMENTS, len(class_names) + 1), dtype=np.float32)
    np.maximum.at(labels, (np.asarray(ev_row)[:, None], seg[None, :], cls[:, None]), inside.astype(np.float32))
    labels[..., -1] = 1.0 - labels[..., :-1].max(axis=-1)
    return filenames, labels


class AVVPVideos(OfficialDataset):
    def __init__(self, *, name: str, categories: Path, audio_csv: Path, visual_csv: Path, audio_dir: Path,
                 video_dir: Path, modalities: Sequence[str] | None = None):
        class_names = read_lines(categories, "the event class names, one per line")
        names_a, labels_a = parse_events(audio_csv, class_names)
        names_v, labels_v = parse_events(visual_csv, class_names)
        self.filenames = list(dict.fromkeys(names_a + names_v))
        self.segment_labels = {}
        for m, names, labels in (("audio", names_a, labels_a), ("video", names_v, labels_v)):
            full = np.zeros((len(self.filenames), SEGMENTS, len(class_names) + 1), dtype=np.float32)
            full[..., -1] = 1.0
            position = {f: k for k, f in enumerate(self.filenames)}
            full[[position[f] for f in names]] = labels
            self.segment_labels[m] = full
        self.audio_dir, self.video_dir = audio_dir, video_dir
        mods = resolve_modalities(modalities, ("audio", "video"), False, name)
        super().__init__(name=name, modalities=mods, feature_shapes={"audio": AUDIO_ROW, "video": VIDEO_ROW},
                         class_names=class_names, length=len(self.filenames))

    def _read(self, i: int) -> dict:
        vid, out = self.filenames[i][:11], {}
        out.update(read_av_clip(vid, self.modalities, self.audio_dir, self.video_dir))
        for m in ("audio", "video"):
            out[segment_key(m)] = self.segment_labels[m][i]
        return out


def avvp_dataset(paths, split: str, modalities=None) -> AVVPVideos:
    return AVVPVideos(name=f"official/avvp/{split}", categories=paths["avvp_categories"],
                      audio_csv=paths["avvp_audio_csv"], visual_csv=paths["avvp_visual_csv"],
                      audio_dir=paths["avvp_audio"], video_dir=paths["avvp_video"], modalities=modalities)
