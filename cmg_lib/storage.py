"""Everything that touches the disk outside the data readers: the one cache root, atomic writes, the run lock.

* :func:`cache_root` is the single answer to "where do datasets, runs and results live": ``cache_dir`` when given,
  else ``$CMG_CACHE``, else ``~/.cache/cmg`` (``make`` sets ``CMG_CACHE=./.cache``).
* Every file the library writes goes through :func:`atomic_write` (bytes or text), :func:`atomic_write_json` or
  :func:`atomic_torch_save`: the content goes to a uniquely named temp file in the same folder (owner pid and a
  random suffix, so two writers never share one), then ``os.replace`` puts it in place. A crash leaves the old file
  or the new one, never half of either. :func:`atomic_directory` does the same for a whole folder.
  A write that runs out of space fails in one line (:class:`NotWritableError`, "no space left") and leaves the old
  file in place.
* :func:`locked` is an OS lock (``flock``, through the ``filelock`` package) that makes a second process wait for
  the holder; the kernel drops it when the holder dies, so a killed run's lock is free at once.
* :func:`check_writable` proves a folder can take files (create, write, rename, remove a probe) before any work;
  :func:`writable_cache_root` does it for the cache root, naming ``CMG_CACHE`` when that is what is wrong;
  :func:`clean_stale` removes the temp entries that killed processes left behind.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import filelock
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


CACHE_ENV = "CMG_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else env ``CMG_CACHE``, else ``~/.cache/cmg`` (absolute).

    A ``CMG_CACHE`` that cannot be a folder (it, or a folder above it, is a file; or it is missing and cannot be
    created) is a :class:`NotWritableError` naming ``CMG_CACHE``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser().absolute()
    env = os.environ.get(CACHE_ENV)
    if not env:
        return (Path.home() / ".cache" / "cmg").absolute()
    root = Path(env).expanduser().absolute()
    existing = next(p for p in (root, *root.parents) if os.path.exists(p))
    if not existing.is_dir():
        where = "is a file" if existing == root else f"is under {existing}, which is a file"
        raise _cache_env_error(env, f"{where}, not a folder")
    if existing != root and not os.access(existing, os.W_OK | os.X_OK):
        raise _cache_env_error(env, f"does not exist and {existing} does not let this user create it")
    return root


def _cache_env_error(env: str, reason: str) -> NotWritableError:
    return NotWritableError(f"{CACHE_ENV}={env} {reason}; expected {CACHE_ENV} to name a folder this user can "
                            f"write into (or unset it to use ~/.cache/cmg)")


def writable_cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """:func:`cache_root` after :func:`check_writable` proved it can take files; the error names ``CMG_CACHE``
    when the folder came from it."""
    root = cache_root(cache_dir)
    try:
        return check_writable(root)
    except NotWritableError as err:
        if cache_dir is None and os.environ.get(CACHE_ENV):
            raise _cache_env_error(os.environ[CACHE_ENV], f"cannot be written: {err}") from None
        raise


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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path, err) from None
        raise
    return path


def disk_full(path: Path, err: OSError) -> NotWritableError:
    """The one-line error for a write of ``path`` that ran out of space (``ENOSPC``) or quota (``EDQUOT``)."""
    free = shutil.disk_usage(path.parent).free
    return NotWritableError(f"no space left to write {path} ({err.strerror}; {free / 2 ** 20:.1f} MiB free there "
                            f"without the partial file); {path.name} was not replaced: free space or write elsewhere")


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


def atomic_torch_save(obj: Any, path: str | os.PathLike, **save_options: Any) -> Path:
    """``torch.save`` atomically: a kill during the write leaves the previous file (or none), never a partial one.

    The bytes go through a Python file object that keeps the ``OSError`` of a failed write, since torch's C++
    writer drops it and fails later with "unexpected pos": a full disk is then ``ENOSPC`` (one line, see
    :func:`atomic_write_with`). ``save_options`` go to ``torch.save``."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            sink = _ErrorKeepingWriter(f)
            try:
                torch.save(obj, sink, **save_options)
            except Exception:
                if sink.error is not None:
                    raise sink.error from None
                raise
    return atomic_write_with(path, write)


class _ErrorKeepingWriter:
    """A binary file's ``write`` that remembers the ``OSError`` it raised (``error``)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


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


_HELD: dict[tuple[str, int], int] = {}     # (lock path, thread id) -> how deep that thread holds it


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike, timeout: float | None = None, poll: float = 2.0) -> Iterator[Path]:
    """Hold the exclusive OS lock on ``lock_path`` for the block.

    The lock is ``flock`` on the file (``filelock.UnixFileLock``, never its pid-based soft fallback): the kernel
    grants it to one open file at a time and drops it when the holder's process dies, so there is no stale lock to
    take over and no race between waiters. While another process (or thread) holds it, wait (``poll`` s between
    tries; ``timeout`` s at most, None = for ever, 0 = one try), then :class:`LockHeld` naming the holder, whose
    ``{"pid", "host", "since"}`` the lock file holds. Re-entrant in one thread: a nested ``locked`` of a path this
    thread holds passes through. On release the file is removed while still locked; a waiter that opened it
    before sees it unlinked and tries again on the new file.
    """
    lock_path = Path(lock_path).absolute()
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    key = (str(lock_path), threading.get_ident())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield lock_path
        finally:
            _HELD[key] -= 1
        return

    def write_holder(fd: int) -> None:
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)

    lock = filelock.UnixFileLock(lock_path, timeout=-1 if timeout is None else max(float(timeout), 0.0),
                                 poll_interval=max(poll, 1e-3), preserve_lock_file=True, on_acquired=write_holder)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = lock_holder(lock_path)
        who = f"pid {holder['pid']} on {holder.get('host', '?')}" if "pid" in holder else "another process"
        waited = f" for more than {timeout} s" if timeout else ""
        raise LockHeld(f"{lock_path} is held by {who}{waited}; wait for it to finish (the lock is freed when that "
                       "process ends)", lock_path, holder) from None
    except OSError as err:
        raise NotWritableError(f"cannot lock {lock_path}: {err.strerror or err}; expected a folder on a file "
                               "system with file locks (flock)") from None
    _HELD[key] = 1
    try:
        yield lock_path
    finally:
        del _HELD[key]
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()                 # while still held: no one can hold a file that is then removed
        lock.release()


def lock_holder(lock_path: str | os.PathLike) -> dict:
    """The ``{"pid", "host", "since"}`` its holder wrote into a lock file; {} when unknown."""
    try:
        holder = json.loads(Path(lock_path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


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


def clean_stale(folder: str | os.PathLike, min_age: float = STALE_AGE_S, name: str | None = None) -> list[Path]:
    """Remove the temp entries of ``folder`` (names with ``TMP_MARK`` then a pid) whose owner process no longer
    exists on this host and that are at least ``min_age`` s old (``name``: only the temp entries of that final
    name, ``.<name>.tmp-...``); return what was removed.

    The age guard keeps the entries of a live writer on another host sharing this folder (its pid means nothing
    here) unless they have been untouched for ``min_age`` s. Errors (a racing cleaner, no permission) are ignored.
    """
    removed = []
    try:
        prefix = f".{name}{TMP_MARK}" if name is not None else ""
        entries = [e for e in os.scandir(folder) if TMP_MARK in e.name and e.name.startswith(prefix)]
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
