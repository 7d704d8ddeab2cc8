"""CODIS baseline (Duan et al., CVPR 2022, "Multi-modal alignment using representation codebook", Uni-Code
ref. [16]): cross-modal alignment through a shared codebook of prototypes, plus instance-level contrast.

Each modality's temporally pooled feature f^m is compared with the L2-normalised codebook vectors (our shared
codebook plays CODIS's prototypes, used without gradient). Sinkhorn-Knopp optimal transport (3 iterations,
eps = 0.05, equal-partition constraint, as in SwAV which CODIS follows) turns the detached scores into soft
assignments Q^m, the target of the OTHER modality's softmax assignment softmax(cos(f^n, C) / 0.1): a cross-modal
swapped prediction. An instance-level symmetric InfoNCE (temperature 0.1) between the pooled features is added.
Losses are summed over modality pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mst import symmetric_info_nce


@torch.no_grad()
def sinkhorn_assignments(scores: torch.Tensor, eps: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Soft assignments ``(B, L)`` (rows sum to 1) with near-equal prototype usage, from scores ``(B, L)``."""
    q = torch.exp((scores - scores.max()) / eps).T            # (L, B), max-shifted for stability
    q = q / q.sum()
    prototypes, batch = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / prototypes       # each prototype gets mass 1/L
        q = q / q.sum(dim=0, keepdim=True) / batch            # each sample gets mass 1/B
    return (q * batch).T


class CODISAlignment(nn.Module):
    """Swapped prototype prediction with Sinkhorn targets over the shared codebook + instance-level InfoNCE."""

    def __init__(self, temperature: float = 0.1, sinkhorn_eps: float = 0.05, sinkhorn_iterations: int = 3,
                 instance_temperature: float = 0.1):
        super().__init__()
        if min(temperature, sinkhorn_eps, instance_temperature) <= 0 or sinkhorn_iterations < 1:
            raise ValueError("CODIS temperatures and eps must be > 0 and sinkhorn_iterations >= 1")
        self.temperature, self.eps, self.iterations = float(temperature), float(sinkhorn_eps), int(sinkhorn_iterations)
        self.instance_scale = 1.0 / float(instance_temperature)

    def forward(self, ctx) -> torch.Tensor:
        pooled = ctx.pooled()
        prototypes = F.normalize(ctx.embedding.detach(), dim=-1)
        scores = {m: F.normalize(v, dim=-1) @ prototypes.T for m, v in pooled.items()}          # (B, L)
        targets = {m: sinkhorn_assignments(s, self.eps, self.iterations) for m, s in scores.items()}
        log_probs = {m: F.log_softmax(s / self.temperature, dim=-1) for m, s in scores.items()}
        loss = 0.0
        for a, b in ctx.pairs():
            swapped = -((targets[a] * log_probs[b]).sum(-1).mean() + (targets[b] * log_probs[a]).sum(-1).mean()) / 2
            loss = loss + swapped + symmetric_info_nce(pooled[a], pooled[b], self.instance_scale)
        return loss
