"""Clip sampling for AV-Digits: per-segment, per-modality events and the bank indices that realise them.

Unconstrained pairing (paper Sec. 1, 5.1): in a 10-segment clip the audio and the visual tracks share the main event
only on part of the clip. Each modality has its own event window; outside it a segment is background (noise, an
off-screen word, clutter) or, in the pretraining/AVVP layouts, an event of another class seen or heard in one
modality only. Every choice is drawn from a seeded ``numpy.random.Generator``, vectorised over clips.

Layouts: ``ave`` (one class; audio and video windows overlap with jittered ends; AVE-like), ``pretrain`` (as ``ave``
plus a chance that a modality misses the event and a chance of an extra unshared event), ``avvp`` (one or two
classes, each present in audio and/or video with independent windows), ``full`` (the event fills the clip in both
modalities: UCF/VGGSound-like clip classification).
"""
from __future__ import annotations

import numpy as np

T = 10
BACKGROUND = -1
LAYOUTS = ("ave", "pretrain", "avvp", "full")


def _window(rng: np.random.Generator, n: int, min_len: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    length = rng.integers(min_len, max_len + 1, n)
    onset = (rng.random(n) * (T - length + 1)).astype(np.int64)
    return onset, onset + length


def _mask(onset: np.ndarray, end: np.ndarray) -> np.ndarray:
    t = np.arange(T)[None]
    return (t >= onset[:, None]) & (t < end[:, None])


def _jitter(rng: np.random.Generator, onset: np.ndarray, end: np.ndarray, amount: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(onset)
    on = np.clip(onset + rng.integers(-amount, amount + 1, n), 0, T - 1)
    en = np.clip(end + rng.integers(-amount, amount + 1, n), on + 2, T)
    on = np.minimum(on, en - 2)
    return on, en


def _other_class(rng: np.random.Generator, c: np.ndarray, num_classes: int) -> np.ndarray:
    return (c + rng.integers(1, num_classes, len(c))) % num_classes


def sample_events(rng: np.random.Generator, n: int, layout: str, num_classes: int) -> dict[str, np.ndarray]:
    """Per-segment classes for audio and video, (n, T) int8 with -1 = background, and the clip class (n,).

    ``second`` (n,) is the second class of a clip (-1 if none); it names the extra event for the text template.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    c = rng.integers(0, num_classes, n)
    second = np.full(n, -1, np.int64)
    if layout == "full":
        a = np.repeat(c[:, None], T, 1)
        return {"label": c, "audio": a.astype(np.int8), "video": a.astype(np.int8).copy(), "second": second}
    if layout == "avvp":
        audio = np.full((n, T), BACKGROUND, np.int64)
        video = np.full((n, T), BACKGROUND, np.int64)
        has_second = rng.random(n) < 0.5
        second = np.where(has_second, _other_class(rng, c, num_classes), -1)
        for cls, live in ((c, np.ones(n, bool)), (second, has_second)):   # two event slots, each vectorised
            # where: 0 = audio only, 1 = video only, 2 = both (the main event is at least in one)
            where = rng.choice(3, n, p=[0.25, 0.25, 0.5])
            for track, present in ((audio, where != 1), (video, where != 0)):
                on, en = _window(rng, n, 2, 6)
                hit = _mask(on, en) & (present & live)[:, None]
                track[hit] = np.repeat(cls[:, None], T, 1)[hit]
        return {"label": c, "audio": audio.astype(np.int8), "video": video.astype(np.int8), "second": second}
    on_a, en_a = _window(rng, n, 3, 9)
    on_v, en_v = _jitter(rng, on_a, en_a, 2)
    audio_hit, video_hit = _mask(on_a, en_a), _mask(on_v, en_v)
    cc = np.repeat(c[:, None], T, 1)
    audio = np.where(audio_hit, cc, BACKGROUND)
    video = np.where(video_hit, cc, BACKGROUND)
    if layout == "pretrain":
        miss = rng.random(n)
        audio[miss < 0.04] = BACKGROUND                               # event only seen
        video[(miss >= 0.04) & (miss < 0.08)] = BACKGROUND            # event only heard
        extra = rng.random(n) < 0.25
        second = np.where(extra, _other_class(rng, c, num_classes), -1)
        in_audio = rng.random(n) < 0.5
        on_x, en_x = _window(rng, n, 1, 3)
        spot = _mask(on_x, en_x) & extra[:, None]
        sc = np.repeat(second[:, None], T, 1)
        put_a = spot & in_audio[:, None] & (audio == BACKGROUND)
        put_v = spot & ~in_audio[:, None] & (video == BACKGROUND)
        audio[put_a] = sc[put_a]
        video[put_v] = sc[put_v]
        second = np.where(put_a.any(1) | put_v.any(1), second, -1)
    return {"label": c, "audio": audio.astype(np.int8), "video": video.astype(np.int8), "second": second}


def pick(rng: np.random.Generator, table_start: np.ndarray, table_count: np.ndarray, order: np.ndarray,
         key: np.ndarray) -> np.ndarray:
    """Uniform draw from grouped lists: for each ``key``, an element of ``order[start[key]: start[key]+count[key]]``.

    Raises ValueError when a requested group is empty.
    """
    counts = table_count[key]
    if (counts == 0).any():
        raise ValueError(f"empty group(s) {np.unique(key[counts == 0])[:5].tolist()} in a bank lookup")
    return order[table_start[key] + (rng.random(key.shape) * counts).astype(np.int64)]


def group(keys: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, count, order) such that ``order[start[g]: start[g] + count[g]]`` are the positions with key g."""
    order = np.argsort(keys, kind="stable")
    count = np.bincount(keys[keys >= 0], minlength=n_groups)[:n_groups]
    order = order[keys[order] >= 0]
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return start, count, order
