"""AV-Digits cache damage (issue 15, item 6): sizes and readability checked on every load, hashes on ``data build``
and after a read error; the message names the file and how to rebuild."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cmg_lib.data import avdigits, common
from cmg_lib.data.avdigits import build
from cmg_lib.data.avdigits.verify import DamagedCache, file_sizes, verify_cache


def _fake_build(folder):
    """A two-file build folder with a real manifest (hashes and sizes), without running the builder."""
    files = {"banks.npz": {"x": np.arange(50.0)}, "clips/pretrain.npz": {"label": np.arange(40)}}
    (folder / "clips").mkdir(parents=True)
    for name, arrays in files.items():
        np.savez(folder / name, **arrays)
    manifest = {"format": build.FORMAT, "scale": "smoke", "seed": 5,
                "files": {n: common.hash_arrays(a).hexdigest() for n, a in files.items()},
                "file_sizes": file_sizes(folder, files)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _flip_middle_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_verify_cache_known_answers(tmp_path):
    manifest = _fake_build(tmp_path)
    verify_cache(tmp_path, manifest, full=True)                     # intact: silent
    _flip_middle_byte(tmp_path / "banks.npz")                       # same size, content changed
    verify_cache(tmp_path, manifest, full=False)                    # the cheap check cannot see it ...
    with pytest.raises(DamagedCache, match=r"banks\.npz (does not match the manifest's hash|is not a readable)"):
        verify_cache(tmp_path, manifest, full=True)                 # ... the full one does
    raw = (tmp_path / "clips/pretrain.npz").read_bytes()
    (tmp_path / "clips/pretrain.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DamagedCache, match=rf"clips/pretrain\.npz has {len(raw) // 2} bytes, the manifest says "
                                           rf"{len(raw)} .*data build --scale smoke --seed 5"):
        verify_cache(tmp_path, manifest, full=False)
    del manifest["file_sizes"]                                       # an older build: the zip directory is checked
    with pytest.raises(DamagedCache, match=r"clips/pretrain\.npz is not a readable \.npz"):
        verify_cache(tmp_path, manifest, full=False)
    (tmp_path / "clips/pretrain.npz").unlink()
    with pytest.raises(DamagedCache, match=r"clips/pretrain\.npz is missing"):
        verify_cache(tmp_path, manifest, full=False)


def test_ensure_built_refuses_a_damaged_build_and_repair_rebuilds_it(tmp_path, monkeypatch):
    folder = build.dataset_dir("smoke", 5, tmp_path)
    _fake_build(folder)
    raw = (folder / "clips/pretrain.npz").read_bytes()
    (folder / "clips/pretrain.npz").write_bytes(raw[:100])
    calls = []
    monkeypatch.setattr(build, "_build_into", lambda tmp, *a: calls.append(1) or _fake_build(tmp))
    with pytest.raises(DamagedCache, match=r"is damaged: clips/pretrain\.npz has 100 bytes"):
        build.ensure_built("smoke", 5, tmp_path)
    assert calls == []
    assert build.ensure_built("smoke", 5, tmp_path, repair=True) == folder and calls == [1]
    assert (folder / "clips/pretrain.npz").read_bytes() == raw
    (folder / "manifest.json").write_text("{trunc")
    with pytest.raises(DamagedCache, match=r"manifest\.json is unreadable"):
        build.ensure_built("smoke", 5, tmp_path)


def test_a_damaged_clip_table_in_a_real_cache_names_itself_on_load(avdigits_smoke, tmp_path):
    src = build.dataset_dir("smoke", 0, avdigits_smoke)
    dst = build.dataset_dir("smoke", 0, tmp_path)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("derived"))
    _flip_middle_byte(dst / "clips" / "ave_test.npz")               # passes the size check; fails when read
    ds = avdigits.load("ave", "test", scale="smoke", cache_dir=tmp_path)
    with pytest.raises(DamagedCache, match=r"clips/ave_test\.npz .*data build --scale smoke --seed 0") as err:
        ds[0]
    assert str(dst) in str(err.value) and "\n" not in str(err.value)
