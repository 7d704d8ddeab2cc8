"""A built AV-Digits folder opened for reading: materialises rows of any split as float32 arrays, vectorised.

Stored: float16 banks, per-segment audio features and integer/float16 rendering parameters. Per request: audio
rows are gathered from the clip table's features, frames are rendered from their parameters (texture, clutter, the
number's two digits) in one fancy-indexing pass per layer and featurised by the frozen ``DigitNet`` stored in the
bank (standardised per channel with its training statistics), text rows are gathered from the token bank, labels
become multi-hot ``(T, C+1)`` with background last (schema.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ... import storage
from .. import schema
from . import audio, banks, build, clips, extractors, verify, vision

FEATURE_SHAPES = {"audio": (extractors.AUDIO_DIM,), "video": (extractors.GRID, extractors.GRID, extractors.VIDEO_DIM),
                  "text": (384,)}
_OPEN: dict[str, "Store"] = {}


def one_hot_with_background(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-segment classes (..., T) with -1 = background -> multi-hot (..., T, C+1) float32, background last."""
    classes = np.asarray(classes, np.int64)
    if classes.size and (classes.max() >= num_classes or classes.min() < -1):
        raise ValueError(f"segment classes must lie in [-1, {num_classes - 1}]")
    out = np.zeros(classes.shape + (num_classes + 1,), np.float32)
    np.put_along_axis(out, np.where(classes < 0, num_classes, classes)[..., None], 1.0, axis=-1)
    return out


class Store:
    """Banks and clip tables of one build folder (see ``build.py`` for the layout)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        found = build.read_format(self.folder)
        if found != build.FORMAT:
            raise ValueError(f"{self.folder} holds an AV-Digits format-{found} build; this library reads format "
                             f"{build.FORMAT}: run `python -m cmg_lib data build` (or load_dataset) to build it")
        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        self.num_classes = int(self.manifest["classes"]["count"])
        self.class_names = list(self.manifest["classes"]["names"])
        self.bank = self._read("banks.npz")
        self._clips: dict[str, dict[str, np.ndarray]] = {}
        self._extractor = None
        self._waves = None
        self._video: dict[str, np.ndarray] = {}       # per clip table: float16 CNN features of its first n rows

    def _read(self, name: str) -> dict[str, np.ndarray]:
        """Every array of ``folder/name``; a read error becomes ``verify.DamagedCache`` naming the file."""
        def read():
            with np.load(self.folder / name, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        return verify.reading(self.folder, self.manifest, name, read)

    @classmethod
    def open(cls, folder: Path) -> "Store":
        key = str(Path(folder).resolve())
        if key not in _OPEN:
            _OPEN[key] = cls(Path(folder))
        return _OPEN[key]

    # ----------------------------------------------------------------------------------------------- tables
    def clips(self, subset: str, split: str) -> dict[str, np.ndarray]:
        schema.check_subset(subset, split)
        name = "pretrain" if subset == "pretrain" else f"{subset}_{split}"
        if name not in self._clips:
            self._clips[name] = self._read(f"clips/{name}.npz")
        table = self._clips[name]
        if subset == "pretrain":                  # the three sizes are prefixes of one clip table
            n = self.manifest["sizes"][f"pretrain/{split}"]
            return {k: v[:n] for k, v in table.items()}
        return table

    def size(self, subset: str, split: str) -> int:
        schema.check_subset(subset, split)
        return int(self.manifest["sizes"][f"{subset}/{split}"])

    # ----------------------------------------------------------------------------------------------- rendering
    def render_segments(self, c: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
        """Frames (len(rows), T, 40, 40) float32 in [0, 1] of clip rows (AVE-like layouts)."""
        return vision.render_clips(self.bank, c, rows)

    def video_features(self, frames: np.ndarray) -> np.ndarray:
        """(..., 40, 40) frames -> (..., 5, 5, 64) features of the frozen extractor stored in the bank."""
        if self._extractor is None:
            self._extractor = extractors.load(self.bank, "digit_net", extractors.DigitNet)
        lead = frames.shape[:-2]
        flat = frames.reshape((-1, vision.CANVAS, vision.CANVAS))
        feats = (extractors.video_features(self._extractor, flat) - self.bank["digit_net_stats/mean"]) \
            / self.bank["digit_net_stats/std"]
        return feats.reshape(lead + FEATURE_SHAPES["video"])

    def split_video_features(self, subset: str, split: str, chunk: int = 256) -> np.ndarray:
        """Float16 ``(n, T, 5, 5, 64)`` features of every clip of a (non-AVS) split, computed once per build folder.

        Rendering and the frozen CNN cost ~5 ms per clip (13 s for the default 24k pre-training set), which would
        otherwise be paid again by every process (each book notebook, each CLI run). The first computation is kept in
        memory and saved atomically as ``derived/video-<table>-<n>.npy`` in the build folder (outside the content
        hash: it is a pure function of the stored banks); later processes memory-map it. A read-only folder only
        loses the disk copy. The pretrain sizes share one table, so a larger prefix serves smaller ones.
        """
        c = self.clips(subset, split)
        n = len(c["label"])
        name = "pretrain" if subset == "pretrain" else f"{subset}_{split}"
        cached = self._video.get(name)
        if cached is None or len(cached) < n:
            cached = self._load_derived(name, n)
            if cached is None:
                parts = [self.video_features(self.render_segments(c, np.arange(i, min(i + chunk, n))))
                         .astype(np.float16) for i in range(0, n, chunk)]
                cached = np.concatenate(parts)
                self._save_derived(name, cached)
            self._video[name] = cached
        return cached[:n]

    def _load_derived(self, name: str, n: int) -> np.ndarray | None:
        """The smallest saved ``derived/video-<name>-<m>.npy`` with ``m >= n`` rows, memory-mapped, or None."""
        found = []
        for path in (self.folder / "derived").glob(f"video-{name}-*.npy"):
            m = path.stem.rsplit("-", 1)[-1]
            if m.isdigit() and int(m) >= n:
                found.append((int(m), path))
        for _, path in sorted(found):
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError):           # truncated or foreign file: ignore it, recompute
                continue
            if arr.dtype == np.float16 and arr.shape[1:] == (schema.SEGMENTS,) + FEATURE_SHAPES["video"]:
                return arr
        return None

    def _save_derived(self, name: str, arr: np.ndarray) -> None:
        def write(tmp):
            with open(tmp, "wb") as f:
                np.save(f, arr)
        try:
            storage.atomic_write_with(self.folder / "derived" / f"video-{name}-{len(arr)}.npy", write)
        except OSError:                             # read-only build folder: keep the in-memory copy only
            pass

    def render_avs(self, c: dict[str, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """AVS frames (n, F, 40, 40), the said number's mask (n, F, 40, 40) and per-number masks (n, F, 2, 40, 40)."""
        b = self.bank
        n, f = len(rows), clips.AVS_FRAMES
        canvas = b["field"][c["s_field"][rows].reshape(-1)].astype(np.float32)
        number_masks = np.zeros((n * f, 2, vision.CANVAS, vision.CANVAS), np.float32)
        half = vision.CANVAS // 2
        for j in range(2):                                                       # two numbers x two digits
            y = (c["s_row"][rows, j].astype(np.int64)[:, None] * half + c["s_y"][rows, :, j]).reshape(-1)
            x = c["s_x"][rows, :, j].astype(np.int64).reshape(-1)
            gain = c["s_gain"][rows, :, j].reshape(-1)
            right_x = x + vision.SPRITE + c["s_gap"][rows, :, j].reshape(-1)
            for d, xd in ((0, x), (1, right_x)):
                img = np.repeat(c["s_image"][rows, j, d][:, None], f, 1).reshape(-1)
                vision.paste(canvas, b["image_small"], img, y, xd, gain)
                vision.paste(number_masks[:, j], b["image_small"], img, y, xd, np.ones(n * f, np.float32))
        number_masks = (number_masks > 0.5).reshape(n, f, 2, vision.CANVAS, vision.CANVAS)
        frames = np.clip(canvas, 0.0, 1.0).reshape(n, f, vision.CANVAS, vision.CANVAS)
        return frames, number_masks[:, :, 0].astype(np.float32), number_masks

    # ----------------------------------------------------------------------------------------------- items
    def gather(self, subset: str, split: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of a split as arrays per the batch contract (float32 features, labels, index)."""
        c = self.clips(subset, split)
        b = self.bank
        rows = np.asarray(rows, np.int64)
        out = {"audio": c["a_feat"][rows].astype(np.float32),
               "text": b["text_feat"][c["t_idx"][rows]].astype(np.float32),
               "label": c["label"][rows].astype(np.int64), "index": rows.copy()}
        if subset == "avs":
            frames, mask, _ = self.render_avs(c, rows)
            out["frames"] = frames[..., None]
            out["mask"] = mask
            out["video"] = self.video_features(frames)
            return out
        out["video"] = self.split_video_features(subset, split)[rows].astype(np.float32)
        out[schema.segment_key("audio")] = one_hot_with_background(c["a_class"][rows], self.num_classes)
        out[schema.segment_key("video")] = one_hot_with_background(c["v_class"][rows], self.num_classes)
        out[schema.segment_key("text")] = one_hot_with_background(b["text_token_label"][c["t_idx"][rows]],
                                                                  self.num_classes)
        return out

    def waveform(self, c: dict[str, np.ndarray], row: int) -> np.ndarray:
        """The 16 kHz audio of one clip, one second per segment, concatenated: exactly what was featurised."""
        if self._waves is None:
            self._waves = (banks.unpack(self.bank, "word_wave"), banks.unpack(self.bank, "noise_wave"))
        mix = clips.mix_of(c, slice(row, row + 1))
        return np.concatenate([audio.compose_waveform(*self._waves, mix, t) for t in range(len(mix["w1"]))])

    def nuisance(self, subset: str, split: str) -> dict[str, dict[str, np.ndarray]]:
        """Per-segment nuisance factors (n, T) int64 per modality, for variance shares: audio voice, noise kind and
        speech-to-noise ratio (5-dB bins); video horizontal and vertical position (4-px bins) and clutter count;
        text subject and template (per clip, repeated over the slots)."""
        c = self.clips(subset, split)
        b = self.bank
        t = c["a_w1"].shape[1]
        snr = 20 * np.log10(c["a_g1"].astype(np.float64) / np.maximum(c["a_gn"].astype(np.float64), 1e-6))
        out = {"audio": {"voice": np.repeat(c["voice"].astype(np.int64)[:, None], t, 1),
                         "noise kind": b["noise_kind"][c["a_noise"]].astype(np.int64),
                         "snr": np.floor(snr / 5).astype(np.int64)}}
        if "v_x" in c:
            clutter = sum((c[f"c{j}_idx"] >= 0).astype(np.int64) for j in range(vision.CLUTTER))
            out["video"] = {"x position": c["v_x"].astype(np.int64) // 4,
                            "y position": c["v_y"].astype(np.int64) // 4, "clutter": clutter}
        key = b["text_key"][c["t_idx"]].astype(np.int64)
        out["text"] = {"subject": np.repeat(key[:, :1], schema.SEGMENTS, 1),
                       "template": np.repeat(key[:, 1:2], schema.SEGMENTS, 1)}
        return out

    def sample(self, subset: str, split: str, i: int) -> dict:
        """One clip to look at and listen to: waveform, uint8 frames (and masks), sentence, labels, voice."""
        n = self.size(subset, split)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range for {subset}/{split} with {n} clips")
        i = i % n
        c = self.clips(subset, split)
        b = self.bank
        rows = np.asarray([i])
        t_idx = int(c["t_idx"][i])
        words = self.manifest["sources"]["audio"]["words"]

        def said(w1, w2):
            return " ".join(words[b["word_id"][w]] for w in (w1, w2) if w >= 0) or "(noise)"

        label = int(c["label"][i])
        out = {"subset": subset, "split": split, "index": i, "sample_rate": audio.SAMPLE_RATE,
               "waveform": self.waveform(c, i), "label": label, "class_name": self.class_names[label],
               "voice": self.manifest["voices"][int(c["voice"][i])],
               "spoken": [said(w1, w2) for w1, w2 in zip(c["a_w1"][i], c["a_w2"][i])],
               "sentence": self.manifest["sources"]["text"]["sentences"][t_idx],
               "text_token_labels": b["text_token_label"][t_idx].astype(np.int64)}
        if subset == "avs":
            frames, mask, number_masks = self.render_avs(c, rows)
            out.update(frames=np.rint(frames[0] * 255).astype(np.uint8), mask=mask[0].astype(bool),
                       number_masks=number_masks[0], number_classes=c["s_class"][i].astype(np.int64))
        else:
            frames = self.render_segments(c, rows)
            out.update(frames=np.rint(frames[0] * 255).astype(np.uint8),
                       audio_labels=c["a_class"][i].astype(np.int64), video_labels=c["v_class"][i].astype(np.int64),
                       digit_images=np.stack([c["v_left"][i], c["v_right"][i]], -1).astype(np.int64))
        return out
