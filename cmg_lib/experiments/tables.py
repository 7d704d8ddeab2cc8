"""Tables from result records: a field by path, mean / standard deviation / count per group, the wide table of
``mean ± standard deviation`` cells, and our table beside the paper's (``paper.paper_table``).

A table's ``attrs["spread"]`` says what its "±" is (:data:`STANDARD_DEVIATION` here; the verdicts' and the
diagnostics' "±" is ``claims.HALF_WIDTH``); ``viz.readable_table`` writes it into the table's caption.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

STANDARD_DEVIATION = "mean ± standard deviation over the runs (pre-training seeds × head seeds)"


def field(record: dict, path: str) -> Any:
    """``record[a][b]`` for ``path="a.b"``; a KeyError names the missing part."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"record has no field {path!r} (missing {part!r}); top-level keys: {sorted(record)}")
        value = value[part]
    return value


def _as_list(names: str | Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def aggregate(records: Iterable[dict], rows: str | Sequence[str], cols: str | Sequence[str],
              value: str) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1; 0 for one seed) and count of ``value`` per (row, col) group.

    ``rows`` / ``cols`` / ``value`` are record field paths (``"method"``, ``"pretrain.model.codebook_size"``).
    Returns a long DataFrame with the row and col fields as columns plus ``mean``, ``std``, ``n``, groups in the
    order they first appear.
    """
    row_keys, col_keys = _as_list(rows), _as_list(cols)
    groups: dict[tuple, list[float]] = {}
    for r in records:
        k = tuple(field(r, f) for f in row_keys + col_keys)
        groups.setdefault(k, []).append(float(field(r, value)))
    out = []
    for k, vals in groups.items():
        arr = np.asarray(vals, dtype=np.float64)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        out.append(dict(zip(row_keys + col_keys, k), mean=float(arr.mean()), std=std, n=int(arr.size)))
    return pd.DataFrame(out, columns=row_keys + col_keys + ["mean", "std", "n"])


def results_table(records: Iterable[dict], rows: str | Sequence[str] = "method",
                  cols: str | Sequence[str] = ("task", "direction"), value: str = "metric",
                  fmt: str = "{:.1f}", scale: float = 1.0, where: dict | None = None) -> pd.DataFrame:
    """A wide table of ``mean ± standard deviation`` strings over the records of each cell (pre-training seeds x
    head seeds; just the mean where one ran), labelled so (``attrs["spread"]``, :data:`STANDARD_DEVIATION`).

    ``scale`` multiplies values first (e.g. 100 to show fractions as percentages); ``where`` keeps the records
    whose fields equal its values (e.g. ``{"task": "avvp"}`` with ``value="metrics.f1"``). The index is the
    ``rows`` field(s), the columns the ``cols`` field(s) (a MultiIndex for several), both in first-appearance order.
    """
    if where:
        records = [r for r in records if all(field(r, k) == v for k, v in where.items())]
    agg = aggregate(records, rows, cols, value)
    row_keys, col_keys = _as_list(rows), _as_list(cols)
    if agg.empty:
        return pd.DataFrame()

    def mean_sd(mean, std, n):
        text = fmt.format(mean * scale)
        return text if n < 2 else f"{text} ± {fmt.format(std * scale)}"

    agg["cell"] = [mean_sd(m, s, n) for m, s, n in zip(agg["mean"], agg["std"], agg["n"])]
    row_index = list(dict.fromkeys(agg[row_keys].itertuples(index=False, name=None)))
    col_index = list(dict.fromkeys(agg[col_keys].itertuples(index=False, name=None)))
    table = pd.DataFrame("–", index=range(len(row_index)), columns=range(len(col_index)), dtype=object)
    rpos = {k: i for i, k in enumerate(row_index)}
    cpos = {k: i for i, k in enumerate(col_index)}
    nr = len(row_keys)
    for rec, text in zip(agg[row_keys + col_keys].itertuples(index=False, name=None), agg["cell"]):
        table.iat[rpos[tuple(rec[:nr])], cpos[tuple(rec[nr:])]] = text
    table.index = (pd.Index([r[0] for r in row_index], name=row_keys[0]) if len(row_keys) == 1
                   else pd.MultiIndex.from_tuples(row_index, names=row_keys))
    table.columns = (pd.Index([c[0] for c in col_index], name=col_keys[0]) if len(col_keys) == 1
                     else pd.MultiIndex.from_tuples(col_index, names=col_keys))
    table.attrs["spread"] = STANDARD_DEVIATION
    return table


def mean_metric(records: Iterable[dict], value: str = "metric", **where) -> float:
    """Mean of ``value`` over the records whose fields equal ``where`` (NaN when none match)."""
    vals = [float(field(r, value)) for r in records if all(field(r, k) == v for k, v in where.items())]
    return float(np.mean(vals)) if vals else math.nan


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame, fmt: str = "{:.1f}") -> pd.DataFrame:
    """Our table next to the paper's: for every column of ``ours`` an ``ours`` and a ``paper`` sub-column.

    Rows and columns are those of ``ours`` (the paper's values are looked up by the same labels; "–" where the
    paper has none). Paper values are formatted with ``fmt``.
    """
    cols = list(ours.columns)
    ptab = paper.copy()
    if not isinstance(ptab.columns, pd.MultiIndex) and isinstance(ours.columns, pd.MultiIndex):
        raise ValueError("ours has MultiIndex columns but the paper table does not")
    ptab = ptab.reindex(index=ours.index, columns=ours.columns)
    out = {}
    for c in cols:
        key = c if isinstance(c, tuple) else (c,)
        out[key + ("ours",)] = ours[c].astype(object).tolist()
        out[key + ("paper",)] = ["–" if (v is None or (isinstance(v, float) and math.isnan(v))) else fmt.format(v)
                                 for v in ptab[c].tolist()]
    names = (list(ours.columns.names) if isinstance(ours.columns, pd.MultiIndex) else [ours.columns.name]) + [""]
    frame = pd.DataFrame(out, index=ours.index)
    frame.columns = pd.MultiIndex.from_tuples(list(out), names=names)
    frame.attrs.update(ours.attrs)                              # what "±" means in our cells
    return frame
