"""Training objectives beyond reconstruction and commitment: DCID (CLUB, Cross-CPC), CMCM and the compared
alignment methods of Table 1 (S-MiT, MST, CODIS, TURN; Uni-Code Sec. 5.2).

Every compared method is an ``nn.Module`` whose ``forward(ctx: AlignmentContext)`` returns a scalar loss; the model
adds ``alignment_weight`` times it to the main objective. ``build_alignment(name, cfg)`` is the registry.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ALIGNMENTS
from .club import ClubEstimator
from .codis import CODISAlignment
from .cpc import CrossCPC
from .mst import MSTAlignment
from .smit import SMiTAlignment
from .turn import TURNAlignment


@dataclass
class AlignmentContext:
    """What the model hands a compared alignment method for one batch.

    ``z``: pre-quantisation semantic features per modality ``(B, T, D)``; ``quantized``: straight-through code
    vectors ``(B, T, D)`` (value = code, gradient flows to z); ``indices``: code indices ``(B, T)``;
    ``embedding``: the shared codebook ``(L, D)`` (no gradient).
    """

    z: dict[str, torch.Tensor]
    quantized: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]
    embedding: torch.Tensor

    def __post_init__(self):
        names = tuple(self.z)
        if not 2 <= len(names) <= 3:
            raise ValueError(f"AlignmentContext needs 2 or 3 modalities, got {names}")
        shape = tuple(self.z[names[0]].shape)
        if len(shape) != 3 or any(tuple(v.shape) != shape for v in self.z.values()):
            shapes = {m: tuple(v.shape) for m, v in self.z.items()}
            raise ValueError(f"z must hold equal (B, T, D) tensors, got {shapes}")
        if self.quantized and set(self.quantized) != set(names):
            raise ValueError(f"quantized must have the modalities {names}, got {tuple(self.quantized)}")
        if self.embedding.dim() != 2 or self.embedding.shape[1] != shape[2]:
            raise ValueError(f"embedding must be (L, {shape[2]}), got {tuple(self.embedding.shape)}")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.z)

    def pairs(self) -> list[tuple[str, str]]:
        """Unordered modality pairs (1 for two modalities, 3 for three)."""
        return list(itertools.combinations(self.modalities, 2))

    def pooled(self) -> dict[str, torch.Tensor]:
        """Temporal mean of z per modality, ``(B, D)``: the clip-level feature of the coarse-grained methods."""
        return {m: v.mean(dim=1) for m, v in self.z.items()}


def build_alignment(name: str, cfg) -> nn.Module | None:
    """The compared method ``name`` (``config.ALIGNMENTS``) for a ``ModelConfig``; ``"none"`` gives None."""
    if name == "none":
        return None
    builders = {"smit": lambda: SMiTAlignment(), "mst": lambda: MSTAlignment(cfg.hidden_dim),
                "codis": lambda: CODISAlignment(), "turn": lambda: TURNAlignment(cfg.hidden_dim)}
    if name not in builders:
        raise ValueError(f"unknown alignment {name!r}; expected one of {ALIGNMENTS}")
    return builders[name]()
