"""Result and health tables as HTML for reading: clean headers, short numbers, wide tables split.

``readable_table(frame)`` takes any DataFrame of the book (``experiments.results_table`` / ``side_by_side``
output, health and probe tables) and returns a :class:`ReadableTable` that notebooks display like a DataFrame:

* headers: one row per column level, equal neighbours merged, the row-label name(s) in the corner instead of an
  extra header row; known labels spelled as in the paper (``ave`` -> ``AVE``, ``miou`` -> ``mIoU``);
* numbers: integer values as integers (``9.0`` -> ``9``), others with ``decimals`` decimals, values below 1 with two
  significant digits (``0.028132`` -> ``0.028``), missing values as ``–``; strings (``"44.0 ± 1.2"``) stay as they are;
* width: a table with more than ``max_columns`` data columns is split into several tables along its top column
  level (e.g. one per pre-training size), each repeating the row labels; every table spans the page width
  (class ``cmg-table``, styled by ``book/static/cmg.css``);
* "±": a frame that says what its "±" is (``attrs["spread"]``: ``experiments.tables.STANDARD_DEVIATION`` for
  results tables, ``experiments.claims.HALF_WIDTH`` for interval tables) has it in every part's caption.
"""
from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..data.schema import PRETRAIN_SIZES

# Column and row values spelled as the paper spells them.
LABELS = {"ave": "AVE", "avvp": "AVVP", "ave_avvp": "AVE→AVVP", "ucf_vgg": "UCF↔VGG", "avs": "AVS",
          "retrieval": "retrieval", "miou": "mIoU", "f_score": "F-score", "pretrain_size": "pre-training set",
          "codebook_size": "codebook size", **{size: size.upper() for size in PRETRAIN_SIZES}}
MISSING = "–"


def format_number(value: Any, decimals: int = 1) -> str:
    """One cell as text: integers as integers, |x| < 1 with two significant digits, else ``decimals`` decimals."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        if abs(x) < 1:
            return f"{x:.2g}"
        return f"{x:.{decimals}f}"
    return str(value)


def _label(value: Any, labels: Mapping[Any, str]) -> str:
    if isinstance(value, str) and value in labels:
        return labels[value]
    return format_number(value) if not isinstance(value, str) else value


@dataclass
class ReadableTable:
    """A table ready for the page: ``parts`` are the (column-split) DataFrames, ``html`` their rendering."""

    parts: list
    html: str
    caption: str | None = None

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return "\n\n".join(p.to_string() for p in self.parts)


def _column_tuples(frame) -> list[tuple]:
    import pandas as pd

    if isinstance(frame.columns, pd.MultiIndex):
        return [tuple(c) for c in frame.columns]
    return [(c,) for c in frame.columns]


def _split_points(cols: list[tuple], max_columns: int) -> list[tuple[int, int]]:
    """Ranges of column positions: whole top-level groups packed into parts of at most ``max_columns``."""
    if len(cols) <= max_columns or len(cols[0]) < 2:
        return [(0, len(cols))]
    groups, start = [], 0
    for i in range(1, len(cols) + 1):
        if i == len(cols) or cols[i][0] != cols[start][0]:
            groups.append((start, i))
            start = i
    parts, (lo, hi) = [], groups[0]
    for g_lo, g_hi in groups[1:]:
        if g_hi - lo <= max_columns:
            hi = g_hi
        else:
            parts.append((lo, hi))
            lo, hi = g_lo, g_hi
    parts.append((lo, hi))
    return parts


def _header_rows(cols: list[tuple], labels: Mapping[Any, str]) -> list[list[tuple[str, int]]]:
    """Per column level, ``(label, colspan)`` cells; neighbours merge only when all their upper levels agree."""
    rows = []
    for level in range(len(cols[0])):
        cells: list[tuple[str, int]] = []
        prev = None
        for c in cols:
            key = c[:level + 1]
            if key == prev:
                cells[-1] = (cells[-1][0], cells[-1][1] + 1)
            else:
                cells.append((_label(c[level], labels), 1))
            prev = key
        rows.append(cells)
    # a level whose every label is empty (side_by_side's unnamed last level never is; a blank one would be noise)
    return [r for r in rows if any(text for text, _ in r)]


def _render(frame, labels: Mapping[Any, str], decimals: int, caption: str | None) -> str:
    import pandas as pd

    cols = _column_tuples(frame)
    index_names = [n for n in frame.index.names] if isinstance(frame.index, pd.MultiIndex) else [frame.index.name]
    corner = " · ".join(_label(n, labels) for n in index_names if n) or ""
    n_index = len(index_names)
    head = _header_rows(cols, labels) if cols else []
    out = ['<table class="cmg-table">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead>")
    for r, cells in enumerate(head):
        out.append("<tr>")
        if r == 0:
            out.append(f'<th class="cmg-corner" colspan="{n_index}" rowspan="{len(head)}">{html.escape(corner)}</th>')
        for text, span in cells:
            attr = f' colspan="{span}"' if span > 1 else ""
            out.append(f"<th{attr}>{html.escape(text)}</th>")
        out.append("</tr>")
    out.append("</thead><tbody>")
    for key, row in zip(frame.index, frame.itertuples(index=False, name=None)):
        keys = key if isinstance(key, tuple) else (key,)
        out.append("<tr>" + "".join(f'<th class="cmg-row">{html.escape(_label(k, labels))}</th>' for k in keys)
                   + "".join(f"<td>{html.escape(format_number(v, decimals))}</td>" for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def readable_table(frame, decimals: int = 1, max_columns: int = 8, caption: str | None = None,
                   labels: Mapping[Any, str] | None = None) -> ReadableTable:
    """``frame`` as a :class:`ReadableTable` (see the module docstring); ``labels`` add to or override LABELS."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        else:
            raise TypeError(f"readable_table expects a pandas DataFrame or Series, got {type(frame).__name__}")
    if max_columns < 1:
        raise ValueError(f"max_columns must be at least 1, got {max_columns}")
    labels = {**LABELS, **(labels or {})}
    cols = _column_tuples(frame)
    ranges = _split_points(cols, max_columns) if cols else [(0, 0)]
    parts = [frame.iloc[:, lo:hi] for lo, hi in ranges]
    spread = frame.attrs.get("spread")
    captions = ["; ".join(text for text in (caption if i == 0 else None, spread) if text) or None
                for i in range(len(parts))]
    body = "".join(_render(p, labels, decimals, c) for p, c in zip(parts, captions))
    return ReadableTable(parts=parts, html=f'<div class="cmg-tables">{body}</div>', caption=captions[0])

