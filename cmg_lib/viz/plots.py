"""Figures of the book: training curves, codebook health, Fig. 4 code maps, Fig. 3 codebook-size sweep.

Inputs are plain structures so every function is testable without a model:

* a training history is a list of per-log-step dicts (``{"step": 20, "loss": 3.1, "commit": ...}``) or a dict of
  lists (``cmg_lib.experiments.run_history``);
* code usage is ``{modality: counts (L,)}`` (``cmg_lib.usage.code_usage`` gives one per class; the statistics and
  the Fig. 4 category rule live in ``cmg_lib.usage``).

Fig. 4 colour rule (paper caption): a code is **blue** when video makes up more than 80 % of the audio + video
quantisations that picked it, **red** when audio does, **green** when each modality accounts for at least 20 %
(the caption says "more than 20 %"; the shares 0.2 / 0.8 themselves, which neither rule covers, count as green),
and grey when neither modality used it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..usage import category_fractions, code_categories, usage_summary

CATEGORY_COLORS = {"video": "#1f5fbf", "audio": "#d62728", "shared": "#2ca02c", "unused": "#c7c7c7"}
MODALITY_COLORS = {"audio": "#d62728", "video": "#1f5fbf", "text": "#9467bd"}


def _pyplot():
    import matplotlib.pyplot as plt   # headless: matplotlib picks Agg itself; in a kernel, the inline backend

    return plt


def history_frame(history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> "pd.DataFrame":
    """A training history as a DataFrame indexed by ``step`` (the row number when no ``step`` field exists)."""
    import pandas as pd

    frame = pd.DataFrame(dict(history) if isinstance(history, Mapping) else list(history))
    if frame.empty:
        raise ValueError("the training history is empty; was the run trained with log_every larger than its steps?")
    if "step" in frame:
        frame = frame.set_index("step")
    return frame.apply(pd.to_numeric, errors="coerce")


def training_curves(history, keys: Sequence[str] | None = None, ax=None, title: str | None = None,
                    logy: bool = False):
    """Loss terms against optimiser step; ``keys`` defaults to every numeric column with ``loss`` or a known term.

    Returns the matplotlib Figure.
    """
    plt = _pyplot()
    frame = history_frame(history)
    if keys is None:
        keys = [c for c in frame.columns if frame[c].notna().any() and c not in ("epoch", "lr", "time")]
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ValueError(f"history has no column(s) {missing}; available: {list(frame.columns)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.2))
    else:
        fig = ax.figure
    for k, (color, style) in zip(keys, line_styles(len(keys))):
        ax.plot(frame.index, frame[k], label=k, lw=1.4, color=color, linestyle=style)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    if logy:
        ax.set_yscale("symlog", linthresh=1e-2)
    ax.legend(fontsize=7, ncol=max(1, len(keys) // 6 + 1), frameon=False)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


LOSS_PREFIXES = ("recon", "commit", "cpc", "cmcm", "mi/", "club")       # the step's loss terms (step.step_loss)
HEALTH_MARKS = ("perplexity", "active", "mode_agreement")                # the monitor's codebook health columns


def loss_curves(history, title: str = "pre-training loss terms"):
    """The loss and every loss term of a run's history (columns ``loss`` and those starting with
    :data:`LOSS_PREFIXES`, accuracies left out) on a symmetric-log axis (:func:`training_curves`)."""
    frame = history_frame(history)
    keys = [c for c in frame.columns if (c == "loss" or c.startswith(LOSS_PREFIXES)) and "acc" not in c]
    return training_curves(history, keys=keys, title=title, logy=True)


def health_table(history, last: int = 8):
    """The codebook's health over the last ``last`` log entries of a run's history: the shared fraction and every
    column naming perplexity, active codes or mode agreement, as a readable table (headers in words; a column
    constant over those entries is stated once, in the caption)."""
    from .tables import readable_table

    frame = history_frame(history)
    keys = [c for c in frame.columns if c == "shared_fraction" or any(w in c for w in HEALTH_MARKS)]
    return readable_table(frame[keys].tail(last), caption=f"Codebook health at the last {last} log steps",
                          fold_constant=True)


def line_styles(n: int) -> list[tuple[str, str]]:
    """``n`` distinct ``(colour, linestyle)`` pairs: tab10 colours, then the same colours dashed, dotted, ..."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    colors = [colormaps["tab10"](i) for i in range(10)]
    styles = ["-", "--", ":", "-."]
    return [(to_hex(colors[i % 10]), styles[(i // 10) % len(styles)]) for i in range(n)]


def codebook_health(counts: Mapping[str, np.ndarray], ax=None, title: str | None = None):
    """Sorted code-usage curves per modality (a collapsed codebook is a cliff), with used codes and perplexity."""
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3))
    else:
        fig = ax.figure
    summary = usage_summary(counts)
    for m, c in counts.items():
        c = np.sort(np.asarray(c, dtype=np.float64))[::-1]
        share = c / max(c.sum(), 1.0)
        s = summary[m]
        ax.plot(np.arange(1, c.size + 1), share, color=MODALITY_COLORS.get(m), lw=1.6,
                label=f"{m}: {s['used']:.0f} codes used, perplexity {s['perplexity']:.1f}")
    ax.set_xlabel("code rank")
    ax.set_ylabel("share of quantisations")
    ax.set_yscale("log")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _category_color(cat: str, pair: tuple[str, str]) -> str:
    if cat == "shared" or cat == "unused":
        return CATEGORY_COLORS[cat]
    # blue for the first (video in Fig. 4), red for the second (audio)
    return CATEGORY_COLORS["video"] if cat == pair[0] else CATEGORY_COLORS["audio"]


def category_key(pair: tuple[str, str] = ("video", "audio")) -> dict[str, str]:
    """The Fig. 4 colour key: legend text per category, in the order blue, red, green, grey."""
    first, second = pair
    return {first: f"{first} > 80 % of uses", second: f"{second} > 80 % of uses",
            "shared": "each ≥ 20 % (shared)", "unused": "unused"}


def code_map_caption(pair: tuple[str, str] = ("video", "audio")) -> str:
    """A one-paragraph caption (markdown) for Fig. 4 panels drawn by :func:`code_map`."""
    first, second = pair
    return (f"Each dot is one code of the shared codebook, placed by a 2-D UMAP of the code vectors and sized by "
            f"how often it is used on held-out clips. **Blue**: {first} accounts for more than 80 % of the code's "
            f"{first} + {second} uses; **red**: {second} does; **green**: each accounts for at least 20 % (a "
            f"shared code); **grey**: neither modality used it. The panel title gives the share of each colour "
            f"among the used codes.")


def code_map(counts: Mapping[str, np.ndarray], pair: tuple[str, str] = ("video", "audio"),
             coords: np.ndarray | None = None, ax=None, title: str | None = None, show_unused: bool = False,
             legend: bool = True, fontsize: float = 8):
    """Fig. 4: one dot per code coloured by the category rule, sized by total use.

    ``coords`` (L, 2) places the codes (e.g. :func:`embed_codes` of the code vectors); without it codes sit on a
    square grid in index order. ``legend`` draws the colour key (:func:`category_key`) under the panel; ``fontsize``
    is the title's (the key's one point smaller). Returns the Figure.
    """
    plt = _pyplot()
    cats = code_categories(counts, pair)
    total = np.asarray(counts[pair[0]], dtype=np.float64) + np.asarray(counts[pair[1]], dtype=np.float64)
    n = cats.size
    if coords is None:
        side = int(np.ceil(np.sqrt(n)))
        coords = np.stack([np.arange(n) % side, -(np.arange(n) // side)], axis=1).astype(float)
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape != (n, 2):
        raise ValueError(f"coords must have shape ({n}, 2), got {coords.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
    else:
        fig = ax.figure
    keep = np.ones(n, bool) if show_unused else cats != "unused"
    size = 12 + 120 * np.sqrt(total / max(total.max(), 1.0))
    colors = [_category_color(c, pair) for c in cats]
    ax.scatter(coords[keep, 0], coords[keep, 1], s=size[keep], c=[colors[i] for i in np.flatnonzero(keep)],
               alpha=0.85, linewidths=0)
    frac = category_fractions(counts, pair)
    label = (f"{frac['used']} codes used: {100 * frac['shared']:.0f}% shared, "
             f"{100 * frac[pair[0]]:.0f}% {pair[0]}-only, {100 * frac[pair[1]]:.0f}% {pair[1]}-only")
    ax.set_title(f"{title}\n{label}" if title else label, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])
    if legend:
        ax.legend(handles=_key_handles(pair, show_unused), loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2,
                  fontsize=fontsize - 1, frameon=False, handletextpad=0.3, columnspacing=1.0)
    fig.tight_layout()
    return fig


def _key_handles(pair: tuple[str, str], show_unused: bool, markersize: float = 7) -> list:
    """Legend handles of the colour key (:func:`category_key`), grey only when unused codes are drawn."""
    from matplotlib.lines import Line2D

    key = category_key(pair)
    return [Line2D([], [], marker="o", linestyle="", markersize=markersize, color=_category_color(c, pair),
                   label=key[c]) for c in key if c != "unused" or show_unused]


def code_maps(models: Mapping[tuple[str, int], Any], usage: Mapping[tuple[str, int], Mapping[str, Any]], seed: int,
              pair: tuple[str, str] = ("video", "audio"), width: float = 7.0, umap_seed: int = 0):
    """Fig. 4 at page width: one :func:`code_map` per method, one panel per row, for pre-training seed ``seed``
    (``models[(method, seed)]``: a model whose ``codebook.embedding`` holds the code vectors, placed by
    :func:`embed_codes`; ``usage[(method, seed)]["all"]``: its code counts, ``usage.code_usage``), under one colour
    key in the titles' type size. Returns the Figure."""
    from .tables import METHOD_NAMES

    plt = _pyplot()
    methods = [m for m, s in models if s == seed]
    if not methods:
        raise ValueError(f"no model of pre-training seed {seed}; the models are of {sorted({s for _, s in models})}")
    fig, axes = plt.subplots(len(methods), 1, figsize=(width, 0.85 * width * len(methods) + 0.6), squeeze=False)
    for ax, method in zip(axes[:, 0], methods):
        vectors = models[(method, seed)].codebook.embedding.detach().cpu().numpy()
        code_map(usage[(method, seed)]["all"], pair, coords=embed_codes(vectors, seed=umap_seed), ax=ax,
                 title=METHOD_NAMES.get(method, method), show_unused=True, legend=False, fontsize=12)
    fig.legend(handles=_key_handles(pair, True, markersize=10), loc="upper center", ncol=2, fontsize=12,
               frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / fig.get_figheight()))
    return fig


def embed_codes(vectors: np.ndarray, seed: int = 0, n_neighbors: int = 10) -> np.ndarray:
    """2-D UMAP of code vectors (L, D) -> (L, 2). Costs ~25 s of numba compilation per fresh process: call it
    in one notebook only."""
    import warnings

    import umap

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] < 4:
        raise ValueError(f"embed_codes needs (L >= 4, D) code vectors, got {vectors.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=min(n_neighbors, vectors.shape[0] - 1), random_state=seed, init="random")
        return reducer.fit_transform(vectors)


def codebook_size_sweep(frame: "pd.DataFrame", x: str = "codebook_size", y: str = "mean", err: str = "std",
                        hue: str = "direction", ax=None, title: str | None = None, ylabel: str = "accuracy (%)",
                        paper: Mapping[str, Mapping[int, float]] | None = None, paper_label: str = "paper"):
    """Fig. 3: a metric against codebook size, one line per ``hue`` value, error bars = ``err`` (the standard
    deviation over the runs, ``experiments.tables.STANDARD_DEVIATION``; the y label says so).

    ``frame`` is long-form, e.g. ``cmg_lib.experiments.aggregate(records, rows="codebook_size",
    cols="direction", value="metric")``. ``paper`` overlays the paper's values, ``{hue value: {size: value}}``
    (e.g. ``{"V→A": {...}, "A→V": {...}}``), as dashed lines with open markers in the colour of our line.
    """
    plt = _pyplot()
    for col in (x, y, hue):
        if col not in frame.columns:
            raise ValueError(f"sweep frame has no column {col!r}; columns: {list(frame.columns)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.2))
    else:
        fig = ax.figure
    colors = {}
    for name, group in frame.groupby(hue, sort=False):
        group = group.sort_values(x)
        yerr = group[err] if err in group else None
        bars = ax.errorbar(group[x], group[y], yerr=yerr, marker="o", capsize=3, lw=1.5,
                           label=f"{name} (ours)" if paper else str(name))
        colors[str(name)] = bars.lines[0].get_color()
    ticks = set(frame[x].unique())
    for name, values in (paper or {}).items():
        sizes = sorted(values)
        ticks |= set(sizes)
        ax.plot(sizes, [values[s] for s in sizes], linestyle="--", marker="o", markerfacecolor="none", lw=1.2,
                color=colors.get(str(name)), label=f"{name} ({paper_label})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([str(int(v)) for v in sorted(ticks)])
    ax.set_xlabel("codebook size L")
    ax.set_ylabel(f"{ylabel}, mean ± standard deviation" if err == "std" and err in frame.columns else ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curve(rows: Sequence[Mapping[str, Any]], measures: Sequence[str] = ("labelled", "cross", "same code"),
                   x: str = "updates", title: str | None = None):
    """One panel per measure against ``x`` (log scale): a thin line per pre-training seed, the mean over seeds
    bold. ``rows`` are long-form ``{x, "seed", measure: value, ...}`` (``experiments.why.curve_table``).
    Returns the matplotlib Figure."""
    plt = _pyplot()
    if not rows:
        raise ValueError("learning_curve needs at least one row")
    missing = [k for k in (x, "seed", *measures) if k not in rows[0]]
    if missing:
        raise ValueError(f"learning-curve rows lack {missing}; they have {sorted(rows[0])}")
    fig, axes = plt.subplots(1, len(measures), figsize=(3.3 * len(measures), 3.0), squeeze=False)
    steps = sorted({r[x] for r in rows})
    for ax, measure in zip(axes[0], measures):
        for seed in sorted({r["seed"] for r in rows}):
            points = sorted((r[x], r[measure]) for r in rows if r["seed"] == seed)
            ax.plot(*zip(*points), color="#9a9a9a", lw=0.9, marker=".", label=f"seed {seed}")
        means = [np.nanmean([r[measure] for r in rows if r[x] == s]) for s in steps]
        ax.plot(steps, means, color="#1f5fbf", lw=2.2, marker="o", label="mean over seeds")
        ax.set_xscale("log")
        ax.set_xticks(steps)
        ax.set_xticklabels([str(int(s)) for s in steps], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel(x)
        ax.set_ylabel(f"{measure} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
