"""MST baseline (You et al., ECCV 2022, "Learning visual representation from modality-shared contrastive
language-image pre-training", Uni-Code ref. [13]): modality-shared contrastive learning.

MST shares parameters across modalities; here the shared part is one projection head applied to every
modality's temporally pooled feature, followed by CLIP's symmetric InfoNCE on L2-normalised embeddings with a
learnable temperature (logit scale initialised to 1/0.07 and clamped at 100, as in CLIP). Losses are summed over
all modality pairs; each pair's loss is the mean of the two retrieval directions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP-style loss: cross-entropy of cosine logits ``scale * cos(a_i, b_j)`` in both directions, averaged."""
    logits = logit_scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class MSTAlignment(nn.Module):
    """One projection head shared by all modalities + symmetric InfoNCE with a learnable temperature."""

    def __init__(self, dim: int, init_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        self.head = nn.Linear(dim, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log_scale = math.log(max_scale)

    def forward(self, ctx) -> torch.Tensor:
        embedded = {m: self.head(v) for m, v in ctx.pooled().items()}
        scale = self.log_scale.clamp(max=self.max_log_scale).exp()
        return sum(symmetric_info_nce(embedded[a], embedded[b], scale) for a, b in ctx.pairs())
