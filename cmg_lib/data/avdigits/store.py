"""A built AV-Digits folder opened for reading: materialises rows of any split as float32 arrays, vectorised.

Stored: float16 banks and integer indices. Per request: audio rows are gathered from the feature bank, frames are
rendered from their parameters (clutter field, two fragments, the event digit) in one fancy-indexing pass per layer
and featurised by the frozen 5x5x64 CNN stored in the bank (standardised per channel with its training statistics), text rows are gathered from the token bank, labels become multi-hot
``(T, C+1)`` with background last (schema.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import schema
from . import audio, build, verify, vision

NUM_CLASSES = 10
CLASS_NAMES = list(audio.DIGIT_WORDS)
FEATURE_SHAPES = {"audio": (2 * audio.N_MELS,), "video": (vision.GRID, vision.GRID, vision.PATCH ** 2),
                  "text": (384,)}
_OPEN: dict[str, "Store"] = {}


def one_hot_with_background(classes: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
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
        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        self.bank = self._read("banks.npz")
        self._clips: dict[str, dict[str, np.ndarray]] = {}
        self._extractor = None
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
            self._extractor = vision.load_extractor(self.bank)
        lead = frames.shape[:-2]
        flat = frames.reshape((-1, vision.CANVAS, vision.CANVAS))
        feats = (vision.extract(self._extractor, flat) - self.bank["cnn_stats/mean"]) / self.bank["cnn_stats/std"]
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
            if arr.dtype == np.float16 and arr.shape[1:] == (build.T,) + FEATURE_SHAPES["video"]:
                return arr
        return None

    def _save_derived(self, name: str, arr: np.ndarray) -> None:
        folder = self.folder / "derived"
        tmp = folder / f".video-{name}-{len(arr)}.{os.getpid()}.tmp.npy"
        try:
            folder.mkdir(exist_ok=True)
            np.save(tmp, arr)
            os.replace(tmp, folder / f"video-{name}-{len(arr)}.npy")
        except OSError:                             # read-only build folder: keep the in-memory copy only
            tmp.unlink(missing_ok=True)

    def render_avs(self, c: dict[str, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """AVS frames (n, F, 40, 40), sounding-digit masks (n, F, 40, 40) and per-digit masks (n, F, 3, 40, 40)."""
        b = self.bank
        n, f, k = len(rows), build.AVS_FRAMES, c["s_image"].shape[1]
        image = np.repeat(c["s_image"][rows][:, None, :], f, 1)                   # (n, F, k)
        quad = np.repeat(c["s_quadrant"][rows][:, None, :].astype(np.int64), f, 1)
        half = vision.CANVAS // 2
        y = (quad // 2) * half + c["s_y"][rows]
        x = (quad % 2) * half + c["s_x"][rows]
        gain = c["s_gain"][rows]
        canvas = b["field"][c["s_field"][rows].reshape(-1)].astype(np.float32)
        digit_masks = np.zeros((n * f, k, vision.CANVAS, vision.CANVAS), np.float32)
        for j in range(k):                                                       # k = 3 layers, each vectorised
            sel = (image[..., j].reshape(-1), y[..., j].reshape(-1), x[..., j].reshape(-1))
            vision.paste(canvas, b["image_small"], *sel, gain[..., j].reshape(-1))
            vision.paste(digit_masks[:, j], b["image_small"], *sel, np.ones(n * f, np.float32))
        digit_masks = (digit_masks > 0.5).reshape(n, f, k, vision.CANVAS, vision.CANVAS)
        frames = np.clip(canvas, 0.0, 1.0).reshape(n, f, vision.CANVAS, vision.CANVAS)
        return frames, digit_masks[:, :, 0].astype(np.float32), digit_masks

    # ----------------------------------------------------------------------------------------------- items
    def gather(self, subset: str, split: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of a split as arrays per the batch contract (float32 features, labels, index)."""
        c = self.clips(subset, split)
        b = self.bank
        rows = np.asarray(rows, np.int64)
        out = {"audio": b["audio_feat"][c["a_idx"][rows]].astype(np.float32),
               "text": b["text_feat"][c["t_idx"][rows]].astype(np.float32),
               "label": c["label"][rows].astype(np.int64), "index": rows.copy()}
        if subset == "avs":
            frames, mask, _ = self.render_avs(c, rows)
            n, f = frames.shape[:2]
            out["frames"] = frames[..., None]
            out["mask"] = mask
            out["video"] = self.video_features(frames)
            return out
        out["video"] = self.split_video_features(subset, split)[rows].astype(np.float32)
        out[schema.segment_key("audio")] = one_hot_with_background(c["a_class"][rows])
        out[schema.segment_key("video")] = one_hot_with_background(c["v_class"][rows])
        out[schema.segment_key("text")] = one_hot_with_background(b["text_token_label"][c["t_idx"][rows]])
        return out

    def waveform(self, entries: np.ndarray) -> np.ndarray:
        """The 16 kHz audio of bank entries, one second each, concatenated (float32): exactly what was featurised."""
        b = self.bank
        seed = int(self.manifest["seed"])
        segs = []
        for e in np.asarray(entries, np.int64).reshape(-1):       # a handful of seconds, for listening only
            if b["audio_word"][e] >= 0:
                start, length = b["audio_wave_start"][e], b["audio_wave_len"][e]
                utt = b["audio_wave"][start: start + length]
            else:
                utt = None
            segs.append(build._segment(seed, e, utt, b["audio_offset"][e], b["audio_gain"][e],
                                       b["audio_noise_kind"][e], b["audio_noise_level"][e]))
        return np.concatenate(segs).astype(np.float32)

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
        entries = c["a_idx"][i]
        out = {"subset": subset, "split": split, "index": i, "sample_rate": audio.SAMPLE_RATE,
               "waveform": self.waveform(entries), "label": int(c["label"][i]),
               "class_name": CLASS_NAMES[int(c["label"][i])],
               "voice": self.manifest["voices"][int(c["voice"][i])],
               "spoken": [words[w] if w >= 0 else "(noise)" for w in b["audio_word"][entries]],
               "sentence": self.manifest["sources"]["text"]["sentences"][t_idx],
               "text_token_labels": b["text_token_label"][t_idx].astype(np.int64)}
        if subset == "avs":
            frames, mask, digit_masks = self.render_avs(c, rows)
            out.update(frames=np.rint(frames[0] * 255).astype(np.uint8), mask=mask[0].astype(bool),
                       digit_masks=digit_masks[0], digit_classes=c["s_class"][i].astype(np.int64),
                       digit_present=c["s_image"][i] >= 0)
        else:
            frames = self.render_segments(c, rows)
            out.update(frames=np.rint(frames[0] * 255).astype(np.uint8),
                       audio_labels=c["a_class"][i].astype(np.int64), video_labels=c["v_class"][i].astype(np.int64),
                       digit_images=c["v_digit"][i].astype(np.int64))
        return out
