"""S-MiT baseline (Monfort et al., CVPR 2021, "Spoken Moments", Uni-Code ref. [43]): clip-level cross-modal
contrastive learning with the masked-margin softmax (MMS) loss.

Each modality's sequence is pooled over time into one clip embedding (the original trains clip-level audio/video
and caption encoders). For a pair (a, b) with cosine similarities S_ij = cos(f^a_i, f^b_j), MMS (Ilharco et al.
2019, used by S-MiT) subtracts a margin M from the positives only and applies an in-batch softmax in both
retrieval directions:
    L = -(1/B) sum_i [ log softmax_j((S - M I)_i. / tau)_i + log softmax_j((S - M I)_.i / tau)_i ].
S-MiT's adaptive mean margin (AMM) replaces the fixed M by a batch-dependent one; we keep the fixed-margin MMS the
Uni-Code comparison describes. ``margin`` and ``temperature`` are our choices (Uni-Code gives none). Losses are
summed over all modality pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_margin_softmax(a: torch.Tensor, b: torch.Tensor, margin: float, temperature: float) -> torch.Tensor:
    """Bidirectional MMS loss between paired rows of ``a`` and ``b`` ``(B, D)`` (cosine similarity)."""
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    logits = (sim - margin * torch.eye(sim.shape[0], device=sim.device, dtype=sim.dtype)) / temperature
    target = torch.arange(sim.shape[0], device=sim.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


class SMiTAlignment(nn.Module):
    """Temporally pooled clip embeddings aligned by MMS over every modality pair (no parameters of its own)."""

    def __init__(self, margin: float = 0.001, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0 or margin < 0:
            raise ValueError(f"S-MiT needs temperature > 0 and margin >= 0, got {temperature}, {margin}")
        self.margin, self.temperature = float(margin), float(temperature)

    def forward(self, ctx) -> torch.Tensor:
        pooled = ctx.pooled()
        return sum(masked_margin_softmax(pooled[a], pooled[b], self.margin, self.temperature) for a, b in ctx.pairs())
