"""TURN baseline (Zhao et al. 2022, Uni-Code ref. [20]): self-cross reconstruction to increase cross-modal mutual
information in a unified discrete representation, plus a pooled contrastive term.

A small MLP shared by all modalities decodes quantized codes back to semantic features. For each modality m it
reconstructs the (detached) target z^m from m's own straight-through codes (self) and from every paired modality
n's codes at the same (sample, position) (cross): L_rec = sum_m [MSE(g(q^m), z^m) + sum_{n != m} MSE(g(q^n), z^m)],
so codes that are interchangeable across modalities are rewarded. A symmetric InfoNCE (temperature 0.1) on
temporally pooled z of each modality pair is added.

The original works at region/clip level (one vector per image or clip); this is our adaptation to the fine-grained
sequence setting, reconstructing every time step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mst import symmetric_info_nce


class TURNAlignment(nn.Module):
    """Shared MLP decoder for self and cross reconstruction of semantic features + pooled contrastive term."""

    def __init__(self, dim: int, hidden: int | None = None, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"TURN temperature must be > 0, got {temperature}")
        hidden = hidden or dim
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.scale = 1.0 / float(temperature)

    def forward(self, ctx) -> torch.Tensor:
        if set(ctx.quantized) != set(ctx.modalities):
            raise ValueError(f"TURN needs quantized vectors for {ctx.modalities}, got {tuple(ctx.quantized)}")
        decoded = {m: self.decoder(q) for m, q in ctx.quantized.items()}
        targets = {m: v.detach() for m, v in ctx.z.items()}
        names = ctx.modalities
        reconstruction = sum(F.mse_loss(decoded[source], targets[m]) for m in names for source in names)
        pooled = ctx.pooled()
        contrastive = sum(symmetric_info_nce(pooled[a], pooled[b], self.scale) for a, b in ctx.pairs())
        return reconstruction + contrastive
