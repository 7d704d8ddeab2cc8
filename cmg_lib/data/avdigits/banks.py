"""The raw material of an AV-Digits build (``build.py``): word and noise recordings, images, sentences, each split
into pools (extractor / train / val / test, and ``b`` for the ``ucf`` domain) so that no downstream split sees the
recordings or images an extractor was trained on, and the two frozen extractors trained on their pool only.

Pools: espeak voice variants extractor / train / val / test 30/40/10/20 %, MNIST images 30/45/8/17 %.
"""
from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np

from . import audio, classes, extractors, text, vision
from .scales import Scale


POOLS = ("train", "val", "test", "b", "extractor")
EXTRACTOR = POOLS.index("extractor")
VOICE_SHARES = {"extractor": 0.3, "test": 0.2, "val": 0.1}        # the rest: train
IMAGE_SHARES = {"extractor": 0.3, "test": 0.17, "val": 0.08}
NOISE_SECONDS = 3
NUMBER_WORDS = tuple(classes.word_id(w) for w in classes.TENS_WORDS + classes.UNIT_WORDS[1:])
OFFSCREEN = tuple(classes.word_id(w) for w in classes.OFFSCREEN_WORDS)


def stream_rng(seed: int, *stream) -> np.random.Generator:
    """An independent generator per named stream, so each bank/split is reproducible on its own."""
    return np.random.default_rng([seed] + [zlib.crc32(str(s).encode()) for s in stream])


def split_pools(rng, items: list | int, shares: dict[str, float]) -> np.ndarray:
    """Pool id (``POOLS``) per item from a seeded permutation: ``shares`` of the items, the rest ``train``."""
    n = items if isinstance(items, int) else len(items)
    order = rng.permutation(n)
    pool = np.full(n, POOLS.index("train"), np.int8)
    at = 0
    for name, share in shares.items():
        k = int(round(share * n))
        pool[order[at: at + k]] = POOLS.index(name)
        at += k
    return pool


# ------------------------------------------------------------------------------------------------------ audio


def audio_bank(seed: int, spec: Scale) -> tuple[dict, dict, dict]:
    """Word recordings of every pool, noise recordings, the audio extractor (trained on its pool's words)."""
    human, odd = audio.list_voices()
    voice_pool = np.concatenate([split_pools(stream_rng(seed, "voices"), human, VOICE_SHARES),
                                 np.full(len(odd), POOLS.index("b"), np.int8)])
    names = human + odd
    if spec.voices:                                     # small builds: the first voices of each pool
        keep = np.zeros(len(names), bool)
        for p, pool in enumerate(POOLS):
            keep[np.flatnonzero(voice_pool == p)[: spec.voices[pool]]] = True
        voice_pool = np.where(keep, voice_pool, -1).astype(np.int8)
    rng = stream_rng(seed, "prosody")
    rows = []                                           # (voice, word, prosody)
    for v in np.flatnonzero(voice_pool >= 0):
        if voice_pool[v] == EXTRACTOR:
            words, k = range(len(classes.WORDS)), spec.extractor_prosodies
        else:
            words, k = NUMBER_WORDS, spec.prosodies
        rows += [(v, w, j) for w in words for j in range(k)]
        if voice_pool[v] != EXTRACTOR:
            rows += [(v, w, 0) for w in OFFSCREEN]
    rows = np.asarray(rows, np.int64)
    odd_voice = voice_pool[rows[:, 0]] == POOLS.index("b")
    n = len(rows)
    rate = np.where(odd_voice, rng.integers(150, 281, n), rng.integers(170, 251, n))
    pitch = np.where(odd_voice, rng.integers(10, 91, n), rng.integers(20, 81, n))
    prange = np.where(odd_voice, rng.integers(10, 91, n), rng.integers(30, 71, n))
    rt60 = np.where(odd_voice, rng.uniform(0.05, 0.8, n), rng.uniform(0.08, 0.5, n))
    jobs = [(classes.WORDS[w], names[v], int(r), int(pt), int(pr)) for (v, w, _), r, pt, pr in
            zip(rows, rate, pitch, prange)]
    t0 = time.perf_counter()
    raw = audio.synthesize_bank(jobs)
    t_synth = time.perf_counter() - t0
    room_rng = stream_rng(seed, "rooms")
    waves = [audio.in_room(audio.trim_silence(w), audio.room_response(room_rng, float(r)), int(0.6 * audio.SAMPLE_RATE))
             for w, r in zip(raw, rt60)]
    word_pool = voice_pool[rows[:, 0]]
    noise_rng = stream_rng(seed, "noise")
    noises, noise_pool, noise_kind = [], [], []
    kinds = ("pink", "brown", "babble", "hum")
    for p, pool in enumerate(POOLS):
        babble = [waves[i] for i in np.flatnonzero((word_pool == p) & np.isin(rows[:, 1], OFFSCREEN))] or \
                 [waves[i] for i in np.flatnonzero(word_pool == p)]
        for j in range(spec.noise_clips):
            kind = 3 if pool == "b" else j % 3
            x = audio.make_noise(noise_rng, kinds[kind], NOISE_SECONDS * audio.SAMPLE_RATE, babble)
            noises.append(np.clip(np.rint(x * 0.1 * 32767), -32768, 32767).astype(np.int16))
            noise_pool.append(p)
            noise_kind.append(kind)
    bank = {"word_voice": rows[:, 0].astype(np.int16), "word_id": rows[:, 1].astype(np.int8),
            "word_prosody": rows[:, 2].astype(np.int8), "word_pool": word_pool,
            "word_rate": rate.astype(np.int16), "word_pitch": pitch.astype(np.int16),
            "word_range": prange.astype(np.int16), "word_rt60": rt60.astype(np.float32),
            "voice_pool": voice_pool, "noise_pool": np.asarray(noise_pool, np.int8),
            "noise_kind": np.asarray(noise_kind, np.int8)}
    bank.update(pack("noise_wave", noises))
    meta = {"voices": names, "voice_pools": {pool: [names[v] for v in np.flatnonzero(voice_pool == p)]
                                             for p, pool in enumerate(POOLS)},
            "noise_kinds": list(kinds), "synth_s": round(t_synth, 2), "utterances": int(n)}
    return bank, meta, {"words": waves, "noises": noises}


def pack(name: str, waves: list[np.ndarray]) -> dict[str, np.ndarray]:
    lengths = np.asarray([w.size for w in waves], np.int64)
    return {name: np.concatenate(waves) if waves else np.zeros(0, np.int16), f"{name}_len": lengths,
            f"{name}_start": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)}


def unpack(bank: dict, name: str) -> list[np.ndarray]:
    flat, start, length = bank[name], bank[f"{name}_start"], bank[f"{name}_len"]
    return [flat[s: s + n] for s, n in zip(start, length)]


class AudioMixer:
    """The word and noise STFT banks of a build, and the per-segment timing rule shared by every split."""

    def __init__(self, words: list[np.ndarray], noises: list[np.ndarray]):
        self.words = audio.STFTBank(words)
        self.noises = audio.STFTBank(noises, lead=0)
        self.word_hops = np.asarray([-(-w.size // audio.HOP) for w in words], np.int64)
        self.noise_hops = self.noises.count - audio.FRAMES + 1

    def timing(self, rng, w1: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hop offsets of up to two words in a segment: a pause of 20-120 ms between them, both inside 1 s."""
        l1 = np.where(w1 >= 0, self.word_hops[np.maximum(w1, 0)], 0)
        l2 = np.where(w2 >= 0, self.word_hops[np.maximum(w2, 0)], 0)
        gap = np.where(w2 >= 0, rng.integers(2, 13, w1.shape), 0)
        fit = audio.SAMPLE_RATE // audio.HOP
        gap = np.clip(np.minimum(gap, fit - l1 - l2), 0, None)
        slack = np.clip(fit - l1 - l2 - gap, 0, None)
        k1 = (rng.random(w1.shape) * (slack + 1)).astype(np.int64)
        return k1, k1 + l1 + gap

    def noise(self, rng, noise_ids: np.ndarray) -> np.ndarray:
        return (rng.random(noise_ids.shape) * self.noise_hops[noise_ids]).astype(np.int64)

    def features(self, model: extractors.AudioNet, mix: dict[str, np.ndarray], chunk: int = 4096) -> np.ndarray:
        """(S, 128) extractor embeddings of flattened mixing parameters, in chunks (log-mel never all in memory)."""
        n = len(mix["w1"])
        out = np.empty((n, extractors.AUDIO_DIM), np.float32)
        for s in range(0, n, chunk):
            part = {k: v[s: s + chunk] for k, v in mix.items()}
            out[s: s + chunk] = extractors.audio_features(model, audio.mix_log_mel(self.words, self.noises, part))
        return out


def gains(rng, shape, snr_db: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g1 = rng.uniform(0.5, 1.0, shape)
    g2 = g1 * rng.uniform(0.8, 1.25, shape)
    gn = g1 * 10.0 ** (-rng.uniform(snr_db[0], snr_db[1], shape) / 20.0)
    return g1.astype(np.float16), g2.astype(np.float16), gn.astype(np.float16)


def train_audio_extractor(seed: int, spec: Scale, bank: dict, mixer: AudioMixer) -> tuple[dict, dict]:
    """Isolated-word recognition (34 words or noise) on the extractor voices: 4/5 train, 1/5 held out."""
    ex_voices = np.flatnonzero(bank["voice_pool"] == EXTRACTOR)
    order = stream_rng(seed, "extractor-held-voices").permutation(len(ex_voices))
    held = ex_voices[order[: max(1, len(ex_voices) // 5)]]
    noise_ids = np.flatnonzero(bank["noise_pool"] == EXTRACTOR)
    ex_words = np.flatnonzero(bank["word_pool"] == EXTRACTOR)

    def task(rng, words, n):
        w = words[rng.integers(0, len(words), n)]
        w = np.where(rng.random(n) < 1 / (len(classes.WORDS) + 1), -1, w)
        none = np.full(n, -1, np.int64)
        k1, _ = mixer.timing(rng, w, none)
        noise = noise_ids[rng.integers(0, len(noise_ids), n)]
        g1, _, gn = gains(rng, n, (0.0, 20.0))
        mix = {"w1": w, "k1": k1, "g1": g1, "w2": none, "k2": none, "g2": g1, "noise": noise,
               "q": mixer.noise(rng, noise), "gn": gn}
        label = np.where(w >= 0, bank["word_id"][np.maximum(w, 0)], classes.NOISE_WORD)
        return audio.mix_log_mel(mixer.words, mixer.noises, mix), label

    in_held = np.isin(bank["word_voice"][ex_words], held)
    x, y = task(stream_rng(seed, "extractor-audio"), ex_words[~in_held], spec.extractor_segments)
    xh, yh = task(stream_rng(seed, "extractor-audio-held"), ex_words[in_held], max(500, spec.extractor_segments // 5))
    model = extractors.init(extractors.AudioNet, seed, num_classes=len(classes.WORDS) + 1)
    model.scale.copy_(model.scale.new_tensor([float(x.mean()), float(x.std())]))
    extractors.fit(model, x, y, seed, spec.extractor_epochs)
    emb = extractors.audio_features(model, x)
    out = extractors.state(model, "audio_net")
    out.update({"audio_net_stats/mean": emb.mean(0), "audio_net_stats/std": np.maximum(emb.std(0), 1e-3),
                "extractor_audio_voices": np.unique(bank["word_voice"][ex_words[~in_held]]).astype(np.int16)})
    meta = {"task": f"isolated-word recognition, {len(classes.WORDS) + 1} classes (28 number words, "
                    f"{len(classes.OFFSCREEN_WORDS)} other words, noise) on 1-s segments at 0-20 dB SNR",
            "train_voices": int(len(ex_voices) - len(held)), "held_out_voices": int(len(held)),
            "train_segments": int(len(x)), "held_out_accuracy": round(extractors.accuracy(model, xh, yh), 4),
            "train_accuracy": round(extractors.accuracy(model, x[:2000], y[:2000]), 4),
            "chance": round(float(np.bincount(yh).max() / len(yh)), 4)}
    return out, meta


# ------------------------------------------------------------------------------------------------------ vision


def vision_bank(seed: int, spec: Scale, sources_dir: Path, prefer: str) -> tuple[dict, dict]:
    main, main_labels, main_src = vision.load_digit_images(str(sources_dir), prefer)
    other, other_labels, other_src = vision.domain_b_images()
    main_pool = split_pools(stream_rng(seed, "images"), len(main), IMAGE_SHARES)
    images = np.concatenate([main, other])
    labels = np.concatenate([main_labels, other_labels]).astype(np.int8)
    pools = np.concatenate([main_pool, np.full(len(other), POOLS.index("b"), np.int8)])
    rng = stream_rng(seed, "clutter")
    frags, frag_pool, fields, field_pool = [], [], [], []
    for p, pool in enumerate(POOLS):
        src = images[pools == p]
        frags.append(vision.make_fragments(rng, src, spec.fragments))
        frag_pool.append(np.full(spec.fragments, p, np.int8))
        fields.append(vision.make_noise_fields(rng, spec.noise_fields, "speckle" if pool == "b" else "smooth"))
        field_pool.append(np.full(spec.noise_fields, p, np.int8))
    bank = {"image_label": labels, "image_pool": pools, "image_small": vision.shrink(images, vision.SPRITE),
            "fragment": np.concatenate(frags), "fragment_pool": np.concatenate(frag_pool),
            "field": np.concatenate(fields), "field_pool": np.concatenate(field_pool)}
    meta = {"main": main_src, "domain_b": other_src,
            "image_pool_sizes": {pool: int((pools == p).sum()) for p, pool in enumerate(POOLS)}}
    return bank, meta


def train_vision_extractor(seed: int, spec: Scale, bank: dict) -> tuple[dict, dict]:
    """Single-digit recognition (0-9 or none) on canvases of extractor-pool images: 4/5 train, 1/5 held out."""
    ex_images = np.flatnonzero(bank["image_pool"] == EXTRACTOR)
    ex_images = ex_images[stream_rng(seed, "extractor-held-images").permutation(len(ex_images))]
    n_held = max(1, len(ex_images) // 5)
    held, train = ex_images[:n_held], ex_images[n_held:]
    frags = np.flatnonzero(bank["fragment_pool"] == EXTRACTOR)
    fields = np.flatnonzero(bank["field_pool"] == EXTRACTOR)
    x, y = vision.single_digit_canvases(stream_rng(seed, "extractor-vision"), bank, train, frags, fields,
                                        spec.extractor_canvases, (1, 3))
    xh, yh = vision.single_digit_canvases(stream_rng(seed, "extractor-vision-held"), bank, held, frags, fields,
                                          max(500, spec.extractor_canvases // 5), (1, 3))
    model = extractors.fit(extractors.init(extractors.DigitNet, seed), x, y, seed, spec.extractor_epochs)
    grid = extractors.video_features(model, x[:4000]).reshape(-1, extractors.VIDEO_DIM)
    out = extractors.state(model, "digit_net")
    out.update({"digit_net_stats/mean": grid.mean(0), "digit_net_stats/std": np.maximum(grid.std(0), 1e-3),
                "extractor_images": np.sort(train).astype(np.int32)})
    meta = {"task": "single handwritten digit recognition, 11 classes (0-9 or none) on 40x40 cluttered canvases",
            "train_images": int(len(train)), "held_out_images": int(len(held)), "train_canvases": int(len(x)),
            "held_out_accuracy": round(extractors.accuracy(model, xh, yh), 4),
            "train_accuracy": round(extractors.accuracy(model, x[:2000], y[:2000]), 4),
            "chance": round(float(np.bincount(yh).max() / len(yh)), 4)}
    return out, meta


# ------------------------------------------------------------------------------------------------------ clips


def text_bank(spec: Scale, tables: dict[str, dict]) -> tuple[dict, dict]:
    """Embed the sentences the clips use (unique keys) and point each clip's ``t_idx`` at its row."""
    keys = np.unique(np.concatenate([c["t_key"] for c in tables.values()]), axis=0)
    cls = classes.ClassSet(spec.classes)
    texts = [text.sentence(cls.spoken, int(s), int(t), int(a), int(b)) for s, t, a, b in keys]
    t0 = time.perf_counter()
    feats, ids, lengths = text.embed_tokens(texts)
    labels = text.token_labels(ids, keys[:, 2:].astype(np.int64), text.number_word_ids(cls.spoken))
    for c in tables.values():
        c["t_idx"] = _rows_of(keys, c.pop("t_key")).astype(np.int32)
    bank = {"text_feat": feats.astype(np.float16), "text_ids": ids.astype(np.int32), "text_len": lengths,
            "text_key": keys, "text_token_label": labels}
    return bank, {"sentences": texts, "embed_s": round(time.perf_counter() - t0, 2)}


def _rows_of(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row of each key in a sorted unique table (rows compared as tuples)."""
    view = lambda a: np.ascontiguousarray(a).view([("", a.dtype)] * a.shape[1]).ravel()   # noqa: E731
    return np.searchsorted(view(table), view(keys.astype(table.dtype)))


# ------------------------------------------------------------------------------------------------------ driver
