"""Figures and the interactive explorer of the book.

``plots``: training curves, codebook health, Fig. 4 code maps (colour rule of the paper's caption; ``code_maps``:
the figure at page width), UMAP of code vectors, the Fig. 3 codebook-size sweep, learning curves. ``tables``:
result and health tables as readable HTML, every header in words (``comparison_table``: ours beside the paper's;
``table1``; ``category_table``: Fig. 4's colour shares). ``explorer``: the code-distribution explorer whose views
switch in the static book without a kernel (pre-rendered images in jslinked ``widgets.Stack``s), and its synthetic
demonstration counts. ``segmentation``: AVS overlays (Fig. 5). ``tour``: the data tour's figures and tables.
"""
from __future__ import annotations

from .plots import (CATEGORY_COLORS, category_fractions, category_key, code_categories, code_map, code_map_caption,
                    code_maps, codebook_health, codebook_size_sweep, embed_codes, health_table, history_frame,
                    learning_curve, line_styles, loss_curves, training_curves, usage_summary)
from .tables import category_table, comparison_table, readable_table, retrieval_chance, table1

__all__ = ["CATEGORY_COLORS", "category_fractions", "category_key", "category_table", "code_categories", "code_map",
           "code_map_caption", "code_maps", "codebook_health", "codebook_size_sweep", "comparison_table",
           "embed_codes", "health_table", "history_frame", "learning_curve", "line_styles", "loss_curves",
           "training_curves", "usage_summary", "readable_table", "retrieval_chance", "table1", "build_explorer",
           "live_explorer"]


def __getattr__(name: str):
    if name in ("build_explorer", "live_explorer"):      # ipywidgets is imported only when the explorer is used
        from . import explorer

        return getattr(explorer, name)
    raise AttributeError(f"module 'cmg_lib.viz' has no attribute {name!r}")
