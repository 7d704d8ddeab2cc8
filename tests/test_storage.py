"""cmg_lib.storage: the one cache root, atomic writes (file, JSON, torch, directory, appended line), the lock."""
from __future__ import annotations

import json
import os
import threading

import pytest
import torch

from cmg_lib import storage


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CMG_CACHE", str(tmp_path / "env"))
    assert storage.cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert storage.cache_root() == tmp_path / "env"
    monkeypatch.delenv("CMG_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert storage.cache_root() == tmp_path / "home" / ".cache" / "cmg"


def test_atomic_directory_commits_on_success(tmp_path):
    final = tmp_path / "out"
    with storage.atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_leaves_nothing_after_a_crash(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with storage.atomic_directory(final) as tmp:
            (tmp / "half.bin").write_bytes(b"123")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    storage.atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        storage.atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_torch_save_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    storage.atomic_torch_save({"a": torch.ones(2)}, path)

    def failing(obj, f, *args, **kwargs):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError, match="disk full"):
        storage.atomic_torch_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_two_writers_of_one_file_use_different_temp_names(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    storage.atomic_write(tmp_path / "f", "one")
    storage.atomic_write(tmp_path / "f", "two")
    assert len(set(seen)) == 2 and all(n.startswith(f".f{storage.TMP_MARK}{os.getpid()}-") for n in seen)
    assert (tmp_path / "f").read_text() == "two"


def test_written_files_are_readable_by_others(tmp_path):
    storage.atomic_write_json(tmp_path / "m.json", {"a": 1})
    with storage.atomic_directory(tmp_path / "d") as tmp:
        (tmp / "x").write_text("1")
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_append_line_writes_whole_lines(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    threads = [threading.Thread(target=storage.append_line, args=(path, json.dumps({"i": i, "pad": "x" * 5000})))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert sorted(json.loads(line)["i"] for line in lines) == list(range(8))


def test_read_json_names_a_corrupt_file(tmp_path):
    assert storage.read_json(tmp_path / "none.json", default=[]) == []
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        storage.read_json(tmp_path / "bad.json")


def test_lock_waits_for_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": __import__("socket").gethostname()}))
    with storage.locked(lock, timeout=5, poll=0.01):           # the holder's pid does not exist: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(TimeoutError, match="held by"):
            with storage.locked(lock, timeout=0.05, poll=0.01):
                pass
    assert not lock.exists()
