"""Is a built AV-Digits folder intact? One check against its manifest, cheap or full, with one-line verdicts.

The manifest lists each file with the hash of its arrays (``files``) and, since issue 15, its size in bytes
(``file_sizes``; absent in older builds). :func:`verify_cache` with ``full=False`` (every load) checks that each file
exists, has its recorded size and opens as an ``.npz`` (its zip directory sits at the end, so a truncated file
fails); ``full=True`` (``data build``, and after a read error) also re-hashes every array.
"""
from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ... import storage
from .. import common


class DamagedCache(ValueError):
    """A build folder whose files do not match its manifest; the message names the file and how to rebuild."""


def file_sizes(folder: Path, names) -> dict[str, int]:
    """``{name: size in bytes}`` of the written files, for the manifest."""
    return {name: (Path(folder) / name).stat().st_size for name in names}


_BUILD_NAME = re.compile(r"avdigits-(?P<scale>[a-z]+)-seed(?P<seed>\d+)(?P<variant>(-c\d+)?(-r[0-9a-f]{8})?)-v\d+")


def rebuild_hint(folder: Path, manifest: dict) -> str:
    """How to rebuild a damaged build: the ``data build`` command for its scale and seed, read from the folder's
    name (the manifest may be the damaged part) or else from ``manifest``, with ``--out`` when the folder is not
    in the default cache; for a build with other classes or redundancy (no CLI flags) or unknown scale and seed,
    deleting it (the next load builds it again)."""
    folder = Path(folder)
    match = _BUILD_NAME.fullmatch(folder.name)
    scale, seed = (match["scale"], match["seed"]) if match else (manifest.get("scale"), manifest.get("seed"))
    if (match and match["variant"]) or scale is None or seed is None:
        return f"delete {folder} (the next load that asks for it builds it again)"
    try:
        default_root = storage.cache_root()
    except storage.NotWritableError:
        default_root = None
    out = "" if folder.parent == default_root else f" --out {folder.parent}"
    return (f"rebuild it with `python -m cmg_lib data build --scale {scale} --seed {seed}{out}` (which replaces "
            f"the damaged folder) or delete {folder}")


def verify_cache(folder: Path, manifest: dict, full: bool) -> None:
    """Raise :class:`DamagedCache` for the first file of ``manifest["files"]`` that is missing, of the wrong size,
    not a readable ``.npz`` or (``full``) whose arrays no longer hash to the manifest's value."""
    folder = Path(folder)
    sizes = manifest.get("file_sizes") or {}
    for name, digest in sorted(manifest.get("files", {}).items()):
        path = folder / name

        def damaged(what: str) -> DamagedCache:
            return DamagedCache(f"AV-Digits cache {folder} is damaged: {name} {what}; {rebuild_hint(folder, manifest)}")

        if not path.is_file():
            raise damaged("is missing")
        size = path.stat().st_size
        if name in sizes and size != int(sizes[name]):
            raise damaged(f"has {size} bytes, the manifest says {sizes[name]} (truncated or overwritten)")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files} if full else None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
            raise damaged(f"is not a readable .npz ({(str(err).splitlines() or [''])[0][:120]})") from None
        if full and common.hash_arrays(arrays).hexdigest() != digest:
            raise damaged("does not match the manifest's hash (its content changed)")


def reading(folder: Path, manifest: dict, name: str, read):
    """``read()`` (a load of ``folder/name``); on a read error, the full check names the damage, or failing that a
    :class:`DamagedCache` names ``name`` with the error."""
    try:
        return read()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as err:
        verify_cache(folder, manifest, full=True)
        raise DamagedCache(f"AV-Digits cache {folder}: reading {name} failed "
                           f"({(str(err).splitlines() or [type(err).__name__])[0][:120]}); "
                           f"{rebuild_hint(folder, manifest)}") from None
