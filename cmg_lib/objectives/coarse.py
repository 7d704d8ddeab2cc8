"""FCID's coarse (clip-level) networks (ACL 2025 Findings, arXiv 2403.05168; book/differences.md#fcid-levels).

Released ``ACL25-FCID&TOC/src/model/main_model_2.py:304-343`` (encoders), ``:552-611`` (forward) and ``:981-1017``
(decoders): from a modality's per-second semantic features ``z (B, T, D)``

* ``clip = Linear(mean_t z)`` (``va2vat`` / ``t2vat``: the coarse feature, also the coarse reconstruction target,
  not detached as released);
* ``general = ReLU(Linear(clip))`` (``va_gen_encoder``), the vector the shared codebook quantises (one code per
  clip);
* ``specific = ReLU(Linear(clip))`` (``va_spe_encoder``), what the coarse CLUB separates from ``general``;
* the coarse decoder ``Linear(2D -> D)(cat(Linear(D -> D)(code), specific))`` reconstructs ``clip`` (MSE).

The three encoders are shared by audio and video and text has its own (:func:`group`: ``"av"`` / ``"text"``); each
modality has its own decoder. Downstream the release feeds each second separately through the same path
(``Video_VQ_Encoder_C_split``, ``:458-471``): :meth:`CoarseLevel.per_segment` gives ``general`` per time step, the
mean over one step being that step.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .infonce import DEFAULT_TEMPERATURE, info_nce


def group(modality: str) -> str:
    """Which coarse networks (and which coarse CLUB estimator) a modality uses: ``"av"`` or ``"text"``."""
    return "text" if modality == "text" else "av"


@dataclass
class CoarseFeatures:
    """One modality's clip-level features, each ``(B, D)``."""

    clip: Tensor
    general: Tensor
    specific: Tensor


class CoarseDecoder(nn.Module):
    """Released ``Simple_Decoder``: the code projected, concatenated with the specific feature, one Linear back."""

    def __init__(self, dim: int):
        super().__init__()
        self.code_proj = nn.Linear(dim, dim)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, code: Tensor, specific: Tensor) -> Tensor:
        return self.out(torch.cat([self.code_proj(code), specific], dim=-1))


class CoarseLevel(nn.Module):
    """The coarse encoders per :func:`group` and a coarse decoder per modality, for ``modalities`` at width ``dim``."""

    def __init__(self, modalities: tuple[str, ...], dim: int):
        super().__init__()
        self.modalities = tuple(modalities)
        groups = sorted({group(m) for m in self.modalities})
        self.project = nn.ModuleDict({g: nn.Linear(dim, dim) for g in groups})
        self.general = nn.ModuleDict({g: nn.Linear(dim, dim) for g in groups})
        self.specific = nn.ModuleDict({g: nn.Linear(dim, dim) for g in groups})
        self.decoders = nn.ModuleDict({m: CoarseDecoder(dim) for m in self.modalities})

    def groups(self) -> list[str]:
        return list(self.project)

    def forward(self, z: Mapping[str, Tensor]) -> dict[str, CoarseFeatures]:
        """Per modality, the clip-level features of ``z[m] (B, T, D)``."""
        out = {}
        for m, v in z.items():
            g = group(m)
            clip = self.project[g](v.mean(dim=1))
            out[m] = CoarseFeatures(clip, F.relu(self.general[g](clip)), F.relu(self.specific[g](clip)))
        return out

    def per_segment(self, z: Tensor, modality: str) -> Tensor:
        """``general`` of every time step of ``z (B, T, D)`` on its own, ``(B, T, D)``: what the codebook quantises
        downstream (released ``*_VQ_Encoder_C_split``)."""
        g = group(modality)
        return F.relu(self.general[g](self.project[g](z)))

    def reconstruction(self, modality: str, code: Tensor, features: CoarseFeatures) -> Tensor:
        """MSE of the coarse decoder's output (the clip's code ``(B, D)`` and ``features.specific``) to
        ``features.clip``."""
        return F.mse_loss(self.decoders[modality](code, features.specific), features.clip)

    def club_pairs(self, features: Mapping[str, CoarseFeatures], code: Callable[[Tensor], Tensor],
                   scale: Callable[[Tensor], Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """The coarse CLUB's (x, y) per group, keyed ``coarse_<group>``: x = ``code(general)`` and y =
        ``scale(specific)`` of the group's modalities stacked along the batch (released: video and audio
        concatenated for one estimator, ``pretrain_fc.py:628-630``), each ``(M_g * B, 1, D)``."""
        pairs = {}
        for g in self.groups():
            members = [m for m in features if group(m) == g]
            x = torch.cat([features[m].general for m in members]).unsqueeze(1)
            y = torch.cat([features[m].specific for m in members]).unsqueeze(1)
            pairs[f"coarse_{g}"] = (code(x), scale(y))
        return pairs


def infonce_pairs(modalities: tuple[str, ...]) -> list[tuple[str, str]]:
    """(query, key) modalities of FCID's coarse InfoNCE: every other modality against text, as released
    (``pretrain_fc.py:636``: video-text and audio-text); without text, every pair in modality order (our
    extension for the AV books, book/differences.md#fcid-coarse-infonce)."""
    if "text" in modalities:
        return [(m, "text") for m in modalities if m != "text"]
    return list(itertools.combinations(modalities, 2))


def coarse_infonce(general: Mapping[str, Tensor], temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """Sum over :func:`infonce_pairs` of the InfoNCE between the modalities' ``general`` clip vectors ``(B, D)``
    (positive: the same clip)."""
    pairs = infonce_pairs(tuple(general))
    if not pairs:
        raise ValueError(f"the coarse InfoNCE needs >= 2 modalities, got {tuple(general)}")
    return torch.stack([info_nce(general[q], general[k], temperature) for q, k in pairs]).sum()
