"""AV-Digits cache damage (issue 15, item 6): sizes and readability checked on every load, hashes on ``data build``
and after a read error; the message names the file and how to rebuild."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time

import numpy as np
import pytest

from cmg_lib import storage
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


def _copying_builder(src, calls):
    """A stand-in for ``build._build_into`` that copies the files of the real build ``src`` (fast)."""
    def build_into(tmp, *args):
        calls.append(1)
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("derived"))
    return build_into


@pytest.mark.parametrize("content", ["", "{}"])
def test_an_emptied_manifest_gives_a_rebuild_command_that_works(avdigits_smoke, tmp_path, monkeypatch, capsys,
                                                              content):
    """Issue 26 item 6: the hint said ``--scale avdigits-smoke-seed0-v3 --seed ?``. It now names the scale and
    seed of the folder (and its cache), and running it (the builder stubbed by a copy of the real build) repairs
    the cache."""
    import cmg_lib.cli

    src = build.dataset_dir("smoke", 0, avdigits_smoke)
    dst = build.dataset_dir("smoke", 0, tmp_path)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("derived"))
    (dst / "manifest.json").write_text(content)
    with pytest.raises(DamagedCache) as err:
        avdigits.load("ave", "test", scale="smoke", cache_dir=tmp_path)
    message = str(err.value)
    assert message.startswith(f"AV-Digits cache {dst} is damaged: manifest.json ") and "\n" not in message
    command = message.split("`")[1]
    assert command == f"python -m cmg_lib data build --scale smoke --seed 0 --out {tmp_path}"
    calls = []
    monkeypatch.setattr(build, "_build_into", _copying_builder(src, calls))
    assert cmg_lib.cli.main(command.split()[3:]) == 0 and calls == [1]
    assert capsys.readouterr().out.splitlines()[-1] == json.loads((src / "manifest.json").read_text())["hash"]
    assert len(avdigits.load("ave", "test", scale="smoke", cache_dir=tmp_path)) > 0


def test_rebuild_hint_for_the_default_cache_and_for_variants(tmp_path, monkeypatch):
    monkeypatch.setenv("CMG_CACHE", str(tmp_path))
    hint = build.verify.rebuild_hint(build.dataset_dir("default", 3), {})
    assert hint == ("rebuild it with `python -m cmg_lib data build --scale default --seed 3` (which replaces the "
                    f"damaged folder) or delete {tmp_path / 'avdigits-default-seed3-v3'}")
    variant = build.dataset_dir("smoke", 0, num_classes=40)
    hint = build.verify.rebuild_hint(variant, {})
    assert hint == f"delete {variant} (the next load that asks for it builds it again)"


def _slow_fake_build(log, seconds):
    def build_into(tmp, *args):
        storage.append_line(log, f"start {os.getpid()}")
        time.sleep(seconds)
        _fake_build(tmp)
        storage.append_line(log, f"end {os.getpid()}")
    return build_into


def _build_in_child(root, log, seconds):
    build._build_into = _slow_fake_build(log, seconds)
    build.ensure_built("smoke", 5, root)


def test_two_builds_of_one_folder_run_one_after_the_other(tmp_path):
    """Issue 26 item 7: two builds of the same scale and seed into one cache ran side by side in two temp
    folders. Now the second waits on the folder's lock and finds it built: one build, nothing left over."""
    ctx = multiprocessing.get_context("fork")
    log = tmp_path / "builds.log"
    procs = [ctx.Process(target=_build_in_child, args=(tmp_path / "cache", log, 1.0)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "end"]          # one build, the other waited
    assert os.listdir(tmp_path / "cache") == ["avdigits-smoke-seed5-v3"]   # no temp folder, no lock file


def test_a_killed_builders_temp_folder_is_removed_by_the_next_build(tmp_path):
    """A builder killed mid-build leaves its temp folder (seconds old, so the 600-s age guard of clean_stale
    would keep it); the next builder, holding the lock the kernel freed, removes it and builds."""
    ctx = multiprocessing.get_context("fork")
    log, root = tmp_path / "builds.log", tmp_path / "cache"
    victim = ctx.Process(target=_build_in_child, args=(root, log, 600))
    victim.start()
    deadline = time.time() + 60
    while not log.exists() and time.time() < deadline:
        time.sleep(0.05)
    leftovers = [p for p in os.listdir(root) if storage.TMP_MARK in p]
    assert len(leftovers) == 1 and str(victim.pid) in leftovers[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    calls = []
    build._build_into, real = (lambda tmp, *a: calls.append(1) or _fake_build(tmp)), build._build_into
    try:
        folder = build.ensure_built("smoke", 5, root)
    finally:
        build._build_into = real
    assert calls == [1] and os.listdir(root) == [folder.name]


def test_cli_cmg_cache_under_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    """Issue 26 item 5: ``CMG_CACHE=afile/cache python -m cmg_lib data show`` was a NotADirectoryError traceback."""
    import cmg_lib.cli

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CMG_CACHE", str(tmp_path / "afile" / "cache"))
    assert cmg_lib.cli.main(["data", "show", "--scale", "smoke"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: CMG_CACHE={tmp_path / 'afile' / 'cache'} is under "
                                               f"{tmp_path / 'afile'}, which is a file, not a folder; expected "
                                               "CMG_CACHE to name a folder this user can write into (or unset it to "
                                               "use ~/.cache/cmg)")
