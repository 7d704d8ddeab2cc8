"""Result tables as readable HTML: numbers, headers without an empty row, wide tables split."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cmg_lib.viz.tables import format_number, readable_table


@pytest.mark.parametrize("value, text", [(9.0, "9"), (np.int64(12), "12"), (0.028132, "0.028"), (44.04, "44.0"),
                                         (61.96, "62.0"), (math.nan, "–"), (None, "–"), ("44.0 ± 1.2", "44.0 ± 1.2"),
                                         (-3.25, "-3.2"), (0.5, "0.5"), (True, "True")])
def test_format_number(value, text):
    assert format_number(value) == text


def _side_by_side_like():
    cols = pd.MultiIndex.from_tuples([(s, t, d, w) for s in ("24k", "40k") for t in ("ave", "avvp")
                                      for d in ("V→A", "A→V") for w in ("ours", "paper")],
                                     names=["pretrain_size", "task", "direction", ""])
    return pd.DataFrame([["1.0 ± 0.1"] * 16, ["2.0"] * 16], index=pd.Index(["baseline", "unicode"], name="method"),
                        columns=cols)


def test_headers_have_no_empty_index_row_and_merge_equal_neighbours():
    t = readable_table(_side_by_side_like(), max_columns=16)
    assert len(t.parts) == 1
    head = t.html.split("<thead>")[1].split("</thead>")[0]
    rows = head.split("<tr>")[1:]
    assert len(rows) == 4                                    # one per column level, none for the index name
    assert '<th class="cmg-corner" colspan="1" rowspan="4">method</th>' in rows[0]
    assert rows[0].count('colspan="8"') == 2 and ">24K<" in rows[0]
    assert rows[1].count('colspan="4"') == 4 and ">AVVP<" in rows[1]
    assert rows[3].count(">ours<") == 8
    assert '<th class="cmg-row">baseline</th><td>1.0 ± 0.1</td>' in t.html


def test_wide_tables_split_along_the_top_level():
    t = readable_table(_side_by_side_like(), max_columns=8)
    assert [p.shape for p in t.parts] == [(2, 8), (2, 8)]
    assert t.html.count('<table class="cmg-table">') == 2 and t.html.count(">baseline<") == 2
    assert list(t.parts[1].columns.get_level_values(0).unique()) == ["40k"]
    # a single group wider than the limit stays whole
    assert len(readable_table(_side_by_side_like().loc[:, "24k"], max_columns=3).parts) == 2


def test_health_table_numbers_and_flat_columns():
    frame = pd.DataFrame({"used": [9.0, 12.0], "perplexity": [5.4321, 7.0], "share": [0.028132, 0.5]},
                         index=pd.Index(["audio", "video"]))
    t = readable_table(frame, caption="usage")
    assert "<caption>usage</caption>" in t.html
    assert "<td>9</td><td>5.4</td><td>0.028</td>" in t.html and "<td>12</td><td>7</td><td>0.5</td>" in t.html
    assert '<th class="cmg-corner" colspan="1" rowspan="1"></th>' in t.html
    assert t._repr_html_() == t.html and "perplexity" in repr(t)


def test_a_frame_that_says_what_its_plus_minus_is_has_it_in_every_caption():
    frame = _side_by_side_like()
    frame.attrs["spread"] = "mean ± standard deviation over the runs"
    t = readable_table(frame, max_columns=8, caption="Table 1")
    assert t.html.count("<caption>") == 2
    assert "<caption>Table 1; mean ± standard deviation over the runs</caption>" in t.html
    assert "<caption>mean ± standard deviation over the runs</caption>" in t.html        # the second part too


def test_rejects_non_frames():
    with pytest.raises(TypeError, match="DataFrame"):
        readable_table([[1, 2]])
