"""Everything that touches the disk outside the data readers: the one cache root, atomic writes, the run lock.

* :func:`cache_root` is the single answer to "where do datasets, runs and results live": ``cache_dir`` when given,
  else ``$CMG_CACHE``, else ``~/.cache/cmg`` (``make`` sets ``CMG_CACHE=./.cache``).
* Every file the library writes goes through :func:`atomic_write` (bytes or text), :func:`atomic_write_json` or
  :func:`atomic_torch_save`: the content goes to a uniquely named temp file in the same folder (owner pid and a
  random suffix, so two writers never share one), then ``os.replace`` puts it in place. A crash leaves the old file
  or the new one, never half of either. :func:`atomic_directory` does the same for a whole folder.
* :func:`locked` is the exclusive lock file that makes a second process wait for (or take over from a dead) holder.
* :func:`check_writable` proves a folder can take files (create, write, rename, remove a probe) before any work;
  :func:`clean_stale` removes the temp entries that killed processes left behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

TMP_MARK = ".tmp-"          # every temp name contains it: ".<name>.tmp-<pid>-<random>"
_TMP_OWNER = re.compile(re.escape(TMP_MARK) + r"(\d+)(?:-|$)")
STALE_AGE_S = 600.0         # a dead owner's temp entry is removed once it is this old (see clean_stale)


class NotWritableError(OSError):
    """A folder that cannot take files; the message names it and says what failed."""


class LockHeld(TimeoutError):
    """The lock is held by another live process; ``holder`` is its ``{"pid", "host", "since"}``."""

    def __init__(self, message: str, path: Path, holder: dict):
        super().__init__(message)
        self.path, self.holder = path, holder


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else env ``CMG_CACHE``, else ``~/.cache/cmg`` (absolute)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser().absolute()
    return Path(os.environ.get("CMG_CACHE") or Path.home() / ".cache" / "cmg").expanduser().absolute()


def _temp_path(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}{os.getpid()}-", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temp file beside ``path``, then rename it onto ``path`` (mode 0644).

    On any error the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    tmp = _temp_path(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return atomic_write_with(path, lambda tmp: tmp.write_bytes(raw))


def json_default(obj: Any) -> Any:
    """JSON for numpy/torch values (``tolist``), sets, tuples and paths; a TypeError names anything else."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} as JSON")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON, written atomically (the text is built before any file is touched)."""
    return atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=json_default))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically: a kill during the write leaves the previous file (or none), never a partial one."""
    return atomic_write_with(path, lambda tmp: torch.save(obj, tmp))


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp folder beside ``final``; rename it to ``final`` on success, delete it on any error.

    A crash inside the block leaves neither ``final`` nor a half-written folder under its name. If ``final``
    appeared meanwhile (a concurrent builder), the new copy is discarded and the existing one kept.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------------ the run lock

def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike, timeout: float | None = None, poll: float = 2.0) -> Iterator[Path]:
    """Hold the exclusive lock file ``lock_path`` for the block.

    While another live process holds it, wait (``poll`` s between looks; ``timeout`` s at most, then a
    TimeoutError naming the holder). A lock left by a dead process of this host is taken over.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    start = time.monotonic()
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock_path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                holder = {}
            if holder.get("host") == me["host"] and "pid" in holder and not pid_alive(int(holder["pid"])):
                with contextlib.suppress(FileNotFoundError):
                    lock_path.unlink()       # stale: its process died without cleaning up
                continue
            if timeout is not None and time.monotonic() - start >= timeout:
                who = (f"pid {holder['pid']} on {holder.get('host', '?')}" if "pid" in holder
                       else "another process")
                waited = f" for more than {timeout} s" if timeout > 0 else ""
                raise LockHeld(f"{lock_path} is held by {who}{waited}; delete it if that process is gone",
                               lock_path, holder)
            time.sleep(poll)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents), then write, rename and remove a probe file in it; a
    :class:`NotWritableError` naming the folder if any of that fails (also when ``folder`` is an existing file)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotWritableError(f"{folder} exists and is not a folder; expected a folder to write into")
    probe = moved = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _temp_path(folder / "write-probe")
        probe.write_bytes(b"probe")
        moved = probe.with_name(probe.name + "-renamed")
        os.replace(probe, moved)
        probe = None
        moved.unlink()
    except OSError as err:
        for leftover in (probe, moved):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.unlink()
        reason = err.strerror or type(err).__name__
        raise NotWritableError(f"cannot write into folder {folder}: {reason} ({err.filename or folder}); "
                               "expected a folder this user can create files in") from None
    return folder


def check_appendable(path: str | os.PathLike) -> Path:
    """Check before any work that records can be appended to the file ``path``: not a folder, its folder
    creatable and writable (:func:`check_writable`), the file itself writable if it exists."""
    path = Path(path)
    if path.is_dir():
        raise NotWritableError(f"{path} is a folder; expected a file to append records to (e.g. {path / 'results.jsonl'})")
    check_writable(path.parent)
    if path.exists() and not os.access(path, os.W_OK):
        raise NotWritableError(f"cannot append to {path}: permission denied")
    return path


def clean_stale(folder: str | os.PathLike, min_age: float = STALE_AGE_S) -> list[Path]:
    """Remove the temp entries of ``folder`` (names with ``TMP_MARK`` then a pid) whose owner process no longer
    exists on this host and that are at least ``min_age`` s old; return what was removed.

    The age guard keeps the entries of a live writer on another host sharing this folder (its pid means nothing
    here) unless they have been untouched for ``min_age`` s. Errors (a racing cleaner, no permission) are ignored.
    """
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if TMP_MARK in e.name]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        owner = _TMP_OWNER.search(entry.name)
        if owner is None or int(owner.group(1)) == os.getpid() or pid_alive(int(owner.group(1))):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < min_age:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to ``path`` with ONE ``os.write`` on an ``O_APPEND`` descriptor, then fsync: concurrent
    writers never interleave and a crash never leaves half a line (parent folders are created)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON value stored at ``path``; ``default`` when the file does not exist; a ValueError naming the file
    when it is not valid JSON."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to recompute") from None
