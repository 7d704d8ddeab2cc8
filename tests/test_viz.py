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


def test_many_loss_curves_get_distinct_colour_and_style():
    from cmg_lib.viz.plots import line_styles

    keys = [f"term{i}" for i in range(14)]
    hist = [{"step": s, **{k: float(i + s) for i, k in enumerate(keys)}} for s in range(1, 4)]
    lines = training_curves(hist, keys=keys).axes[0].get_lines()
    looks = {(matplotlib.colors.to_hex(l.get_color()), l.get_linestyle()) for l in lines}
    assert len(lines) == 14 and len(looks) == 14
    assert line_styles(11)[10] == (line_styles(1)[0][0], "--")


def test_code_map_draws_its_colour_key_and_caption_names_the_rule():
    from cmg_lib.viz.plots import CATEGORY_COLORS, code_map_caption

    counts = {"video": np.array([3, 0, 5, 1]), "audio": np.array([1, 2, 5, 0])}
    legend = code_map(counts).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["video > 80 % of uses", "audio > 80 % of uses",
                                                          "each ≥ 20 % (shared)"]
    assert [matplotlib.colors.to_hex(h.get_color()) for h in legend.legend_handles] == [
        CATEGORY_COLORS["video"], CATEGORY_COLORS["audio"], CATEGORY_COLORS["shared"]]
    assert len(code_map(counts, show_unused=True).axes[0].get_legend().get_texts()) == 4
    assert code_map(counts, legend=False).axes[0].get_legend() is None
    assert "more than 80 %" in code_map_caption() and "**green**" in code_map_caption()


def test_sweep_overlays_the_papers_values_in_our_colour():
    frame = pd.DataFrame({"codebook_size": [16, 32, 16, 32], "direction": ["V→A", "V→A", "A→V", "A→V"],
                          "mean": [1, 2, 3, 4], "std": [0.1, 0.2, 0.1, 0.3]})
    ax = codebook_size_sweep(frame, paper={"V→A": {16: 10.0, 400: 12.0}}).axes[0]
    paper = [l for l in ax.get_lines() if l.get_label() == "V→A (paper)"]
    assert len(paper) == 1 and list(paper[0].get_xdata()) == [16, 400] and list(paper[0].get_ydata()) == [10, 12]
    assert paper[0].get_linestyle() == "--"
    ours = [c for c in ax.containers if c.get_label() == "V→A (ours)"][0]
    assert ours.lines[0].get_color() == paper[0].get_color()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32", "400"]


def test_overlay_figure_row_labels_and_key():
    from cmg_lib.viz.segmentation import overlay_figure

    frames, masks = np.zeros((2, 8, 8)), np.zeros((2, 8, 8))
    fig = overlay_figure(frames, masks, masks, masks, row_labels=['query: "one"', 'query: "two"'])
    assert fig.axes[4].get_ylabel() == 'query: "two"'
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ground-truth mask",
                                                                  "predicted mask (probability > 0.5)"]
    with pytest.raises(ValueError, match="one label per row"):
        overlay_figure(frames, masks, masks, masks, row_labels=["only one"])


def test_explorer_offers_every_pair_the_counts_hold_and_disables_single_options():
    from cmg_lib.viz.explorer import expand_pairs

    rng = np.random.default_rng(0)
    usage = {("m", ("video", "audio"), "all", s): {k: rng.integers(0, 5, 8) for k in ("video", "audio", "text")}
             for s in (1, 2)}
    assert sorted({k[1] for k in expand_pairs(usage)}) == [("audio", "text"), ("video", "audio"), ("video", "text")]
    ex = build_explorer(usage)
    assert [o[0] for o in ex.selectors["pair"].options] == ["video – audio", "video – text", "audio – text"]
    assert not ex.selectors["pair"].disabled and ex.selectors["method"].disabled and ex.selectors["class"].disabled
    assert len(ex.images) == 6
    only_av = build_explorer(_synthetic_usage())
    assert len(only_av.selectors["pair"].options) == 1 and only_av.selectors["pair"].disabled


def test_explorer_static_fallback_shows_first_view_off_http():
    import base64

    ex = build_explorer(_synthetic_usage())
    first = ex.images[("baseline", ("video", "audio"), "all", 10)].value
    assert base64.b64encode(first).decode() in ex.fallback_html
    assert "make serve" in ex.fallback_html and "location.protocol" in ex.fallback_html


def test_synthetic_counts_align_or_separate_and_sharpen_with_training():
    from cmg_lib.viz.explorer import synthetic_counts, synthetic_usage

    aligned = synthetic_counts("aligned", 1, 100, rng=np.random.default_rng(0))
    separate = synthetic_counts("separate", 1, 100, rng=np.random.default_rng(0))
    # class 1's bump is at code 13; "separate" moves audio's half a codebook (16) away
    assert int(np.argmax(aligned["video"])) == int(np.argmax(aligned["audio"])) == 13
    assert int(np.argmax(separate["video"])) == 13 and int(np.argmax(separate["audio"])) == 29
    assert 340 < aligned["video"].sum() < 460                            # Poisson around 400 uses
    early, late = (synthetic_counts("aligned", 0, s, rng=np.random.default_rng(1))["video"] for s in (1, 100))
    assert (late > 0).sum() < (early > 0).sum()                          # fewer codes in use after training
    every = synthetic_counts("aligned", "all", 10, rng=np.random.default_rng(0))["video"]
    assert all(every[c] > 0 for c in (5, 13, 21))                        # one bump per class 0-2
    usage = synthetic_usage(classes=("all", 0), steps=(1, 10))
    assert len(usage) == 2 * 2 * 2 and set(next(iter(usage.values()))) == {"video", "audio"}
    again = synthetic_usage(classes=("all", 0), steps=(1, 10))
    assert all(np.array_equal(usage[k]["audio"], again[k]["audio"]) for k in usage)     # seeded
    stats = {m: overlap_stats(usage[(m, ("video", "audio"), 0, 10)], ("video", "audio")) for m in ("aligned", "separate")}
    assert stats["aligned"]["jaccard"] > 0.5 > stats["separate"]["jaccard"]


def test_overlap_table_means_over_classes_per_method_and_step():
    from cmg_lib.viz.explorer import overlap_table

    same = {"video": np.array([2, 2, 0, 0]), "audio": np.array([2, 2, 0, 0])}
    apart = {"video": np.array([2, 0, 0, 0]), "audio": np.array([0, 0, 2, 0])}
    usage = {("m", "video-audio", "all", 1): same, ("m", "video-audio", 0, 1): apart}
    t = overlap_table(usage)
    assert t.parts[0].loc[("m", 1), "jaccard"] == pytest.approx(0.5) and ">Jaccard index<" in t.html


def test_code_maps_draw_one_panel_per_row_under_one_legible_key():
    import types

    import torch

    from cmg_lib.viz import code_maps

    rng = np.random.default_rng(0)
    model = types.SimpleNamespace(codebook=types.SimpleNamespace(embedding=torch.tensor(rng.normal(size=(12, 4)))))
    counts = {"all": {"video": rng.integers(0, 5, 12), "audio": rng.integers(0, 5, 12)}}
    models = {("baseline", 0): model, ("unicode", 0): model, ("unicode", 1): model}
    fig = code_maps(models, {k: counts for k in models}, seed=0)
    assert len(fig.axes) == 2 and fig.axes[0].get_title().startswith("baseline\n")
    assert fig.axes[1].get_title().startswith("Uni-Code\n")                 # the paper's names
    (x0, y0), (x1, y1) = (ax.get_position().p0 for ax in fig.axes)
    assert x0 == pytest.approx(x1) and y0 > y1                               # stacked, not side by side
    assert fig.get_figwidth() >= 7 and all(ax.get_legend() is None for ax in fig.axes)
    key = fig.legends[0]
    assert [t.get_text() for t in key.get_texts()][-1] == "unused" and key.get_texts()[0].get_fontsize() >= 12
    with pytest.raises(ValueError, match="no model of pre-training seed 5"):
        code_maps(models, {}, seed=5)


def test_data_tour_figures_and_tables():
    from cmg_lib.viz import tour

    frames = np.zeros((10, 8, 8, 1), np.uint8)
    clip = {"frames": frames, "audio_labels": [3] * 5 + [-1] * 5, "video_labels": [-1] * 10,
            "mask": frames, "class_name": "forty two"}
    fig = tour.clip_frames(clip)
    assert len(fig.axes) == 10 and fig.axes[0].get_title() == "a:3 v:-" and fig.axes[9].get_title() == "a:- v:-"
    assert len(tour.avs_frames(clip, count=3).axes) == 6
    agreement = tour.agreement_table({"both, same event": 0.4631, "neither": 0.5369})
    assert "<td>0.46</td>" in agreement.html and ">share of segments<" in agreement.html
    probes = {"within": {"audio": {"accuracy": 0.5, "event_accuracy": 0.25, "majority": 0.4}},
              "cross": {"audio->video": {"accuracy": 0.05, "chance": 0.036, "source_accuracy": 0.2}}}
    t = tour.probe_tables(probes)
    assert "by 20.0 points" in t.html and ">audio→video<" in t.html and ">accuracy on event segments<" in t.html
    assert "<td>50</td><td>25</td><td>40</td>" in t.html and ">source→target<" in t.html
    shares = tour.variance_table({"audio": {"class": 0.464, "voice": 0.128}, "video": {"class": 0.098, "voice": 4e-32}})
    assert "<td>46.4</td><td>12.8</td>" in shares.html and "<td>9.8</td><td>0</td>" in shares.html   # float noise: 0


def test_feature_table_states_shapes_and_moments():
    import torch

    from cmg_lib.viz import tour

    class Data:
        modalities = ("audio",)

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"audio": torch.full((2, 4), float(i))}

    t = tour.feature_table(Data())
    assert ">3 × 2 × 4<" in t.html and "<td>1</td>" in t.html and "first 3 clips" in t.html   # mean of 0, 1, 2


def test_figure5_labels_each_row_with_its_clips_query():
    from cmg_lib.viz.segmentation import figure5

    class AVS:
        class_names = ["one", "two", "three"]

        def __getitem__(self, i):
            return {"label": [2, 0, 1][i]}

    masks = np.zeros((2, 8, 8))
    preds = {m: {"frames": masks, "masks": masks, "pred": masks, "index": np.array([0, 2])}
             for m in ("baseline", "unicode")}
    fig = figure5(preds, AVS())
    assert [fig.axes[i].get_ylabel() for i in (0, 4)] == ['query: "three"', 'query: "two"']
    assert [fig.axes[i].get_title() for i in (2, 3)] == ["baseline (T→A)", "Uni-Code (T→A)"]


def test_pretraining_curves_and_health_table_pick_their_columns():
    from cmg_lib.viz.plots import health_table, loss_curves

    hist = [{"step": s, "loss": 3.0 / s, "recon/audio": 1.0, "cpc_acc/audio->video": 0.5, "mi/video": 0.1,
             "perplexity/audio": 9.0 + s, "shared_fraction": 0.25, "lr": 1e-3} for s in range(1, 11)]
    assert {l.get_label() for l in loss_curves(hist).axes[0].get_lines()} == {"loss", "recon/audio", "mi/video"}
    t = health_table(hist, last=3)
    assert list(t.parts[0].columns) == ["perplexity/audio"] and list(t.parts[0].index) == [8, 9, 10]
    assert ">perplexity, audio<" in t.html and "in every row: shared codes = 0.25" in t.html


def test_readable_table_takes_rows_as_a_mapping_and_retrieval_chance_names_the_gallery():
    from cmg_lib.viz.tables import readable_table, retrieval_chance

    t = readable_table({"audio": {"used": 22, "top_share": 0.3412}, "video": {"used": 31, "top_share": 0.1}})
    assert '<th class="cmg-row">audio</th><td>22</td><td>0.34</td>' in t.html and ">top code&#x27;s share<" in t.html
    assert retrieval_chance([{"n_test": 500}]) == ("Chance: R@k = k / gallery size = 1.00 % (R@5), 2.00 % (R@10) "
                                                  "for a gallery of 500 clips.")
    with pytest.raises(ValueError, match="different sizes"):
        retrieval_chance([{"n_test": 500}, {"n_test": 100}])
    with pytest.raises(TypeError, match="mapping of rows"):
        readable_table({"audio": 1})
