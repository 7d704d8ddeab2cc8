"""What the book tells its readers about the scale a page was built at.

``scale_budget(scale)`` is the one place the book (notebooks, ``tools/build_book.py``) reads the per-scale budget
table from; ``scale_banner(scale)`` is the notice a page built at a non-default scale shows at its top.
"""
from __future__ import annotations

import dataclasses
import html
from typing import Any

PUBLISHED_SCALE = "default"      # the scale the published book is built at (``make book``)


def scale_budget(scale: str) -> dict[str, Any]:
    """Steps, seeds, sizes and sweeps of a book scale (``experiments.budgets``' table, as a fresh dict)."""
    from .experiments import budget

    return dataclasses.asdict(budget(scale))


def scale_banner(scale: str) -> str:
    """HTML notice for a page built at ``scale``; ``""`` at the published scale.

    Below the published scale the notice says the numbers test code paths, not the paper's claims; above it, that
    the numbers are not those of the published book. Display it with ``display(HTML(scale_banner(scale)))``.
    """
    if scale == PUBLISHED_SCALE:
        return ""
    from .config import BOOK_EPOCHS
    from .experiments.budgets import SCALES

    def run_text(b: dict[str, Any]) -> str:
        updates = f"{b['book_steps']} updates" if b["book_steps"] else f"{BOOK_EPOCHS} epochs"
        return (f"book recipe {updates}, released recipe {b['pretrain_steps']} steps, pre-training seeds "
                f"{list(b['pretrain_seeds'])}, head seeds {list(b['seeds'])}")

    this, published = scale_budget(scale), scale_budget(PUBLISHED_SCALE)
    run = f"{run_text(this)}, {this['downstream_epochs']} head epochs"
    if SCALES.index(scale) < SCALES.index(PUBLISHED_SCALE):
        title = f"Scale “{scale}”: these numbers test code paths, not claims"
        body = (f"This page was built at scale <code>{html.escape(scale)}</code> ({html.escape(run)}). At this "
                "scale the runs only check that every step of the code works; the tables, figures and verdicts "
                "below say nothing about the paper's claims. The published book is built at scale "
                f"<code>{PUBLISHED_SCALE}</code> (<code>make book</code>, {html.escape(run_text(published))}).")
    else:
        title = f"Scale “{scale}”: not the published book's numbers"
        body = (f"This page was built at scale <code>{html.escape(scale)}</code> ({html.escape(run)}), larger than "
                f"the published book's <code>{PUBLISHED_SCALE}</code> ({html.escape(run_text(published))}); its "
                "numbers differ from the published pages.")
    return (f'<div class="admonition warning cmg-scale-banner"><p class="admonition-title">{html.escape(title)}</p>'
            f"<p>{body}</p></div>")
