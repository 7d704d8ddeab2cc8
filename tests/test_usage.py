"""cmg_lib.usage: one implementation of code-usage statistics, checked on hand-made indices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cmg_lib import usage


def test_histograms_and_perplexity():
    idx = torch.tensor([[[0, 1, 2, 3]], [[5, 5, 5, 5]]])            # (M=2, B=1, T=4)
    counts = usage.histograms(idx, 8)
    assert counts.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 4, 0, 0]]
    assert usage.perplexity(counts).tolist() == pytest.approx([4.0, 1.0])    # uniform over 4 codes; one code
    assert usage.perplexity(torch.zeros(3)).item() == 0.0
    assert usage.shared_fraction(counts) == 0.0
    assert usage.shared_fraction(torch.tensor([[1, 2, 0], [3, 0, 0]])) == pytest.approx(0.5)


def test_mode_agreement_breaks_ties_by_the_lowest_code():
    idx = torch.tensor([[[1, 1, 2], [3, 4, 4], [0, 2, 2]],             # modes 1, 4, 2
                        [[1, 2, 2], [4, 3, 3], [2, 0, 0]]])            # modes 2, 3, 0
    assert usage.mode_agreement(idx, 5) == (0, 3)
    tie = torch.tensor([[[2, 1]], [[1, 3]]])                            # ties: lowest is 1 in both
    assert usage.mode_agreement(tie, 4) == (1, 1)


def test_code_counts_add_up_and_name_their_measures():
    first = usage.CodeCounts.of(torch.tensor([[[0, 1, 1]], [[1, 1, 2]]]), 4)     # modes 1, 1: one clip agrees
    second = usage.CodeCounts.of(torch.tensor([[[3, 3, 3]], [[2, 2, 0]]]), 4)    # modes 3, 2: it does not
    window = first + second
    assert window.counts.tolist() == [[1, 2, 0, 3], [1, 2, 3, 0]] and (window.agreeing, window.samples) == (1, 2)
    health = window.health(("audio", "video"))
    assert list(health) == ["perplexity/audio", "active_codes/audio", "perplexity/video", "active_codes/video",
                            "shared_fraction", "mode_agreement"]
    assert health["active_codes/audio"] == 3 and health["shared_fraction"] == pytest.approx(2 / 4)
    assert health["mode_agreement"] == 0.5
    assert health["perplexity/video"] == pytest.approx(usage.perplexity(torch.tensor([1.0, 2, 3, 0])).item())


def test_usage_summary_and_categories():
    counts = {"video": np.array([9, 1, 5, 0]), "audio": np.array([1, 9, 5, 0])}
    summary = usage.usage_summary(counts)
    assert summary["video"]["used"] == 3 and summary["video"]["top_share"] == pytest.approx(9 / 15)
    assert list(usage.code_categories(counts)) == ["video", "audio", "shared", "unused"]
    assert usage.category_fractions(counts) == {"video": pytest.approx(1 / 3), "audio": pytest.approx(1 / 3),
                                                "shared": pytest.approx(1 / 3), "used": 3}
