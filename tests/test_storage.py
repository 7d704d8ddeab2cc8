"""cmg_lib.storage: the one cache root, atomic writes (file, JSON, torch, directory, appended line), the lock."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading
import time

from pathlib import Path

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
        f.write(b"partial")
        raise OSError("disk broke")
    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError, match="disk broke"):
        storage.atomic_torch_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path, monkeypatch):
    """ENOSPC from a write (as a full device gives it: torch.save then writes to a Python file object) becomes
    one NotWritableError line saying "no space left"; the previous file is kept, no temp file is left."""
    path = tmp_path / "x.pt"
    storage.atomic_torch_save({"a": torch.ones(2)}, path)
    real_open = open

    def full_device(file, mode="r", *args, **kwargs):
        if "w" in mode and storage.TMP_MARK in str(file):
            return real_open("/dev/full", mode, *args, **kwargs)   # every write: ENOSPC
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr("builtins.open", full_device)
    with pytest.raises(storage.NotWritableError) as err:
        storage.atomic_torch_save({"a": torch.zeros(100_000)}, path)
    monkeypatch.undo()
    message = str(err.value)
    assert message.startswith(f"no space left to write {path} (No space left on device; ") and "\n" not in message
    assert message.endswith("x.pt was not replaced: free space or write elsewhere")
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_cmg_cache_that_cannot_be_a_folder_names_cmg_cache(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    for value, reason in ((tmp_path / "afile" / "cache", f"is under {tmp_path / 'afile'}, which is a file"),
                          (tmp_path / "afile", "is a file")):
        monkeypatch.setenv("CMG_CACHE", str(value))
        with pytest.raises(storage.NotWritableError) as err:
            storage.cache_root()
        assert str(err.value) == (f"CMG_CACHE={value} {reason}, not a folder; expected CMG_CACHE to name a folder "
                                  "this user can write into (or unset it to use ~/.cache/cmg)")
    assert storage.cache_root(tmp_path / "given") == tmp_path / "given"      # an explicit folder is not checked


def test_unwritable_cmg_cache_names_cmg_cache(tmp_path, monkeypatch):
    """Permissions are simulated (the tests may run as root, who writes anywhere): ``os.access`` says no for the
    parent of a missing CMG_CACHE; the write probe is refused in an existing one."""
    parent = tmp_path / "ro"
    parent.mkdir()
    monkeypatch.setattr(storage.os, "access", lambda path, mode: Path(path) != parent)
    monkeypatch.setenv("CMG_CACHE", str(parent / "cache"))
    with pytest.raises(storage.NotWritableError) as err:
        storage.cache_root()
    assert str(err.value).startswith(f"CMG_CACHE={parent / 'cache'} does not exist and {parent} does not let this "
                                     "user create it; expected CMG_CACHE to name a folder")
    monkeypatch.setenv("CMG_CACHE", str(parent))
    assert storage.cache_root() == parent                      # reading an existing cache needs no write

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path.parent))
    monkeypatch.setattr(storage, "_temp_path", refuse)
    with pytest.raises(storage.NotWritableError) as err:
        storage.writable_cache_root()
    assert str(err.value).startswith(f"CMG_CACHE={parent} cannot be written: cannot write into folder {parent}: "
                                     "Permission denied")


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


def test_lock_excludes_other_threads_is_reentrant_in_one_and_ignores_a_leftover_file(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname()}))  # a dead run's file
    with storage.locked(lock, timeout=0):                      # a file nobody holds locked is no lock
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with storage.locked(lock, timeout=0):                  # the same thread again: passes through
            pass
        assert lock.exists()
        errors = []

        def other():
            try:
                with storage.locked(lock, timeout=0.05, poll=0.01):
                    errors.append(None)
            except storage.LockHeld as err:
                errors.append(err)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert isinstance(errors[0], storage.LockHeld) and errors[0].holder["pid"] == os.getpid()
        assert str(errors[0]) == (f"{lock} is held by pid {os.getpid()} on {socket.gethostname()} for more than "
                                  "0.05 s; wait for it to finish (the lock is freed when that process ends)")
    assert not lock.exists()


def _hold_for_ever(lock, ready):
    with storage.locked(lock):
        ready.set()
        time.sleep(600)


def _count_holders(lock, log, rounds):
    for _ in range(rounds):
        with storage.locked(lock, timeout=60, poll=0.002):
            storage.append_line(log, f"in {os.getpid()}")
            time.sleep(0.003)
            storage.append_line(log, f"out {os.getpid()}")


def test_lock_is_freed_when_its_holder_is_killed_and_waiters_never_hold_it_together(tmp_path):
    """A holder killed with SIGKILL releases the lock (the kernel drops it: no takeover, no pid test); six
    processes then take it 15 times each, and the log shows every hold closed before the next one opens."""
    ctx = multiprocessing.get_context("fork")
    lock, log = tmp_path / "run.lock", tmp_path / "holds.log"
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_for_ever, args=(lock, ready))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(storage.LockHeld) as err:
        with storage.locked(lock, timeout=0):
            pass
    assert err.value.holder["pid"] == holder.pid
    waiters = [ctx.Process(target=_count_holders, args=(lock, log, 15)) for _ in range(6)]
    for w in waiters:
        w.start()
    time.sleep(0.2)
    assert not log.exists()                                    # everyone waits for the holder
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    for w in waiters:
        w.join(120)
        assert w.exitcode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 6 * 15 * 2
    assert all(a.split()[0] == "in" and b == f"out {a.split()[1]}" for a, b in zip(lines[::2], lines[1::2]))
    assert not lock.exists()
