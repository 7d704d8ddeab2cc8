"""The build scales of AV-Digits (one table) and the redundancy knob.

A :class:`Scale` fixes how many clips each split has and how large the banks and extractor training sets are;
``SCALES`` names the presets (``smoke`` for tests and CI, ``default`` for the book, ``full`` for the paper's sizes).

:class:`Redundancy` is the knob for how much class information each modality carries per event segment: with
probability ``audio_partial`` an audio event segment says only one of the number's two words (the tens or the unit
word), with ``video_partial`` a frame shows only one of its two digits; ``snr_db`` is the speech-to-noise range and
``clutter`` the number of distractor fragments per frame. ``Redundancy(0, 0, (30, 30), 0)`` makes every event
segment carry the whole class in both modalities; the default leaves each modality alone below the text.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .classes import DEFAULT_CLASSES


@dataclass(frozen=True)
class Redundancy:
    audio_partial: float = 0.15
    video_partial: float = 0.15
    snr_db: tuple[float, float] = (0.0, 20.0)
    clutter: tuple[int, int] = (1, 3)

    def __post_init__(self):
        for name in ("audio_partial", "video_partial"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.snr_db[0] > self.snr_db[1] or self.clutter[0] > self.clutter[1] or self.clutter[0] < 0:
            raise ValueError(f"snr_db and clutter must be (low, high) ranges, got {self.snr_db}, {self.clutter}")
        if self.clutter[1] > 4:
            raise ValueError(f"at most 4 clutter fragments per frame, got {self.clutter[1]}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Scale:
    """Sizes of one build: clips per split (same order as ``schema.SUBSETS``) and bank/extractor sizes."""

    name: str
    splits: dict[str, tuple[int, ...]]
    voices: dict[str, int] | None         # cap on voices per pool (None: all of them)
    prosodies: int                        # renderings per (voice, word) in the downstream banks
    noise_clips: int                      # 3-s noise recordings per pool
    fragments: int                        # clutter sprites per pool
    noise_fields: int                     # background textures per pool
    subjects: int                         # sentence subjects (the last third held out for val/test)
    templates: int                        # sentence templates
    extractor_prosodies: int              # renderings per (voice, word) for the audio extractor's task
    extractor_segments: int               # audio training segments of the audio extractor
    extractor_canvases: int               # single-digit canvases of the vision extractor's task
    extractor_epochs: int
    classes: int = DEFAULT_CLASSES
    redundancy: Redundancy = field(default_factory=Redundancy)


_SMOKE_SPLITS = {"pretrain": (240, 400, 810), "ave": (200, 50, 100), "avvp": (100, 60), "ave_avvp": (100, 60),
                 "ucf_vgg": (100, 100), "avs": (100, 40, 60), "retrieval": (100, 60)}
_DEFAULT_SPLITS = {"pretrain": (2400, 4000, 8100), "ave": (2000, 400, 800), "avvp": (1000, 500),
                   "ave_avvp": (1000, 500), "ucf_vgg": (800, 800), "avs": (1000, 250, 250),
                   "retrieval": (1000, 500)}
_FULL_SPLITS = {"pretrain": (24000, 40000, 81000), "ave": (3339, 402, 402), "avvp": (2000, 1000),
                "ave_avvp": (3339, 1000), "ucf_vgg": (1600, 1600), "avs": (3452, 740, 740),
                "retrieval": (2000, 1000)}

SCALES: dict[str, Scale] = {
    "smoke": Scale("smoke", _SMOKE_SPLITS, voices={"extractor": 8, "train": 6, "val": 2, "test": 3, "b": 4},
                   prosodies=2, noise_clips=6, fragments=300, noise_fields=24, subjects=3, templates=3,
                   extractor_prosodies=2, extractor_segments=4000, extractor_canvases=4000, extractor_epochs=3),
    "default": Scale("default", _DEFAULT_SPLITS, voices=None, prosodies=4, noise_clips=24, fragments=2000,
                     noise_fields=128, subjects=9, templates=5, extractor_prosodies=3, extractor_segments=12000,
                     extractor_canvases=12000, extractor_epochs=4),
    "full": Scale("full", _FULL_SPLITS, voices=None, prosodies=6, noise_clips=48, fragments=4000,
                  noise_fields=256, subjects=9, templates=5, extractor_prosodies=4, extractor_segments=24000,
                  extractor_canvases=24000, extractor_epochs=5),
}


SCALE_NAMES: tuple[str, ...] = tuple(SCALES)     # every scale name (build, budget, CLI), smallest first


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; expected one of {sorted(SCALES)}")
    return SCALES[name]
