"""The scale banner a page shows when it was not built at the published scale."""
from __future__ import annotations

import pytest

from cmg_lib.experiments.budgets import PUBLISHED_SCALE, budget
from cmg_lib.experiments.notebook import scale_banner


def test_no_banner_at_the_published_scale():
    assert PUBLISHED_SCALE == "default" and scale_banner("default") == ""


def test_smoke_banner_says_code_paths_not_claims_with_its_budget():
    b = budget("smoke")
    text = scale_banner("smoke")
    assert text.startswith('<div class="admonition warning')
    assert "test code paths, not claims" in text
    assert (f"book recipe {b.book_steps} updates (other chapters {b.short_steps}, controlled experiments "
            f"{b.experiment_steps}), released recipe {b.pretrain_steps} updates") in text
    assert f"pre-training seeds {list(b.pretrain_seeds)}, head seeds {list(b.seeds)}" in text
    d = budget("default")       # the published book: the released recipe's 3,000 updates, three pre-training seeds
    assert (f"book recipe 3000 updates (other chapters 250, controlled experiments left to scale full), released "
            f"recipe "
            f"{d.pretrain_steps} updates, pre-training seeds [0, 1, 2]") in text


def test_full_banner_says_not_the_published_numbers():
    text = scale_banner("full")
    assert "not the published book" in text and "code paths" not in text


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="unknown scale"):
        scale_banner("huge")
