"""Interactive code-distribution explorer (ipywidgets) that keeps working in the static book.

Pick a method, a modality pair, a clip class and a training step; see which codes each modality of the pair uses
and how much the two overlap (the question of the paper's Fig. 4, asked per class and over training).

Input is a plain mapping ``{(method, pair, class, step): {modality: counts (L,)}}`` (``pair`` a 2-tuple of modality
names, or ``"video-audio"``); ``cmg_lib.experiments.code_usage`` produces the per-class counts of one checkpoint.

Static pages have no kernel, so Python callbacks cannot run there. :func:`build_explorer` therefore pre-renders
every view as a PNG ``widgets.Image`` and nests them in ``widgets.Stack``s, one level per selector (method → pair →
class → step); each selector's ``index`` is ``widgets.jslink``-ed to the ``selected_index`` of every stack on its
level, so a reader's clicks switch views in the browser alone (the saved widget state carries the images). Keep it
to a few dozen views: every image is embedded in the page. In a live kernel :func:`live_explorer` recomputes a view
on demand from a callable instead.

The pair selector offers every modality pair the counts hold (a view given for ``("video", "audio")`` whose counts
also hold ``"text"`` yields the video–text and audio–text views too); a selector with a single option is shown
disabled. Widgets need the page served over http: opened as ``file://`` the widget area stays empty, so the explorer
also emits a static image of its first view with a one-line hint, hidden by a one-line script on http(s) pages.
"""
from __future__ import annotations

import base64
import html
import io
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .plots import CATEGORY_COLORS, code_categories

AXES = ("method", "pair", "class", "step")


def as_pair(pair: str | Sequence[str]) -> tuple[str, str]:
    """``"video-audio"`` or ``("video", "audio")`` -> ``("video", "audio")``."""
    parts = tuple(pair.split("-")) if isinstance(pair, str) else tuple(pair)
    if len(parts) != 2 or parts[0] == parts[1]:
        raise ValueError(f"a modality pair names two different modalities, e.g. ('video', 'audio'); got {pair!r}")
    return parts


def view_axes(usage: Mapping[tuple, Mapping[str, np.ndarray]]) -> dict[str, list]:
    """The values of each axis (method, pair, class, step) in first-appearance order; checks the grid is complete."""
    if not usage:
        raise ValueError("the explorer needs at least one view; got an empty usage mapping")
    values: dict[str, list] = {a: [] for a in AXES}
    for key in usage:
        if not isinstance(key, tuple) or len(key) != 4:
            raise ValueError(f"usage keys must be (method, pair, class, step) tuples, got {key!r}")
        for axis, v in zip(AXES, (key[0], as_pair(key[1]), key[2], key[3])):
            if v not in values[axis]:
                values[axis].append(v)
    normalised = {(k[0], as_pair(k[1]), k[2], k[3]) for k in usage}
    missing = [k for k in _grid(values) if k not in normalised]
    if missing:
        raise ValueError(f"the explorer needs every (method, pair, class, step) combination; missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''} ({len(missing)} in all)")
    return values


def expand_pairs(usage: Mapping[tuple, Mapping[str, np.ndarray]]) -> dict[tuple, Mapping[str, np.ndarray]]:
    """Every modality pair each view's counts hold, the given pair first: ``{(method, pair, class, step): counts}``."""
    out: dict[tuple, Mapping[str, np.ndarray]] = {}
    for key, counts in usage.items():
        if not isinstance(key, tuple) or len(key) != 4:
            raise ValueError(f"usage keys must be (method, pair, class, step) tuples, got {key!r}")
        method, pair, cls, step = key
        given = as_pair(pair)
        others = [p for p in itertools.combinations(list(counts), 2) if set(p) != set(given)]
        for p in [given] + others:
            out[(method, p, cls, step)] = counts
    return out


def _grid(values: Mapping[str, list]) -> list[tuple]:
    keys = [()]
    for axis in AXES:
        keys = [k + (v,) for k in keys for v in values[axis]]
    return keys


def overlap_stats(counts: Mapping[str, np.ndarray], pair: tuple[str, str]) -> dict[str, float]:
    """Used codes per modality, their Jaccard overlap, and the Fig. 4 category shares of the used codes."""
    a = np.asarray(counts[pair[0]]) > 0
    b = np.asarray(counts[pair[1]]) > 0
    union = int((a | b).sum())
    cats = code_categories(counts, pair)
    used = max(int((cats != "unused").sum()), 1)
    return {f"used_{pair[0]}": int(a.sum()), f"used_{pair[1]}": int(b.sum()),
            "jaccard": float((a & b).sum() / union) if union else 0.0,
            "shared": float((cats == "shared").sum() / used),
            f"{pair[0]}_only": float((cats == pair[0]).sum() / used),
            f"{pair[1]}_only": float((cats == pair[1]).sum() / used)}


def overlap_table(usage: Mapping[tuple, Mapping[str, np.ndarray]]):
    """The views' overlap (:func:`overlap_stats`: Jaccard index of the used code sets, shared share of the used
    codes) per method and step, averaged over classes and pairs, as a readable table."""
    import pandas as pd

    from .tables import readable_table

    rows = [dict(method=m, step=s, **overlap_stats(v, as_pair(p))) for (m, p, c, s), v in usage.items()]
    frame = pd.DataFrame(rows).pivot_table(index=["method", "step"], values=["jaccard", "shared"])
    return readable_table(frame, caption="Means over the classes of each method and step")


def synthetic_counts(method: str, cls: Any, step: int, codes: int = 32, rng: np.random.Generator | None = None,
                     uses: int = 400) -> dict[str, np.ndarray]:
    """Made-up per-code usage of video and audio for the explorer's demonstration page: Poisson counts (``uses``
    expected per modality) around Gaussian bumps that sharpen with ``step`` (width 6 / log10(10 step)). A class
    ``c`` has its bump at code ``5 + 8c`` (mod ``codes / 2``), class ``"all"`` one bump per class 0-2; in method
    ``"aligned"`` audio's bumps sit on video's, in any other method half a codebook away."""
    rng = np.random.default_rng(0) if rng is None else rng
    grid = np.arange(codes)
    width = 6.0 / np.log10(10 * step)
    offset = 0 if method == "aligned" else codes // 2
    centres = [5 + 8 * k for k in range(3)] if cls == "all" else [(5 + 8 * cls) % (codes // 2)]

    def bumps(shift: int) -> np.ndarray:
        return sum(np.exp(-0.5 * ((grid - (c + shift)) / width) ** 2) for c in centres)

    video, audio = bumps(0), bumps(offset)
    return {"video": rng.poisson(uses * video / video.sum()), "audio": rng.poisson(uses * audio / audio.sum())}


def synthetic_usage(methods: Sequence[str] = ("aligned", "separate"), classes: Sequence = ("all", 0, 1, 2),
                    steps: Sequence[int] = (1, 10, 100), codes: int = 32, seed: int = 0
                    ) -> dict[tuple, dict[str, np.ndarray]]:
    """The explorer's input (``{(method, pair, class, step): counts}``, pair video-audio) of
    :func:`synthetic_counts` for every method, class and step, drawn in that order from one seeded generator."""
    rng = np.random.default_rng(seed)
    return {(m, ("video", "audio"), c, s): synthetic_counts(m, c, s, codes, rng)
            for m in methods for c in classes for s in steps}


def snapshot_views(checkpoints: Mapping[str, Any], steps: Sequence[int], dataset, classes: Sequence,
                   pair: tuple[str, str] = ("video", "audio")) -> dict[tuple, Mapping[str, np.ndarray]]:
    """The explorer's views of runs over training: per method (``checkpoints[method]``: its run's final
    checkpoint), per ``steps`` entry (the run's snapshot there, ``experiments.runs.snapshot``) and per class of
    ``classes`` (``"all"`` or a class index), the code counts on ``dataset`` (``usage.code_usage``)."""
    from ..checkpoint import load_checkpoint
    from ..experiments.runs import snapshot
    from ..usage import code_usage

    views = {}
    for method, ckpt in checkpoints.items():
        for step in steps:
            counts = code_usage(load_checkpoint(snapshot(ckpt, step)), dataset)
            for c in classes:
                views[(method, pair, c, step)] = counts[c]
    return views


def render_view(counts: Mapping[str, np.ndarray], pair: tuple[str, str], title: str = "", dpi: int = 72) -> bytes:
    """One explorer view as PNG bytes: mirrored per-code usage bars of the two modalities (codes coloured by the
    Fig. 4 rule) and the category shares of the used codes."""
    from matplotlib.figure import Figure

    pair = as_pair(pair)
    first = np.asarray(counts[pair[0]], dtype=np.float64)
    second = np.asarray(counts[pair[1]], dtype=np.float64)
    cats = code_categories(counts, pair)
    stats = overlap_stats(counts, pair)
    fig = Figure(figsize=(9, 3.4), dpi=dpi)
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [4, 1.3]})
    codes = np.arange(first.size)
    colors = [CATEGORY_COLORS["shared"] if c == "shared" else CATEGORY_COLORS["unused"] if c == "unused"
              else CATEGORY_COLORS["video"] if c == pair[0] else CATEGORY_COLORS["audio"] for c in cats]
    share_a = first / max(first.sum(), 1.0)
    share_b = second / max(second.sum(), 1.0)
    ax.bar(codes, share_a, width=1.0, color=colors, linewidth=0)
    ax.bar(codes, -share_b, width=1.0, color=colors, linewidth=0, alpha=0.6)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlim(-0.5, first.size - 0.5)
    ax.set_xlabel("code index", fontsize=12)
    ax.set_ylabel(f"{pair[1]}  ·  share  ·  {pair[0]}", fontsize=11)   # rotated: bottom half = second modality
    ax.set_title(title, fontsize=13)
    ax.tick_params(labelsize=10)
    names = [f"{pair[0]} only", "shared", f"{pair[1]} only"]
    vals = [stats[f"{pair[0]}_only"], stats["shared"], stats[f"{pair[1]}_only"]]
    bx.barh(names, vals, color=[CATEGORY_COLORS["video"], CATEGORY_COLORS["shared"], CATEGORY_COLORS["audio"]])
    bx.set_xlim(0, 1)
    bx.set_title(f"Jaccard {stats['jaccard']:.2f}; used {stats[f'used_{pair[0]}']}/{stats[f'used_{pair[1]}']}",
                 fontsize=11)
    bx.tick_params(labelsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@dataclass
class CodeExplorer:
    """The built explorer: ``widget`` to display, plus its parts (for tests and for re-use)."""

    widget: Any
    selectors: dict[str, Any]
    root: Any
    stacks: dict[str, list] = field(default_factory=dict)     # axis -> the stacks switched by that axis' selector
    images: dict[tuple, Any] = field(default_factory=dict)    # view key -> its Image widget
    links: list = field(default_factory=list)
    fallback_html: str = ""                                   # first view + hint, shown on file:// pages only

    def _ipython_display_(self):
        from IPython.display import HTML, display

        display(self.widget)
        if self.fallback_html:
            display(HTML(self.fallback_html))


FILE_HINT = ("This page was opened as a file, so the interactive explorer cannot load; shown is its first view. "
             "Serve the book over http (<code>make serve</code>) to switch views.")


def static_fallback(png: bytes, alt: str, hint: str = FILE_HINT) -> str:
    """HTML with ``png`` and a one-line ``hint``, visible only where the page is not served over http(s)."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<div class="cmg-explorer-fallback"><p class="cmg-hint">{hint}</p>'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width:100%"></div>'
            "<script>(function(){var d=document.currentScript.previousElementSibling;"
            "if(/^https?:$/.test(location.protocol)){d.style.display='none';}})();</script>")


def _label(axis: str, value: Any, class_names: Mapping[Any, str] | None) -> str:
    if axis == "pair":
        return f"{value[0]} – {value[1]}"
    if axis == "class":
        if value == "all":
            return "all classes"
        return str(class_names.get(value, value)) if class_names else str(value)
    if axis == "step":
        return f"step {value}"
    return str(value)


def build_explorer(usage: Mapping[tuple, Mapping[str, np.ndarray]], class_names: Mapping[Any, str] | None = None,
                   max_views: int = 64, dpi: int = 72, all_pairs: bool = True) -> CodeExplorer:
    """Pre-render every view and wire the selectors to nested Stacks with ``jslink`` (works without a kernel).

    ``all_pairs`` adds the views of every other modality pair the counts hold (:func:`expand_pairs`).
    """
    import ipywidgets as widgets

    if all_pairs:
        usage = expand_pairs(usage)
    values = view_axes(usage)
    grid = _grid(values)
    if len(grid) > max_views:
        raise ValueError(f"{len(grid)} views requested; the static explorer embeds every view as an image, keep it "
                         f"to at most {max_views} (fewer classes or steps), or raise max_views")
    lookup = {(k[0], as_pair(k[1]), k[2], k[3]): v for k, v in usage.items()}
    images: dict[tuple, Any] = {}
    stacks: dict[str, list] = {a: [] for a in AXES}

    def nest(level: int, prefix: tuple):
        if level == len(AXES):
            title = " | ".join(_label(a, v, class_names) for a, v in zip(AXES, prefix))
            png = render_view(lookup[prefix], prefix[1], title=title, dpi=dpi)
            img = widgets.Image(value=png, format="png", layout=widgets.Layout(width="100%", max_width="800px"))
            images[prefix] = img
            return img
        children = [nest(level + 1, prefix + (v,)) for v in values[AXES[level]]]
        stack = widgets.Stack(children, selected_index=0)
        stacks[AXES[level]].append(stack)
        return stack

    root = nest(0, ())
    selectors = {}
    for axis in AXES:
        options = [(_label(axis, v, class_names), i) for i, v in enumerate(values[axis])]
        if axis == "step":
            selectors[axis] = widgets.SelectionSlider(options=options, value=0, description="step",
                                                      continuous_update=True, disabled=len(options) == 1)
        else:
            selectors[axis] = widgets.Dropdown(options=options, value=0, description=axis,
                                               disabled=len(options) == 1)
    links = [widgets.jslink((selectors[axis], "index"), (stack, "selected_index"))
             for axis in AXES for stack in stacks[axis]]
    legend = widgets.HTML(
        "<span style='font-size:0.95em'>Bars: share of each modality's quantisations per code (first modality up, second down). "
        f"<span style='color:{CATEGORY_COLORS['video']}'>■</span> first modality &gt; 80 %, "
        f"<span style='color:{CATEGORY_COLORS['audio']}'>■</span> second &gt; 80 %, "
        f"<span style='color:{CATEGORY_COLORS['shared']}'>■</span> both ≥ 20 % (paper Fig. 4). "
        "Views are pre-rendered; switching works without a running kernel.</span>")
    widget = widgets.VBox([widgets.HBox([selectors[a] for a in AXES[:3]]), selectors["step"], root, legend])
    first = grid[0]
    fallback = static_fallback(images[first].value, alt="explorer view: " + " | ".join(
        _label(a, v, class_names) for a, v in zip(AXES, first)))
    return CodeExplorer(widget=widget, selectors=selectors, root=root, stacks=stacks, images=images, links=links,
                        fallback_html=fallback)


def live_explorer(compute: Callable[[str, tuple[str, str], Any, Any], Mapping[str, np.ndarray]],
                  methods: Sequence[str], pairs: Sequence, classes: Sequence, steps: Sequence, dpi: int = 72):
    """A kernel-backed explorer: ``compute(method, pair, class, step) -> {modality: counts}`` runs on every change.

    Only useful in a live notebook (Binder, local Jupyter); in the static book use :func:`build_explorer`.
    """
    import ipywidgets as widgets

    pairs = [as_pair(p) for p in pairs]
    controls = {"method": widgets.Dropdown(options=list(methods), description="method"),
                "pair": widgets.Dropdown(options=[(_label("pair", p, None), p) for p in pairs], description="pair"),
                "cls": widgets.Dropdown(options=list(classes), description="class"),
                "step": widgets.SelectionSlider(options=list(steps), description="step")}
    image = widgets.Image(format="png")

    def update(method, pair, cls, step):
        counts = compute(method, pair, cls, step)
        image.value = render_view(counts, pair, title=f"{method} | {pair[0]} – {pair[1]} | {cls} | step {step}",
                                  dpi=dpi)

    out = widgets.interactive_output(update, controls)     # also renders the first view
    return widgets.VBox([widgets.HBox(list(controls.values())[:3]), controls["step"], image, out])
