"""Downstream results as JSON lines: one object per run, appended atomically; read back into records or a table.

``append_result`` dumps the whole record first, then writes the line with ONE ``os.write`` on an ``O_APPEND`` file
descriptor (and fsyncs), so concurrent writers never interleave and a crash never leaves half a line behind.
Non-finite floats are stored as ``null`` so every line is strict JSON.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

TABLE_COLUMNS = ("task", "direction", "train_modality", "test_modality", "protocol", "seed", "method", "preset",
                 "pretrain_key", "best_epoch", "n_train", "n_test", "wall_time_s")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def append_result(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (parent folders are created)."""
    if not isinstance(record, dict):
        raise ValueError(f"a result record must be a dict, got {type(record).__name__}")
    line = (json.dumps(_finite(record), allow_nan=False, sort_keys=True) + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines results file, in order (blank lines skipped; a corrupt line raises ValueError)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not a JSON object: {err}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number} holds a {type(record).__name__}, expected a JSON object")
            records.append(record)
    return records


def results_table(source: str | os.PathLike | Iterable[dict[str, Any]]):
    """A pandas DataFrame, one row per run: the bookkeeping columns of ``TABLE_COLUMNS`` then one column per metric."""
    import pandas as pd
    records = read_results(source) if isinstance(source, (str, os.PathLike)) else list(source)
    rows = []
    for r in records:
        pretrain = r.get("pretrain") or {}
        row = {"method": pretrain.get("method"), "preset": pretrain.get("preset")}
        row.update({k: r.get(k) for k in TABLE_COLUMNS if k not in row})
        row.update(r.get("metrics", {}))
        rows.append(row)
    metric_cols = sorted({k for r in records for k in r.get("metrics", {})})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS) + metric_cols)
