"""MICU's fine-coarse masked InfoNCE (FCMI; ICCV 2025, arXiv 2507.14935; book/differences.md#micu-fcmi).

Released ``pretrain_micu.py:444-448`` and ``:563-575``: one keep-mask ``(B, T)`` is drawn per batch, each
(clip, time step) dropped with probability ``ratio`` (released 0.3), and the *same* mask multiplies every
modality's semantic features ``z`` (``(B, T, D)``, before quantisation). For every ordered pair of modalities
(m, n), the same modality included (9 pairs for three modalities, 4 for two):

* **fine**: within each clip, the masked time steps of m are the queries and the unmasked time steps of n the keys
  of an InfoNCE over the clip's T steps (positive: the same step), averaged over the clips;
* **coarse**: across the batch, the time-mean of masked m against the time-mean of unmasked n (positive: the same
  clip).

``fine`` and ``coarse`` are each the sum over the pairs; both enter the loss with weight 1. The release also
computes similarity scores for an adaptive mask ratio (``:578-614``) but never uses them: the ratio stays 0.3.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .infonce import DEFAULT_TEMPERATURE, info_nce


def time_mask(batch: int, segments: int, ratio: float, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> Tensor:
    """The keep-mask ``(B, T)`` of one batch: 1 where ``uniform > ratio`` (kept), 0 where the step is masked."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"the mask ratio must be in [0, 1), got {ratio}")
    return (torch.rand(batch, segments, generator=generator) > ratio).float().to(device)


def fcmi_losses(z: Mapping[str, Tensor], keep: Tensor, temperature: float = DEFAULT_TEMPERATURE
                ) -> tuple[Tensor, Tensor]:
    """``(fine, coarse)`` FCMI terms of the semantic features ``z[m] (B, T, D)`` under the keep-mask ``keep``
    ``(B, T)`` (the module docstring)."""
    names = list(z)
    shapes = {m: tuple(v.shape) for m, v in z.items()}
    first = shapes[names[0]] if names else ()
    if len(names) < 2 or len(first) != 3 or any(s != first for s in shapes.values()):
        raise ValueError(f"FCMI needs >= 2 modalities of one shape (B, T, D), got {shapes}")
    if tuple(keep.shape) != first[:2]:
        raise ValueError(f"the keep-mask must be (B, T) = {first[:2]}, got {tuple(keep.shape)}")
    masked = {m: v * keep.to(v.dtype).unsqueeze(-1) for m, v in z.items()}
    fine = torch.stack([info_nce(masked[m], z[n], temperature) for m in names for n in names]).sum()
    coarse = torch.stack([info_nce(masked[m].mean(dim=1), z[n].mean(dim=1), temperature)
                          for m in names for n in names]).sum()
    return fine, coarse
