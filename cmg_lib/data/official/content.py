"""The content hash of an official-data folder: what a checkpoint pre-trained on it records as its data ``hash``
(``checkpoint.data_identity``) and what a resume and the downstream tasks compare, as they compare an AV-Digits
build's manifest hash.

It covers every file under the layout's entries that exist (``layout.LAYOUT`` with the user's overrides): sha256
over, in the order of entry name and relative path, each file's ``<entry>/<relative path>``, size and sha256 of
its bytes. A copy of the folder elsewhere has the same hash; any changed, added or removed file changes it.
Reading every byte of a release (tens of GB) takes minutes, so each file's digest is kept in
``CMG_CACHE/official-digests/<folder key>.json`` with its size and modification time, and read again only when
either changes (a cache that cannot be written is skipped).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tqdm.auto import tqdm

from ... import storage
from .layout import LAYOUT, Paths

CHUNK = 1 << 20


def layout_files(paths: Paths) -> list[tuple[str, Path]]:
    """``(label, path)`` of every file under the existing layout entries, label ``<entry>/<relative path>``
    (``<entry>`` for an entry that is a file), sorted by label."""
    found = []
    for name in sorted(LAYOUT):
        where = paths[name]
        if where.is_file():
            found.append((name, where))
        elif where.is_dir():
            found += [(f"{name}/{f.relative_to(where).as_posix()}", f) for f in where.rglob("*") if f.is_file()]
    return sorted(found)


def file_digest(path: Path) -> str:
    """sha256 of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(paths: Paths, progress: bool = True) -> str:
    """The content hash (hex sha256) of the official data under ``paths`` (see the module docstring); a progress
    bar in bytes while files not hashed before are read."""
    files = [(label, path, path.stat()) for label, path in layout_files(paths)]
    cache = _digest_cache(paths.root)
    try:
        known = storage.read_json(cache, default={}) if cache is not None else {}
    except ValueError:                                       # a damaged cache is recomputed
        known = {}
    stamp = {str(path): [st.st_size, st.st_mtime_ns] for _, path, st in files}
    todo = [(path, st) for _, path, st in files if known.get(str(path), [None, None])[:2] != stamp[str(path)]]
    with tqdm(total=sum(st.st_size for _, st in todo), unit="B", unit_scale=True, desc="hashing official data",
              disable=not (progress and todo)) as bar:
        for path, st in todo:
            known[str(path)] = [*stamp[str(path)], file_digest(path)]
            bar.update(st.st_size)
    if todo and cache is not None:
        try:
            storage.atomic_write_json(cache, {k: v for k, v in known.items() if k in stamp})
        except OSError:
            pass
    total = hashlib.sha256()
    for label, path, st in files:
        total.update(f"{label}\t{st.st_size}\t{known[str(path)][2]}\n".encode())
    return total.hexdigest()


def _digest_cache(root: Path) -> Path | None:
    """Where the per-file digests of the folder ``root`` are kept; None when the cache root is unusable."""
    try:
        base = storage.cache_root()
    except storage.NotWritableError:
        return None
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return base / "official-digests" / f"{key}.json"
