"""The paper's printed numbers (NeurIPS 2023 main text, Tables 1-5): the only numbers typed by hand in the
project, from the paper text, shown beside ours only, never used to choose anything.
"""
from __future__ import annotations

import math

import pandas as pd

from ..data.schema import PRETRAIN_SIZES

_DIRS = ("V→A", "A→V")
_TABLE1 = {  # method: 24K (AVE V→A, A→V, AVVP V→A, A→V), 40K (...), 81K (...)
    "baseline": (4.4, 5.9, 7.6, 8.4, 5.5, 5.4, 6.9, 8.7, 7.1, 9.3, 5.6, 7.2),
    "smit": (12.7, 16.9, 17.2, 22.8, 14.4, 15.9, 19.0, 22.3, 13.4, 17.0, 20.9, 22.8),
    "mst": (13.3, 19.0, 25.7, 29.1, 19.5, 23.1, 22.7, 24.5, 18.6, 20.5, 19.1, 24.8),
    "codis": (18.5, 22.0, 29.4, 33.7, 20.8, 26.4, 35.1, 37.9, 28.5, 30.2, 34.0, 37.8),
    "turn": (17.7, 21.0, 29.4, 32.4, 19.1, 24.3, 36.9, 39.3, 27.6, 31.4, 33.8, 38.1),
    "cmcm": (28.9, 35.9, 42.6, 50.4, 32.7, 36.8, 41.9, 45.1, 31.1, 34.0, 39.3, 44.8),
    "dcid+smit": (28.1, 32.3, 45.9, 49.2, 32.2, 34.0, 47.8, 53.0, 34.8, 37.6, 51.9, 53.5),
    "dcid+mst": (31.2, 35.0, 50.7, 52.1, 34.9, 37.8, 54.4, 59.1, 33.5, 35.4, 57.1, 59.2),
    "dcid+turn": (29.4, 35.3, 53.4, 56.0, 29.7, 36.9, 55.2, 58.2, 31.9, 36.8, 56.2, 60.9),
    "dcid+codis": (33.4, 36.0, 53.8, 60.2, 36.7, 41.0, 52.6, 62.0, 35.9, 40.1, 54.3, 59.0),
    "dcid+cmcm": (34.1, 38.8, 57.6, 60.8, 36.4, 42.9, 58.7, 62.8, 38.8, 41.4, 57.5, 60.5),
    "unicode": (44.0, 49.7, 61.9, 65.7, 47.7, 52.3, 64.0, 65.6, 41.2, 45.6, 60.5, 61.7),
}
_TABLE2 = {  # ablation: 24K (AVE V→A, A→V, AVVP V→A, A→V), 40K (...)
    "w/o CLUB": (34.9, 35.1, 50.6, 54.0, 37.2, 40.3, 52.9, 59.5),
    "w/o Cross-CPC": (4.6, 5.8, 10.9, 24.6, 5.2, 7.1, 12.3, 24.1),
    "w/o DCID": (29.8, 34.6, 30.4, 32.5, 35.2, 36.9, 32.3, 34.0),
    "w/o MM-EMA": (34.1, 38.8, 57.6, 60.8, 36.4, 42.9, 58.7, 62.8),
    "w/o reset": (37.8, 41.2, 59.1, 61.5, 38.9, 40.3, 55.4, 62.1),
    "w/o CMCM": (39.7, 42.6, 58.2, 62.1, 41.3, 46.0, 58.7, 62.8),
    "w/o MM-EMA, reset": (28.2, 30.9, 41.4, 49.2, 31.5, 33.8, 46.0, 48.3),
    "full": (44.0, 49.7, 61.9, 65.7, 47.7, 52.3, 64.0, 65.6),
}
_TABLE3 = {  # AVT 40K: AVE, AVVP, AVE→AVVP, UCF(v)↔VGG(a); each V→A, A→V
    "w/o CLUB": (50.2, 51.8, 62.4, 66.2, 50.1, 51.2, 9.87, 9.59),
    "w/o Cross-CPC": (43.8, 49.2, 59.3, 61.1, 45.5, 50.6, 60.6, 54.6),
    "w/o MM-EMA": (52.9, 49.9, 62.0, 67.3, 48.1, 46.8, 66.5, 60.5),
    "w/o MM-EMA, reset": (33.0, 35.5, 56.7, 61.2, 7.4, 12.6, 43.3, 35.2),
    "w/o reset": (50.8, 47.8, 56.4, 61.1, 47.9, 50.4, 60.0, 49.8),
    "w/o CMCM": (52.4, 54.5, 57.5, 72.9, 50.5, 48.7, 69.9, 59.7),
    "full": (54.1, 55.0, 63.4, 71.0, 53.0, 52.4, 67.1, 60.6),
    "labeled modality": (64.8, 65.8, 71.0, 72.9, math.nan, math.nan, 80.0, 85.4),
}
_TABLE4 = {  # AVS-S4 (AVT pre-training): A2T mIoU, F-score; T2A mIoU, F-score
    "baseline": (69.8, 81.4, 69.9, 81.3),
    "unicode": (78.0, 87.1, 77.7, 86.7),
    "SST (A2A)": (60.3, 80.1, math.nan, math.nan),
    "AVS (A2A)": (78.7, 87.9, math.nan, math.nan),
}
# Table 5, X-to-audio retrieval: "V2T" = retrieval head trained with video queries, tested with text queries
# (gallery = audio), "T2V" the reverse (cmg_lib.downstream.retrieval); our direction labels V→T and T→V.
_TABLE5 = {
    "baseline": (0.47, 1.03, 0.62, 0.85),
    "unicode": (10.3, 21.9, 8.47, 16.7),
}


def paper_table(name: str) -> pd.DataFrame:
    """The paper's printed numbers for ``"table1"`` .. ``"table5"`` as a float DataFrame (NaN where blank).

    Index = our method names (``METHODS`` keys) or ablation names (``ABLATIONS`` keys); columns = the same
    (pretrain_size, task, direction) / (task, direction) / (direction, metric) tuples our records produce, so
    :func:`side_by_side` can align them with :func:`results_table` output.
    """
    sizes = PRETRAIN_SIZES          # Table 1: 24K, 40K, 81K; Table 2: the first two
    if name == "table1":
        cols = [(s, t, d) for s in sizes for t in ("ave", "avvp") for d in _DIRS]
        data, names = _TABLE1, ["pretrain_size", "task", "direction"]
    elif name == "table2":
        cols = [(s, t, d) for s in sizes[:2] for t in ("ave", "avvp") for d in _DIRS]
        data, names = _TABLE2, ["pretrain_size", "task", "direction"]
    elif name == "table3":
        cols = [(t, d) for t in ("ave", "avvp", "ave_avvp", "ucf_vgg") for d in _DIRS]
        data, names = _TABLE3, ["task", "direction"]
    elif name == "table4":
        cols = [(d, m) for d in ("A→T", "T→A") for m in ("miou", "f_score")]
        data, names = _TABLE4, ["direction", "metric"]
    elif name == "table5":
        cols = [(d, m) for d in ("V→T", "T→V") for m in ("R@5", "R@10")]
        data, names = _TABLE5, ["direction", "metric"]
    else:
        raise ValueError(f"unknown paper table {name!r}; expected one of table1..table5")
    return pd.DataFrame([list(v) for v in data.values()], index=pd.Index(list(data), name="row"),
                        columns=pd.MultiIndex.from_tuples(cols, names=names), dtype=float)


def transfer_ratio(task: str = "ave") -> float:
    """The paper's cross-modal transfer as a share of its labelled-modality bound (Table 3, AVT pre-training on
    40K): the full model's mean of V→A and A→V over the labelled row's mean of the same columns (AVE: 109.1 / 130.6
    = 0.835)."""
    t = paper_table("table3")
    cols = [(task, d) for d in _DIRS]
    labelled = float(t.loc["labeled modality", cols].mean())
    if math.isnan(labelled):
        raise ValueError(f"the paper's Table 3 has no labelled-modality row for task {task!r}")
    return float(t.loc["full", cols].mean()) / labelled
