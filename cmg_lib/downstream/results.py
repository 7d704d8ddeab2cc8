"""Downstream result records: their direction label, and the JSON-lines log that ``run_task(results_path=...)``
and ``python -m cmg_lib downstream --results`` append to.

``append_result`` serialises the whole record first, then appends it as one line (``storage.append_line``: one
``os.write`` on an ``O_APPEND`` descriptor), so concurrent writers never interleave and a crash never leaves half a
line behind. Non-finite floats are stored as ``null`` so every line is strict JSON. (The notebooks' run-once cache
of records is ``cmg_lib.experiments.evals``; ``cmg_lib.experiments.tables`` aggregates records over seeds.)
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable

from ..storage import append_line

TABLE_COLUMNS = ("task", "direction", "train_modality", "test_modality", "protocol", "seed", "method", "preset",
                 "pretrain_key", "best_epoch", "n_train", "n_test", "wall_time_s")


def direction_label(train_modality: str, test_modality: str) -> str:
    """The paper's column name: ``V→A`` = head trained on video codes, evaluated on audio codes."""
    return f"{train_modality[0].upper()}→{test_modality[0].upper()}"


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
    append_line(path, json.dumps(_finite(record), allow_nan=False, sort_keys=True))


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


def runs_frame(source: str | os.PathLike | Iterable[dict[str, Any]]):
    """A pandas DataFrame, one row per run: the bookkeeping columns of ``TABLE_COLUMNS`` then one column per metric
    (``cmg_lib.experiments.results_table`` aggregates over seeds instead)."""
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
