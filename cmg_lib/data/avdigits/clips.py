"""Clips of an AV-Digits build drawn from its banks (``banks.py``): per clip the labels and, per segment, the
parameters that mix its sound track and render its frames (stored instead of the signals; ``store.py`` renders
them on demand), the sentence of its text, and the AVS frames with their masks.
"""
from __future__ import annotations

import numpy as np

from . import banks, classes, sequences, text, vision
from .scales import Scale


AVS_FRAMES = 5


class Lookups:
    """Grouped bank indices used to draw clip contents per pool."""

    def __init__(self, bank: dict, spec: Scale, mixer: banks.AudioMixer):
        self.bank, self.spec, self.mixer = bank, spec, mixer
        self.cls = classes.ClassSet(spec.classes)
        n_pools = len(banks.POOLS)
        self.voices = sequences.group(bank["voice_pool"].astype(np.int64), n_pools)
        n_voices, n_words = len(bank["voice_pool"]), len(classes.WORDS)
        self.word = np.full((n_voices, n_words, max(spec.prosodies, spec.extractor_prosodies)), -1, np.int64)
        self.word[bank["word_voice"], bank["word_id"], bank["word_prosody"]] = np.arange(len(bank["word_id"]))
        self.noise = sequences.group(bank["noise_pool"].astype(np.int64), n_pools)
        self.image = sequences.group(bank["image_pool"].astype(np.int64) * 10 + bank["image_label"], n_pools * 10)
        self.fragment = sequences.group(bank["fragment_pool"].astype(np.int64), n_pools)
        self.field = sequences.group(bank["field_pool"].astype(np.int64), n_pools)

    def draw(self, rng, table, key):
        start, count, order = table
        return sequences.pick(rng, start, count, order, np.asarray(key, np.int64))

    def say(self, rng, voice: np.ndarray, word: np.ndarray) -> np.ndarray:
        """A bank rendering of ``word`` by ``voice`` (same shapes), with a random prosody."""
        return self.word[voice, word, rng.integers(0, self.spec.prosodies, word.shape)]


def _audio_track(rng, lk: Lookups, p: int, seg_class: np.ndarray, voice: np.ndarray, partial: float) -> dict:
    """Mixing parameters per segment: the number said by the clip's voice (a partial segment: one of its words);
    background = noise alone or an off-screen word of another voice."""
    n, t = seg_class.shape
    c = np.maximum(seg_class, 0)
    v = np.repeat(voice[:, None], t, 1)
    w1, w2 = lk.say(rng, v, lk.cls.tens_word[c]), lk.say(rng, v, lk.cls.unit_word[c])
    part = rng.random((n, t)) < partial
    keep_unit = rng.random((n, t)) < 0.5
    w1 = np.where(part & keep_unit, w2, w1)
    w2 = np.where(part, -1, w2)
    other = lk.draw(rng, lk.voices, np.full((n, t), p))
    off = lk.word[other, np.asarray(banks.OFFSCREEN)[rng.integers(0, len(banks.OFFSCREEN), (n, t))], 0]
    event = seg_class >= 0
    w1 = np.where(event, w1, np.where(rng.random((n, t)) < 0.5, off, -1))
    w2 = np.where(event, w2, -1)
    k1, k2 = lk.mixer.timing(rng, w1, w2)
    noise = lk.draw(rng, lk.noise, np.full((n, t), p))
    g1, g2, gn = banks.gains(rng, (n, t), lk.spec.redundancy.snr_db)
    return {"a_w1": w1.astype(np.int32), "a_w2": w2.astype(np.int32), "a_k1": k1.astype(np.int16),
            "a_k2": k2.astype(np.int16), "a_g1": g1, "a_g2": g2, "a_noise": noise.astype(np.int16),
            "a_q": lk.mixer.noise(rng, noise).astype(np.int16), "a_gn": gn, "a_partial": (part & event)}


def mix_of(c: dict[str, np.ndarray], rows=slice(None)) -> dict[str, np.ndarray]:
    """Flattened mixing parameters (``audio.mix_log_mel`` keys) of clip rows."""
    keys = {"w1": "a_w1", "w2": "a_w2", "k1": "a_k1", "k2": "a_k2", "g1": "a_g1", "g2": "a_g2", "noise": "a_noise",
            "q": "a_q", "gn": "a_gn"}
    return {k: np.asarray(c[v][rows]).reshape(-1).astype(np.float32 if k[0] == "g" else np.int64)
            for k, v in keys.items()}


def _video_track(rng, lk: Lookups, p: int, seg_class: np.ndarray, partial: float) -> dict:
    """Render parameters per segment: the number's two digits (fresh images; a partial frame: one of them) at a
    fresh position, over clutter and texture."""
    shape = seg_class.shape
    c = np.maximum(seg_class, 0)
    left = lk.draw(rng, lk.image, p * 10 + lk.cls.tens_digit[c])
    right = lk.draw(rng, lk.image, p * 10 + lk.cls.unit_digit[c])
    event = seg_class >= 0
    part = (rng.random(shape) < partial) & event
    drop_left = rng.random(shape) < 0.5
    left = np.where(event & ~(part & drop_left), left, -1)
    right = np.where(event & ~(part & ~drop_left), right, -1)
    gap = rng.integers(0, vision.MAX_GAP + 1, shape)
    room_x = vision.CANVAS - 2 * vision.SPRITE - gap
    out = {"v_left": left.astype(np.int32), "v_right": right.astype(np.int32),
           "v_x": (rng.random(shape) * (room_x + 1)).astype(np.int8), "v_gap": gap.astype(np.int8),
           "v_y": rng.integers(2, vision.CANVAS - vision.SPRITE - 1, shape).astype(np.int8),
           "v_dy": rng.integers(-2, 3, shape).astype(np.int8),
           "v_gain": rng.uniform(0.7, 1.0, shape).astype(np.float16),
           "v_partial": part}
    out.update(vision.clutter_params(rng, shape, lambda: lk.draw(rng, lk.fragment, np.full(shape, p)),
                                     lambda: lk.draw(rng, lk.field, np.full(shape, p)), lk.spec.redundancy.clutter))
    return out


def _text_choice(rng, lk: Lookups, p: int, label: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Sentence key per clip: (subject, template (-1 = pair), class a, class b or -1)."""
    n = len(label)
    held = text.held_subjects(lk.spec.subjects)
    if banks.POOLS[p] == "train":
        subject = rng.integers(0, lk.spec.subjects - len(held), n)
    else:
        subject = held[rng.integers(0, len(held), n)]
    template = np.where(second >= 0, -1, rng.integers(0, lk.spec.templates, n))
    return np.stack([subject, template, label, second], 1).astype(np.int16)


def sample_clips(seed: int, lk: Lookups, layout: str, pool: str, n: int, stream: str) -> dict[str, np.ndarray]:
    """Per-clip labels and per-segment mixing/rendering parameters for one split (audio features added later)."""
    rng = banks.stream_rng(seed, "clips", stream)
    p = banks.POOLS.index(pool)
    knob = lk.spec.redundancy
    if layout == "avs":
        return _sample_avs(rng, lk, p, n)
    ev = sequences.sample_events(rng, n, layout, lk.cls.count)
    voice = lk.draw(rng, lk.voices, np.full(n, p))
    clips = {"label": ev["label"].astype(np.int8), "second": ev["second"].astype(np.int8),
             "a_class": ev["audio"], "v_class": ev["video"], "voice": voice.astype(np.int16)}
    clips.update(_audio_track(rng, lk, p, ev["audio"].astype(np.int64), voice, knob.audio_partial))
    clips.update(_video_track(rng, lk, p, ev["video"].astype(np.int64), knob.video_partial))
    clips["t_key"] = _text_choice(rng, lk, p, ev["label"], ev["second"].astype(np.int64))
    return clips


def _sample_avs(rng, lk: Lookups, p: int, n: int) -> dict[str, np.ndarray]:
    """AVS-S4-like frames: two numbers of distinct classes, one per half of the frame; the first one is said."""
    C = lk.cls.count
    first = rng.integers(0, C, n)
    pair = np.stack([first, (first + rng.integers(1, C, n)) % C], 1)              # (n, 2) distinct classes
    row = np.stack([r := rng.integers(0, 2, n), 1 - r], 1)                         # which half each number is in
    images = np.stack([lk.draw(rng, lk.image, p * 10 + lk.cls.tens_digit[pair]),
                       lk.draw(rng, lk.image, p * 10 + lk.cls.unit_digit[pair])], -1)   # (n, 2, 2): number, digit
    shape = (n, AVS_FRAMES, 2)
    gap = rng.integers(0, vision.MAX_GAP + 1, shape)
    voice = lk.draw(rng, lk.voices, np.full(n, p))
    seg_class = np.repeat(pair[:, :1], AVS_FRAMES, 1)
    clips = {"label": pair[:, 0].astype(np.int8), "s_class": pair.astype(np.int8), "s_image": images.astype(np.int32),
             "s_row": row.astype(np.int8), "voice": voice.astype(np.int16), "s_gap": gap.astype(np.int8),
             "s_x": (rng.random(shape) * (vision.CANVAS - 2 * vision.SPRITE - gap + 1)).astype(np.int8),
             "s_y": rng.integers(0, vision.CANVAS // 2 - vision.SPRITE + 1, shape).astype(np.int8),
             "s_gain": rng.uniform(0.75, 1.0, shape).astype(np.float16),
             "s_field": lk.draw(rng, lk.field, np.full((n, AVS_FRAMES), p)).astype(np.int32)}
    clips.update(_audio_track(rng, lk, p, seg_class, voice, 0.0))
    clips["t_key"] = _text_choice(rng, lk, p, pair[:, 0], np.full(n, -1))
    return clips
