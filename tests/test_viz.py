"""Plots (Fig. 4 colour rule, curves, sweep) and the widget explorer, on synthetic counts."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from cmg_lib.viz.explorer import as_pair, build_explorer, overlap_stats, render_view, view_axes
from cmg_lib.viz.plots import (category_fractions, code_categories, code_map, codebook_health, codebook_size_sweep,
                               history_frame, training_curves, usage_summary)


def test_fig4_colour_rule_on_toy_counts():
    counts = {"video": np.array([9, 1, 5, 0, 8, 2, 0, 81]),
              "audio": np.array([1, 9, 5, 0, 2, 8, 3, 19])}
    cats = code_categories(counts, ("video", "audio")).tolist()
    # shares of video: .9 .1 .5 - .8 .2 0 .81
    assert cats == ["video", "audio", "shared", "unused", "shared", "shared", "audio", "video"]
    frac = category_fractions(counts, ("video", "audio"))
    assert frac["used"] == 7
    assert frac["video"] == pytest.approx(2 / 7) and frac["audio"] == pytest.approx(2 / 7)
    assert frac["shared"] == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="text"):
        code_categories(counts, ("video", "text"))
    with pytest.raises(ValueError, match="non-negative"):
        code_categories({"video": np.array([-1]), "audio": np.array([1])})


def test_usage_summary_perplexity():
    s = usage_summary({"audio": np.array([5, 5, 5, 5, 0]), "video": np.array([0, 0, 7, 0, 0])})
    assert s["audio"]["used"] == 4 and s["audio"]["perplexity"] == pytest.approx(4.0)
    assert s["video"]["perplexity"] == pytest.approx(1.0) and s["video"]["top_share"] == 1.0


def test_figures_build():
    hist = [{"step": s, "loss": 5.0 / s, "commit": 0.1 * s} for s in range(1, 6)]
    assert list(history_frame(hist).index) == [1, 2, 3, 4, 5]
    fig = training_curves(hist)
    assert {l.get_label() for l in fig.axes[0].get_lines()} == {"loss", "commit"}
    with pytest.raises(ValueError, match="nope"):
        training_curves(hist, keys=["nope"])
    with pytest.raises(ValueError, match="empty"):
        history_frame([])
    counts = {"video": np.array([3, 0, 5, 1]), "audio": np.array([1, 2, 5, 0])}
    assert len(codebook_health(counts).axes[0].get_lines()) == 2
    fig = code_map(counts, coords=np.random.default_rng(0).normal(size=(4, 2)))
    # video shares .75 .0 .5 1.0 -> shared, audio, shared, video
    assert fig.axes[0].get_title() == "4 codes used: 50% shared, 25% video-only, 25% audio-only"
    frame = pd.DataFrame({"codebook_size": [16, 32, 16, 32], "direction": ["V→A", "V→A", "A→V", "A→V"],
                          "mean": [1, 2, 3, 4], "std": [0.1, 0.2, 0.1, 0.3]})
    fig = codebook_size_sweep(frame)
    assert len(fig.axes[0].get_legend().get_texts()) == 2


def _synthetic_usage(methods=("baseline", "unicode"), classes=("all", 3), steps=(10, 30), size=16):
    rng = np.random.default_rng(0)
    usage = {}
    for m in methods:
        for c in classes:
            for s in steps:
                usage[(m, "video-audio", c, s)] = {"video": rng.integers(0, 5, size), "audio": rng.integers(0, 5, size)}
    return usage


def test_explorer_builds_one_image_per_view_and_jslinks():
    import ipywidgets as widgets

    usage = _synthetic_usage()
    ex = build_explorer(usage, class_names={3: "three"})
    assert len(ex.images) == len(usage) == 8
    assert all(isinstance(i, widgets.Image) and i.value[:4] == b"\x89PNG" for i in ex.images.values())
    # nesting: 1 method stack, 2 pair stacks, 2 class stacks, 4 step stacks; each leaf stack holds step images
    assert [len(ex.stacks[a]) for a in ("method", "pair", "class", "step")] == [1, 2, 2, 4]
    assert all(isinstance(s, widgets.Stack) for v in ex.stacks.values() for s in v)
    leaf = ex.stacks["step"][0]
    assert len(leaf.children) == 2 and all(isinstance(c, widgets.Image) for c in leaf.children)
    assert len(ex.links) == 9 and all(isinstance(l, widgets.jslink(
        (widgets.IntSlider(), "value"), (widgets.IntSlider(), "value")).__class__) for l in ex.links)
    for link in ex.links:
        (src, src_attr), (dst, dst_attr) = link.source, link.target
        assert src_attr == "index" and dst_attr == "selected_index" and isinstance(dst, widgets.Stack)
        assert src in ex.selectors.values()
    assert [o[0] for o in ex.selectors["class"].options] == ["all classes", "three"]
    # the image shown for (unicode, video-audio, 3, 30) sits at the path of indices (1, 0, 1, 1)
    node = ex.root
    for i in (1, 0, 1, 1):
        node = node.children[i]
    assert node is ex.images[("unicode", ("video", "audio"), 3, 30)]


def test_explorer_rejects_incomplete_grid_and_too_many_views():
    usage = _synthetic_usage()
    usage.pop(("unicode", "video-audio", 3, 30))
    with pytest.raises(ValueError, match="missing"):
        view_axes(usage)
    with pytest.raises(ValueError, match="at most 4"):
        build_explorer(_synthetic_usage(), max_views=4)
    with pytest.raises(ValueError, match="two different"):
        as_pair("audio-audio")


def test_render_view_and_overlap_stats():
    counts = {"video": np.array([4, 0, 2, 0]), "audio": np.array([1, 3, 2, 0])}
    stats = overlap_stats(counts, ("video", "audio"))
    assert stats["used_video"] == 2 and stats["used_audio"] == 3
    assert stats["jaccard"] == pytest.approx(2 / 3)
    # video share of code 0 is exactly 0.8: not "more than 80 %", so it counts as shared (boundary rule)
    assert stats["shared"] == pytest.approx(2 / 3) and stats["video_only"] == 0.0
    assert stats["audio_only"] == pytest.approx(1 / 3)
    png = render_view(counts, ("video", "audio"), title="t")
    assert png[:4] == b"\x89PNG" and len(png) > 2000
