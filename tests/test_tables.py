"""Result tables as readable HTML: numbers, headers without an empty row, wide tables split."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cmg_lib.viz.tables import category_table, comparison_table, format_number, readable_table, table1


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
    t = readable_table(_side_by_side_like(), max_columns=16, max_chars=math.inf)
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
    # flat columns: balanced parts
    flat = pd.DataFrame([range(12)], columns=[f"c{i}" for i in range(12)])
    assert [p.shape[1] for p in readable_table(flat, max_columns=8).parts] == [6, 6]
    assert [p.shape[1] for p in readable_table(flat.iloc[:, :9], max_columns=8).parts] == [4, 5]


def test_tables_whose_numbers_are_wider_than_the_text_column_split():
    """Numbers never wrap: a part holds at most TEXT_COLUMN_CHARS characters of them (with 1.5 per column of
    padding and 11 for the row label). Six columns of 13 characters (98) are two parts of three; of 11 (86), one."""
    wide = pd.DataFrame([["0.075 ± 0.041"] * 6], columns=[f"c{i}" for i in range(6)])
    assert [p.shape[1] for p in readable_table(wide).parts] == [3, 3]
    assert [p.shape[1] for p in readable_table(wide.replace("0.075 ± 0.041", "0.39 ± 0.04")).parts] == [6]
    assert len(readable_table(wide, max_chars=math.inf).parts) == 1
    # grouped columns: whole groups, packed while their numbers fit (two groups of 8 x 9 characters: 95 each)
    grouped = _side_by_side_like()
    assert [p.shape[1] for p in readable_table(grouped, max_columns=16).parts] == [8, 8]
    assert [p.shape[1] for p in readable_table(grouped.loc[:, "24k"], max_columns=16).parts] == [4, 4]
    one = pd.DataFrame([["x" * 200]], columns=["c"])         # one column wider than the text column stays whole
    assert [p.shape[1] for p in readable_table(one).parts] == [1]


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


def test_every_measure_key_of_the_diagnostics_tables_reads_as_words():
    keys = ["same_code", "same_code_chance", "same_code_bound", "code_reliance/audio", "recon/video",
            "purity/audio", "probe_z/video", "codes_used/audio", "mi/video", "cmcm", "cmcm_chance",
            "cpc_acc/audio->video", "cpc_chance", "shared_fraction", "perplexity/text", "active_codes/audio"]
    t = readable_table(pd.DataFrame([[0.5] * len(keys), [0.25] * len(keys)], columns=keys))
    head = "".join(part.split("</thead>")[0] for part in t.html.split("<thead>")[1:])
    for raw in keys:
        assert f">{raw}<" not in head, f"{raw} shown as a key"
    for words in ("same code, chance", "code reliance, audio", "reconstruction error, video", "code purity, audio",
                  "probe on z, video", "codes used, audio", "mi estimate, video", "CMCM, chance",
                  "Cross-CPC accuracy, audio→video", "shared codes", "perplexity, text", "active codes, audio"):
        assert f">{words}<" in head
    # a row label with a slash that is no measure stays as it is
    assert ">w/o CLUB<" in readable_table(pd.DataFrame({"x": [1.0]}, index=["w/o CLUB"])).html


def test_constant_columns_leave_the_table_for_its_caption():
    frame = pd.DataFrame({"cmcm": ["1.2 ± 0.1", "0.9 ± 0.2"], "cmcm_chance": ["3.5", "3.5"], "n": [2.0, 2.0]},
                         index=pd.Index(["recipe", "released"]))
    frame.attrs["spread"] = "mean ± half-width"
    kept = readable_table(frame)                                          # by default every column stays
    assert ">CMCM, chance<" in kept.html
    t = readable_table(frame, caption="diagnostics", fold_constant=True)
    assert list(t.parts[0].columns) == ["cmcm"]
    assert "<caption>diagnostics; in every row: CMCM, chance = 3.5; n = 2; mean ± half-width</caption>" in t.html
    frame.attrs["fold_constant"] = True                                   # as interval tables ask
    assert list(readable_table(frame).parts[0].columns) == ["cmcm"]
    assert list(readable_table(frame.iloc[:1]).parts[0].columns) == ["cmcm", "cmcm_chance", "n"]   # one row: kept


def _records(methods, sizes=("24k",), classes=28):
    return [{"method": m, "pretrain_size": size, "task": task, "direction": d, "metric": 10.0 + i + s,
             "seed": 0, "pretrain": {"train": {"seed": s}}, "downstream": {"num_classes": classes}}
            for size in sizes for i, m in enumerate(methods) for task in ("ave", "avvp")
            for d in ("V→A", "A→V") for s in (0, 1)]


def test_table1_is_one_call_one_table_per_size_with_the_rows_trained_there():
    records = _records(["baseline", "unicode"]) + _records(["unicode"], sizes=("40k",))
    t = table1(records, ["baseline", "unicode"], [0, 1], [0])
    assert [p.shape for p in t.parts] == [(2, 8), (1, 8)]                 # the 40K table has no baseline row
    assert list(t.parts[1].index) == ["unicode"] and ">Uni-Code<" in t.html and ">unicode<" not in t.html
    assert "Pre-trained on 24K. Percentages; ours (pre-training seeds 0, 1 × head seeds 0) beside the paper's " \
           "Table 1; mean ± standard deviation over the runs" in t.html
    assert "<th class=\"cmg-row\">Uni-Code</th><td>11.5 ± 0.7</td>" in t.html      # seeds 0 and 1: 11, 12
    note = t.html.split("</p>")[0]
    assert "AVE chance level: 3.6 % (28 classes)" in note and "S-Mit, MST" in note and "baseline" not in note


def test_comparison_table_names_the_papers_table_and_refuses_a_split_it_cannot_make():
    records = [{**r, "row": r["method"]} for r in _records(["full"])]
    t = comparison_table(records, "table3", rows="row", pretrain_seeds=[0, 1], head_seeds=[0])
    assert len(t.parts) == 1 and "beside the paper's Table 3" in t.html and ">paper<" in t.html
    with pytest.raises(ValueError, match="split must be the first of cols"):
        comparison_table(records, "table3", rows="row", split="pretrain_size")


def test_category_table_shows_shares_rounded_and_codes_used_as_counts():
    counts = {"video": np.array([5, 0, 3, 0, 1, 0, 0]), "audio": np.array([0, 4, 2, 0, 0, 1, 1])}
    usage = {("baseline", 0): {"all": counts}, ("baseline", 1): {"all": {m: 0 * c for m, c in counts.items()}}}
    t = category_table(usage, seed=0)
    row = t.html.split('<th class="cmg-row">baseline</th>')[1].split("</tr>")[0]
    assert row == "<td>0.17</td><td>0.33</td><td>0.5</td><td>6</td>"       # 1, 2 and 3 of the 6 used codes
    assert ">shared (green)<" in t.html and ">codes used<" in t.html
