"""AV-Digits (format 3): the embedded audio-visual-text dataset, built offline from real signals (``build.py``).

Classes are two-word numbers (28 by default, ``classes.py``). Audio = the number said by espeak-ng voices in a room
over noise (voice, prosody, room, noise = nuisance), vision = its two handwritten MNIST digits on a cluttered canvas
(writer, position, clutter = nuisance), text = a template sentence naming it, embedded by MiniLM. Audio and video
features come from frozen CNNs trained at build time on separate tasks and pools (``extractors.py``). Events are
shared across modalities only on part of each clip (unconstrained pairing, paper Sec. 1).

* ``load(subset, split, scale, seed, cache_dir, classes=None, redundancy=None)`` -> ``ArrayDataset`` (``schema.py``)
* ``sample(subset, split, i, ...)`` -> waveform, frames, masks, sentence, labels of one clip (for the book)
* ``build_dataset(scale, seed, cache_dir, ...)`` -> the build folder; its ``manifest.json`` holds the content hash
* ``segment_agreement(subset, split, ...)`` -> how often audio and video carry the same event per segment
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import common, schema
from .build import dataset_dir, ensure_built
from .classes import DEFAULT_CLASSES
from .scales import SCALES, Redundancy
from .store import FEATURE_SHAPES, Store

__all__ = ["load", "sample", "segment_agreement", "build_dataset", "manifest", "SCALES", "Redundancy",
           "FEATURE_SHAPES", "DEFAULT_CLASSES"]


def build_dataset(scale: str = "default", seed: int = 0, cache_dir=None, classes: int | None = None,
                  redundancy: Redundancy | None = None, repair: bool = False) -> Path:
    """Build (or find) the cache folder of this scale and seed (``classes``, ``redundancy``: see scales.py);
    ``repair``: verify every hash of an existing build and rebuild it if damaged (``data build``)."""
    return ensure_built(scale, seed, cache_dir, num_classes=classes, redundancy=redundancy, repair=repair)


def manifest(scale: str = "default", seed: int = 0, cache_dir=None, **options) -> dict:
    """The manifest of a build (building it first if needed)."""
    return json.loads((build_dataset(scale, seed, cache_dir, **options) / "manifest.json").read_text())


def load(subset: str, split: str, scale: str = "default", seed: int = 0, cache_dir=None, classes: int | None = None,
         redundancy: Redundancy | None = None) -> common.ArrayDataset:
    """One split of AV-Digits as a Dataset of float32 tensor dicts (built on first use)."""
    schema.check_subset(subset, split)
    store = Store.open(build_dataset(scale, seed, cache_dir, classes, redundancy))
    return common.ArrayDataset(
        store.size(subset, split), lambda rows: store.gather(subset, split, rows),
        name=f"avdigits/{subset}/{split}", modalities=("audio", "video", "text"),
        feature_shapes=dict(FEATURE_SHAPES), num_classes=store.num_classes, class_names=store.class_names,
        subset=subset, split=split, scale=scale, seed=int(seed), manifest_hash=store.manifest["hash"],
        table_identity=(f"avdigits/{subset}/{split}", store.manifest["hash"], store.size(subset, split)))


def sample(subset: str, split: str, i: int, scale: str = "default", seed: int = 0, cache_dir=None, **options) -> dict:
    """One clip for viewing and listening: 16 kHz waveform, uint8 frames (+ masks on AVS), sentence, labels."""
    schema.check_subset(subset, split)
    return Store.open(build_dataset(scale, seed, cache_dir, **options)).sample(subset, split, i)


def segment_agreement(subset: str = "pretrain", split: str = "40k", scale: str = "default", seed: int = 0,
                      cache_dir=None) -> dict[str, float]:
    """Share of all segments of a split where audio and video both carry the same event, both carry different
    events, only audio, only video or neither does (the unconstrained pairing of paper Sec. 1); sums to 1.
    From the clip tables' per-segment classes, without rendering or synthesising anything."""
    schema.check_subset(subset, split)
    c = Store.open(build_dataset(scale, seed, cache_dir)).clips(subset, split)
    if "a_class" not in c or "v_class" not in c:
        raise ValueError(f"{subset}/{split} has no per-segment audio and video classes")
    a, v = c["a_class"], c["v_class"]
    return {"both, same event": float(((a >= 0) & (a == v)).mean()),
            "both, different": float(((a >= 0) & (v >= 0) & (a != v)).mean()),
            "audio only": float(((a >= 0) & (v < 0)).mean()), "video only": float(((a < 0) & (v >= 0)).mean()),
            "neither": float(((a < 0) & (v < 0)).mean())}


def folder(scale: str = "default", seed: int = 0, cache_dir=None, classes=None, redundancy=None) -> Path:
    """Where a build of this scale and seed lives (whether or not it exists yet)."""
    return dataset_dir(scale, seed, cache_dir, classes, redundancy)
