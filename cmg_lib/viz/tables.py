"""Result and health tables as HTML for reading: clean headers, short numbers, wide tables split.

``readable_table(frame)`` takes any DataFrame of the book (``experiments.results_table`` / ``side_by_side``
output, health and probe tables) and returns a :class:`ReadableTable` that notebooks display like a DataFrame:

* headers: one row per column level, equal neighbours merged, the row-label name(s) in the corner instead of an
  extra header row; known labels spelled as in the paper (``ave`` -> ``AVE``, ``miou`` -> ``mIoU``) and every
  measure key of the book's tables in words (:data:`MEASURES`: ``purity/audio`` -> ``code purity, audio``);
* numbers: integer values as integers (``9.0`` -> ``9``), others with ``decimals`` decimals, values below 1 with two
  significant digits (``0.028132`` -> ``0.028``), missing values as ``–``; strings (``"44.0 ± 1.2"``) stay as they are;
* width: a table with more than ``max_columns`` data columns, or whose numbers are too wide for the text column
  (:data:`TEXT_COLUMN_CHARS`), is split into several tables along its top column level (e.g. one per pre-training
  size; flat columns into the fewest parts of balanced size), each repeating the row labels;
  every table spans the page width (class ``cmg-table``, styled by ``book/static/cmg.css``);
* "±": a frame that says what its "±" is (``attrs["spread"]``: ``experiments.tables.STANDARD_DEVIATION`` for
  results tables, ``experiments.claims.HALF_WIDTH`` for interval tables) has it in every part's caption;
* constant columns: with ``fold_constant`` (or ``attrs["fold_constant"]``), a column with the same text in every
  row (of two or more) leaves the table and is written once in the caption ("in every row: CMCM, chance 3.5").

:func:`comparison_table` is a chapter's results table beside the paper's in one call (optionally one table per
pre-training size, each with the rows trained at that size); :func:`category_table` is Fig. 4's colour shares.
"""
from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.schema import PRETRAIN_SIZES

# The measures of the book's tables in words: diagnostics (experiments.diagnostics), code usage (usage.usage_summary,
# usage.category_fractions, viz.explorer.overlap_stats) and the training monitor's health columns. A key
# "<measure>/<modality>" (or "<measure>/<a>-><b>") reads "<measure in words>, <modality>" (readable_table).
MEASURES = {
    "same_code": "same code", "same_code_chance": "same code, chance", "same_code_bound": "same code, bound",
    "code_reliance": "code reliance", "recon": "reconstruction error", "purity": "code purity",
    "probe_z": "probe on z", "probe_chance": "probe, chance", "codes_used": "codes used", "mi": "mi estimate",
    "cmcm": "CMCM", "cmcm_chance": "CMCM, chance", "cmcm_margin": "CMCM below chance",
    "cpc_acc": "Cross-CPC accuracy", "cpc_chance": "Cross-CPC, chance", "shared_fraction": "shared codes",
    "active_codes": "active codes", "perplexity": "perplexity", "mode_agreement": "mode agreement",
    "window_active": "codes active in the reset window", "used": "codes used", "top_share": "top code's share",
    "jaccard": "Jaccard index", "shared": "shared codes", "event_accuracy": "accuracy on event segments",
    "majority": "majority rate", "source_accuracy": "accuracy on the source", "std": "standard deviation",
}
# Table 1's methods (presets.METHODS) as the paper's Table 1 names them
METHOD_NAMES = {"baseline": "baseline", "smit": "S-Mit", "mst": "MST", "codis": "CODIS", "turn": "TURN",
                "cmcm": "CMCM", **{f"dcid+{m}": f"DCID+{n}" for m, n in (("smit", "S-Mit"), ("mst", "MST"),
                                                                         ("turn", "TURN"), ("codis", "CODIS"),
                                                                         ("cmcm", "CMCM"))},
                "unicode": "Uni-Code"}
# Column and row values spelled as the paper spells them, and the measures in words: the one label table.
LABELS = {**METHOD_NAMES, "ave": "AVE", "avvp": "AVVP", "ave_avvp": "AVE→AVVP", "ucf_vgg": "UCF↔VGG", "avs": "AVS",
          "retrieval": "retrieval", "miou": "mIoU", "f_score": "F-score", "pretrain_size": "pre-training set",
          "codebook_size": "codebook size", **{size: size.upper() for size in PRETRAIN_SIZES}, **MEASURES}
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
    """A header or row label in words: ``labels[value]``; a measure key ``"<measure>/<modality>"`` whose measure
    has a label as ``"<label>, <modality>"``; numbers formatted; other text as it is; ``->`` as an arrow."""
    if isinstance(value, str) and value in labels:
        return labels[value]
    if isinstance(value, str) and "/" in value:
        measure, _, which = value.partition("/")
        if measure in labels:
            return f"{labels[measure]}, {which.replace('->', '→')}"
    return format_number(value) if not isinstance(value, str) else value.replace("->", "→")


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


# How many characters of numbers fit the book's text column beside a row label: the column is 688 px wide (a
# 1280 px window), a table's digits (0.82rem, tabular) about 7.2 px each, a cell's padding 1.5 characters and the
# row label's minimum 11; measured on the default build, where a 6-column table of 76 characters ran 44 px past
# the edge and one of 70 fitted.
TEXT_COLUMN_CHARS = 92
CELL_PADDING_CHARS, ROW_LABEL_CHARS = 1.5, 11


def _fits(widths: Sequence[int], max_columns: int, max_chars: float) -> bool:
    return len(widths) <= max_columns and sum(widths) + CELL_PADDING_CHARS * len(widths) + ROW_LABEL_CHARS <= max_chars


def _split_points(cols: list[tuple], max_columns: int, widths: Sequence[int] | None = None,
                  max_chars: float = math.inf) -> list[tuple[int, int]]:
    """Ranges of column positions: whole top-level groups packed into parts of at most ``max_columns`` columns
    whose numbers (``widths``: characters per column; numbers never wrap) fit ``max_chars``; flat columns in the
    fewest parts of balanced size that fit (12 columns at most 8: two parts of 6)."""
    widths = list(widths) if widths is not None else [0] * len(cols)
    if _fits(widths, max_columns, max_chars):
        return [(0, len(cols))]
    if len(cols[0]) < 2:
        for count in range(math.ceil(len(cols) / max_columns), len(cols) + 1):
            edges = [round(i * len(cols) / count) for i in range(count + 1)]
            if all(_fits(widths[lo:hi], max_columns, max_chars) for lo, hi in zip(edges[:-1], edges[1:])):
                break
        return list(zip(edges[:-1], edges[1:]))
    groups, start = [], 0
    for i in range(1, len(cols) + 1):
        if i == len(cols) or cols[i][0] != cols[start][0]:
            groups.append((start, i))
            start = i
    parts, (lo, hi) = [], groups[0]
    for g_lo, g_hi in groups[1:]:
        if _fits(widths[lo:g_hi], max_columns, max_chars):
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
        out.append(f"<caption>{html.escape(caption, quote=False)}</caption>")
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


def _fold_constant(frame, labels: Mapping[Any, str], decimals: int):
    """``frame`` without its constant columns (same text in every one of >= 2 rows), and those columns as text
    ("<header> = <value>", headers of all levels joined by spaces)."""
    if len(frame.index) < 2:
        return frame, []
    keep, folded = [], []
    for i, col in enumerate(_column_tuples(frame)):
        texts = {format_number(v, decimals) for v in frame.iloc[:, i]}
        if len(texts) == 1:
            folded.append(f"{' '.join(_label(c, labels) for c in col if c != '')} = {texts.pop()}")
        else:
            keep.append(i)
    out = frame.iloc[:, keep]
    out.attrs.update(frame.attrs)
    return out, folded


def readable_table(frame, decimals: int = 1, max_columns: int = 8, caption: str | None = None,
                   labels: Mapping[Any, str] | None = None, fold_constant: bool | None = None,
                   max_chars: float = TEXT_COLUMN_CHARS) -> ReadableTable:
    """``frame`` as a :class:`ReadableTable` (see the module docstring); ``labels`` add to or override LABELS;
    ``fold_constant`` (None: ``frame.attrs["fold_constant"]``) moves constant columns into the caption;
    ``max_chars``: the characters of numbers a part may hold (:data:`TEXT_COLUMN_CHARS`)."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        elif isinstance(frame, Mapping) and all(isinstance(v, Mapping) for v in frame.values()):
            frame = pd.DataFrame(frame).T                  # {row: {column: value}}
        else:
            raise TypeError(f"readable_table expects a pandas DataFrame or Series (or a mapping of rows to "
                            f"mappings of columns), got {type(frame).__name__}")
    if max_columns < 1:
        raise ValueError(f"max_columns must be at least 1, got {max_columns}")
    labels = {**LABELS, **(labels or {})}
    if frame.attrs.get("fold_constant") if fold_constant is None else fold_constant:
        frame, folded = _fold_constant(frame, labels, decimals)
        if folded:
            caption = "; ".join(t for t in (caption, "in every row: " + "; ".join(folded)) if t)
    cols = _column_tuples(frame)
    widths = [max((len(format_number(v, decimals)) for v in frame.iloc[:, i]), default=0) for i in range(len(cols))]
    ranges = _split_points(cols, max_columns, widths, max_chars) if cols else [(0, 0)]
    parts = [frame.iloc[:, lo:hi] for lo, hi in ranges]
    spread = frame.attrs.get("spread")
    captions = ["; ".join(text for text in (caption if i == 0 else None, spread) if text) or None
                for i in range(len(parts))]
    body = "".join(_render(p, labels, decimals, c) for p, c in zip(parts, captions))
    return ReadableTable(parts=parts, html=f'<div class="cmg-tables">{body}</div>', caption=captions[0])



def stack(tables: Sequence[ReadableTable], note: str | None = None) -> ReadableTable:
    """Several readable tables shown as one (in order), with an optional ``note`` paragraph above them."""
    body = "".join(t.html for t in tables)
    head = f'<p class="cmg-note">{html.escape(note)}</p>' if note else ""
    return ReadableTable(parts=[p for t in tables for p in t.parts], html=f"{head}{body}",
                         caption=tables[0].caption if tables else None)


def _seeds_text(pretrain_seeds: Sequence[int] | None, head_seeds: Sequence[int] | None) -> str:
    if pretrain_seeds is None or head_seeds is None:
        return ""
    return (f" (pre-training seeds {', '.join(map(str, pretrain_seeds))} × head seeds "
            f"{', '.join(map(str, head_seeds))})")


def comparison_table(records: Sequence[dict], paper: str, rows: str = "method",
                     cols: str | Sequence[str] = ("task", "direction"), *, split: str | None = None,
                     pretrain_seeds: Sequence[int] | None = None, head_seeds: Sequence[int] | None = None,
                     fmt: str = "{:.1f}", note: str | None = None, max_columns: int = 8) -> ReadableTable:
    """Our results (``experiments.results_table`` of ``records``: percentages, mean ± standard deviation over the
    runs) beside the paper's table ``paper`` (``experiments.paper_table``), as one readable table whose caption
    names the seeds. With ``split`` (the first of ``cols``, e.g. ``"pretrain_size"``): one table per value, each
    with only the rows that ran at it. ``note``: a paragraph above the tables."""
    from ..experiments.paper import paper_table
    from ..experiments.tables import results_table, side_by_side

    cols = [cols] if isinstance(cols, str) else list(cols)
    if split is not None and (not cols or cols[0] != split):
        raise ValueError(f"split must be the first of cols {cols}, got {split!r}")
    table = side_by_side(results_table(records, rows=rows, cols=cols, fmt=fmt), paper_table(paper), fmt=fmt)
    caption = (f"Percentages; ours{_seeds_text(pretrain_seeds, head_seeds)} beside the paper's "
               f"{paper.replace('table', 'Table ')}")
    if split is None:
        return stack([readable_table(table, caption=caption, max_columns=max_columns)], note)
    parts = []
    for value in dict.fromkeys(r[split] for r in records):
        part = table[value]
        ran = part.xs("ours", axis=1, level=-1).ne(MISSING).any(axis=1)
        part = part[ran]
        part.attrs.update(table.attrs)
        parts.append(readable_table(part, caption=f"Pre-trained on {_label(value, LABELS)}. {caption}",
                                    max_columns=max_columns))
    return stack(parts, note)


def retrieval_chance(records: Sequence[dict], ks: Sequence[int] = (5, 10)) -> str:
    """The chance level of Recall@k (k / gallery size) for the retrieval records' gallery (``n_test`` clips)."""
    sizes = sorted({int(r["n_test"]) for r in records})
    if len(sizes) != 1:
        raise ValueError(f"the records have galleries of different sizes {sizes}; give them one table each")
    n = sizes[0]
    levels = ", ".join(f"{100 * k / n:.2f} % (R@{k})" for k in ks)
    return f"Chance: R@k = k / gallery size = {levels} for a gallery of {n} clips."


def table1(records: Sequence[dict], methods: Sequence[str], pretrain_seeds: Sequence[int],
           head_seeds: Sequence[int]) -> ReadableTable:
    """Table 1 beside the paper's, one table per pre-training size (the ``methods`` trained at it), under a note
    with the AVE chance level (from the records' classes) and the paper's rows this build did not train."""
    from ..experiments.paper import paper_table
    from ..experiments.tables import field

    classes = {field(r, "downstream.num_classes") for r in records if r["task"] == "ave"}
    chance = ", ".join(f"{100 / c:.1f} % ({c} classes)" for c in sorted(classes)) or "not run"
    skipped = [METHOD_NAMES.get(m, m) for m in paper_table("table1").index if m not in methods]
    note = (f"AVE chance level: {chance}. Paper rows this scale does not train: {', '.join(skipped) or 'none'} "
            "(they run at scale full).")
    return comparison_table(records, "table1", rows="method", cols=("pretrain_size", "task", "direction"),
                            split="pretrain_size", pretrain_seeds=pretrain_seeds, head_seeds=head_seeds, note=note)


def category_table(usage: Mapping[tuple[str, int], Mapping[str, Mapping[str, np.ndarray]]], seed: int,
                   pair: tuple[str, str] = ("video", "audio")) -> ReadableTable:
    """Fig. 4's colours per method for pre-training seed ``seed`` (``usage[(method, seed)]["all"]``: per-modality
    code counts, ``usage.code_usage``): the share of the used codes that is shared (green), ``pair[0]``-only (blue),
    ``pair[1]``-only (red), and the codes used."""
    import pandas as pd

    from ..usage import category_fractions

    names = {"shared": "shared (green)", pair[0]: f"{pair[0]} only (blue)", pair[1]: f"{pair[1]} only (red)",
             "used": "codes used"}
    shares = {m: category_fractions(counts["all"], pair) for (m, s), counts in usage.items() if s == seed}
    frame = pd.DataFrame(shares).T[list(names)]
    frame = frame.rename(columns=names).rename_axis("method")
    frame["codes used"] = frame["codes used"].astype(int)
    return readable_table(frame, caption="Shares of the used codes by colour (the rule of the caption above)")
