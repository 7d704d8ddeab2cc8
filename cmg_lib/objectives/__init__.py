"""Training objectives beyond reconstruction and commitment: DCID (CLUB, Cross-CPC), CMCM and the compared
alignment methods of Table 1 (S-MiT, MST, CODIS, TURN; Uni-Code Sec. 5.2).

Every compared method is an ``nn.Module`` whose ``forward(ctx: AlignmentContext)`` returns a scalar loss; the model
adds ``alignment_weight`` times it to the main objective. ``build_alignment(name, cfg)`` is the registry.
"""
from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass

import torch
from torch import nn

from .club import ClubEstimator
from .cpc import CrossCPC


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
    from ..config import ALIGNMENTS
    if name == "none":
        return None
    dim = cfg.hidden_dim
    if name == "smit":
        from .smit import SMiTAlignment
        return SMiTAlignment()
    if name == "mst":
        from .mst import MSTAlignment
        return MSTAlignment(dim)
    if name == "codis":
        from .codis import CODISAlignment
        return CODISAlignment()
    if name == "turn":
        from .turn import TURNAlignment
        return TURNAlignment(dim)
    raise ValueError(f"unknown alignment {name!r}; expected one of {ALIGNMENTS}")


_LAZY = {"cmcm_loss": ".cmcm", "SMiTAlignment": ".smit", "MSTAlignment": ".mst", "CODISAlignment": ".codis",
         "TURNAlignment": ".turn", "symmetric_info_nce": ".mst"}
__all__ = ["AlignmentContext", "ClubEstimator", "CrossCPC", "build_alignment", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
