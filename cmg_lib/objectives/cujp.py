"""MICU's cross-modal unified jigsaw puzzle (CUJP; ICCV 2025, arXiv 2507.14935; book/differences.md#micu-cujp).

Released ``pretrain_micu.py:142-152``, ``:351-355`` and ``:617-656``: every quantised vector (straight-through,
so the gradient reaches the semantic encoders) is cut into ``chunks`` equal pieces along its D features; for each
piece position one modality is drawn at random for the whole batch, so a puzzle row is assembled from pieces of
different modalities at the same (clip, time step). ``permutations`` orders of the pieces are fixed once per run
(drawn from all ``chunks!`` orders); every row is presented in each fixed order and an MLP
``Linear(D, hidden) -> ReLU -> Linear(hidden, permutations)`` is trained with cross-entropy to name the order.
Released defaults: 2 chunks, 2 orders (so the task is "swapped or not"), hidden 512, weight 1.

The fixed orders are a buffer of the module (``orders``, ``(permutations, chunks)``), drawn from the global torch
generator when the model is built, so a seeded run draws the same and a checkpoint keeps them.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_CHUNKS = 8                      # 8! = 40,320 orders are enumerated once; more would be wasteful


def puzzles(rows: Mapping[str, Tensor], sources: Tensor, orders: Tensor) -> tuple[Tensor, Tensor]:
    """The puzzle inputs ``(P * N, D)`` and their labels ``(P * N,)``.

    ``rows[m]``: ``(N, D)`` vectors of modality m (the same N positions in every modality); ``sources``
    ``(chunks,)``: the index (in ``rows``' order) of the modality each piece position is taken from; ``orders``
    ``(P, chunks)``: the fixed orders. Puzzle p is the pieces laid out in ``orders[p]``; its label is p."""
    names = list(rows)
    n, dim = rows[names[0]].shape
    chunks = int(sources.numel())
    if dim % chunks:
        raise ValueError(f"the code width {dim} must split into {chunks} equal pieces")
    width = dim // chunks
    pieces = [rows[names[int(sources[i])]][:, i * width:(i + 1) * width] for i in range(chunks)]
    inputs = torch.cat([torch.cat([pieces[int(j)] for j in order], dim=1) for order in orders])
    labels = torch.arange(orders.shape[0], device=inputs.device).repeat_interleave(n)
    return inputs, labels


class UnifiedJigsaw(nn.Module):
    """CUJP over 2 or 3 modalities; ``forward(quantized) -> (loss, accuracy)`` on ``quantized[m] (B, T, D)``."""

    def __init__(self, dim: int, chunks: int = 2, permutations: int = 2, hidden: int = 512):
        super().__init__()
        if not 2 <= chunks <= MAX_CHUNKS or dim % chunks:
            raise ValueError(f"jigsaw_chunks must be in [2, {MAX_CHUNKS}] and divide the code width {dim}, "
                             f"got {chunks}")
        if not 2 <= permutations <= math.factorial(chunks):
            raise ValueError(f"jigsaw_permutations must be in [2, {chunks}!], got {permutations}")
        every = list(itertools.permutations(range(chunks)))
        chosen = torch.randperm(len(every))[:permutations]
        self.register_buffer("orders", torch.tensor([every[int(i)] for i in chosen], dtype=torch.long))
        self.chunks = int(chunks)
        self.classifier = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, permutations))

    def forward(self, quantized: Mapping[str, Tensor], generator: torch.Generator | None = None
                ) -> tuple[Tensor, float]:
        names = list(quantized)
        rows = {m: q.reshape(-1, q.shape[-1]) for m, q in quantized.items()}
        sources = torch.randint(len(names), (self.chunks,), generator=generator)
        inputs, labels = puzzles(rows, sources, self.orders)
        logits = self.classifier(inputs)
        with torch.no_grad():
            accuracy = float((logits.argmax(-1) == labels).float().mean())
        return F.cross_entropy(logits, labels), accuracy
