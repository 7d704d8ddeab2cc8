"""File-level readers for the authors' released feature formats (book/official_data.md).

* **Feature zips** ("zip-of-pickle"): ``{base}/{id}.zip`` holding one or more members whose name contains ``.pkl``;
  the released loaders unpickle every such member in turn and keep the **last** one, which must be a numpy array.
  We read only that last member (same result; earlier members are never executed).
* **Unpickling is a code-execution risk**: a pickle can name any importable callable. :class:`NumpyOnlyUnpickler`
  resolves only the handful of numpy globals that plain ndarray pickles use (protocols 2-5, numpy 1 and numpy 2
  module names) and raises :class:`pickle.UnpicklingError` on anything else; object arrays are refused too.
* **Time fitting**: audio arrays are padded by repeating the last row or truncated (10 rows, 5 for AVS), as the
  released ``__getitem__`` methods do (e.g. ``VGGSOUND_dataset.py:54-59``).
* **HDF5** (AVE): :class:`H5Rows` checks key and shape once, then reads rows lazily with a per-process handle.
* **Damage names itself**: a file that is not a readable zip or HDF5 file, and any NaN or infinite feature value,
  is a ValueError naming the file (and the row: :func:`check_finite`).
* Plain text tables: category lists (one class per line, class id = line index) and csv files read with the stdlib
  ``csv`` module (comma, or tab for the AVVP annotation files).
"""
from __future__ import annotations

import csv
import io
import os
import contextlib
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

try:  # numpy >= 2 keeps the implementation modules under numpy._core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.numeric import _frombuffer as _np_frombuffer
import codecs

# (module, name) -> object: everything a pickled plain ndarray can reference, under numpy 1 and numpy 2 names.
# ``_codecs.encode`` appears in protocol-2 pickles (bytes written as latin-1 text); it only re-encodes strings.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("_codecs", "encode"): codecs.encode,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays and nothing else (no arbitrary callables, no object arrays)."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: official feature pickles may only contain a numpy "
                f"array (allowed: {sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS)})") from None


def load_numpy_pickle(data: bytes, source: str) -> np.ndarray:
    """Unpickle ``data`` with :class:`NumpyOnlyUnpickler`; ``source`` names the file in error messages."""
    try:
        obj = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(f"{source}: {err}") from None
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"{source}: expected a pickled numpy array, found {type(obj).__name__}")
    if obj.dtype.kind not in "biuf":
        raise ValueError(f"{source}: expected a numeric numpy array, found dtype {obj.dtype}")
    return obj


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError saying what the file should contain."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}: expected {what}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"missing folder {path}: expected {what}")
    return path


def check_shape(array_shape: Sequence[int], expected: Sequence[int | None], source: str, key: str) -> None:
    """Raise a ValueError naming ``source``/``key`` if the shape differs from ``expected`` (``None`` = any size)."""
    shape = tuple(int(s) for s in array_shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{source}: {key} has shape {shape}, expected {want}")


def check_finite(array: np.ndarray, source: str, first_row: int = 0) -> np.ndarray:
    """``array`` if every value is finite, else a ValueError naming ``source`` and the first bad row (row numbers
    start at ``first_row``) and how many rows are affected."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1) if array.ndim else np.array([True])
        rows = np.flatnonzero(bad)
        raise ValueError(f"{source}: NaN or infinite values in row {first_row + int(rows[0])} ({len(rows)} of "
                         f"{len(bad)} rows affected); expected finite features")
    return array


def read_feature_zip(path: Path, expected: Sequence[int | None], what: str) -> np.ndarray:
    """The array pickled in the last ``.pkl`` member of ``path``, shape-checked against ``expected`` and finite."""
    require_file(path, f"a zip holding a pickled numpy array of {what}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if ".pkl" in name]
            if not members:
                raise ValueError(f"{path}: no member whose name contains '.pkl' (expected a pickled array of {what})")
            member = members[-1]
            raw = archive.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable zip archive ({_first_line(err)}); expected a zip holding a "
                         f"pickled numpy array of {what}") from None
    array = load_numpy_pickle(raw, f"{path}::{member}")
    check_shape(array.shape, expected, f"{path}::{member}", "array")
    return check_finite(array, f"{path}::{member}")


def _first_line(err: BaseException) -> str:
    return ((str(err).splitlines() or [""])[0] or type(err).__name__)[:160]


@contextlib.contextmanager
def open_h5(path: Path, what: str):
    """``h5py.File(path, "r")``, with a ValueError naming the file when it is not readable HDF5."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({_first_line(err)}); expected {what}") from None
    with handle:
        yield handle


def fit_rows(array: np.ndarray, length: int, source: str) -> np.ndarray:
    """Pad by repeating the last row, or truncate, to exactly ``length`` rows (released audio handling)."""
    rows = array.shape[0]
    if rows == 0:
        raise ValueError(f"{source}: array has 0 rows, expected at least 1 to pad to {length}")
    if rows >= length:
        return array[:length]
    return np.concatenate([array, np.repeat(array[-1:], length - rows, axis=0)], axis=0)


def read_lines(path: Path, what: str) -> list[str]:
    """One entry per line, stripped (class id = line index, as ``generate_category_list`` upstream); trailing blank
    lines are dropped, inner ones kept so that line-aligned lists stay aligned."""
    require_file(path, what)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_table(path: Path, what: str, columns: Sequence[str] = (), delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    """Header and rows of a csv; raise ValueError if a named column is missing."""
    require_file(path, what)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter))
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header row and {what}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        sep = "tab" if delimiter == "\t" else repr(delimiter)
        raise ValueError(f"{path}: missing column(s) {missing} ({sep}-separated); found columns {header}")
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    return header, body


def column(header: list[str], rows: list[list[str]], name: str, path: Path) -> list[str]:
    j = header.index(name)
    short = [i for i, r in enumerate(rows) if len(r) <= j]
    if short:
        raise ValueError(f"{path}: data row {short[0] + 1} has no value for column {name!r}")
    return [r[j].strip() for r in rows]


def index_of(names: Sequence[str], values: Sequence[str], source: Path, what: str) -> np.ndarray:
    """Class ids of ``values`` in the category list ``names``; ValueError for an unknown one."""
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted({v for v in values if v not in lookup})
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} {what} not in the category list, e.g. {unknown[:3]}")
    return np.asarray([lookup[v] for v in values], dtype=np.int64)


class H5Rows:
    """Lazy row access to one HDF5 dataset: key and per-row shape are checked on construction; the file is opened
    on first read in each process (so DataLoader workers each get their own handle)."""

    def __init__(self, path: Path, key: str, row_shape: Sequence[int | None], what: str):
        self.path, self.key = require_file(path, f"an HDF5 file with dataset {key!r} of {what}"), key
        with open_h5(path, f"an HDF5 file with dataset {key!r} of {what}") as f:
            if key not in f:
                raise ValueError(f"{path}: no dataset {key!r} (expected {what}); found keys {sorted(f.keys())}")
            shape = f[key].shape
        check_shape(shape, (None, *row_shape), str(path), f"dataset {key!r}")
        self.shape = tuple(int(s) for s in shape)
        self._handle = None
        self._pid = None

    def __len__(self) -> int:
        return self.shape[0]

    def _dataset(self):
        import h5py

        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._handle[self.key]

    def _read(self, index, first_row: int) -> np.ndarray:
        try:
            data = np.asarray(self._dataset()[index])
        except (OSError, KeyError) as err:          # a file damaged after its header: h5py's read errors
            raise ValueError(f"{self.path}: cannot read dataset {self.key!r} from row {first_row} "
                             f"({_first_line(err)}); the file is damaged") from None
        return data

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` (finite, else a ValueError naming the file and row)."""
        data = self._read(int(i), int(i))
        check_finite(data[None], f"{self.path}: dataset {self.key!r}", int(i))
        return data

    def all(self) -> np.ndarray:
        return check_finite(self._read((), 0), f"{self.path}: dataset {self.key!r}")

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = state["_pid"] = None
        return state
