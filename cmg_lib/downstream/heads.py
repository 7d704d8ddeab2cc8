"""Trainable heads on frozen Uni-Code codes (paper Sec. 4.4: the pre-trained encoder stays frozen downstream).

* ``ClipClassifier``: the released ``Semantic_Decoder`` (``main_model_2.py:121-131``): Linear(D, D) -> max over T ->
  Linear(D, C), no nonlinearity (AVE, UCF<->VGGSound).
* ``SegmentClassifier``: the released ``Semantic_Decoder_AVVP`` (``:134-144``): Linear(D, D) -> Linear(D, C+1) per
  segment (AVVP, AVE->AVVP).
* ``ExpLogLoss``: the released AVVP auxiliary loss (``avvp.py:470-484``) with one learnable alpha per class.
* ``QuerySegmenter``: a small query-conditioned encoder-decoder for AVS-S4 (the released AVSBench PVT model needs
  ImageNet weights; this head keeps its idea: the query's codes select the sounding object's positions).
* ``AudioGalleryEncoder`` / ``QueryProjector``: the two towers of the X-to-audio retrieval protocol (paper Table 5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ClipClassifier(nn.Module):
    """``(B, T, D)`` codes -> ``(B, C)`` clip logits: Linear -> max over time -> Linear (released Semantic_Decoder)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.mix = nn.Linear(dim, dim)
        self.classify = nn.Linear(dim, num_classes)

    def forward(self, codes: Tensor) -> Tensor:
        return self.classify(self.mix(codes).max(dim=1).values)


class SegmentClassifier(nn.Module):
    """``(B, T, D)`` codes -> ``(B, T, C+1)`` per-segment logits, background last (released Semantic_Decoder_AVVP)."""

    def __init__(self, dim: int, num_outputs: int):
        super().__init__()
        self.mix = nn.Linear(dim, dim)
        self.classify = nn.Linear(dim, num_outputs)

    def forward(self, codes: Tensor) -> Tensor:
        return self.classify(self.mix(codes))


class ExpLogLoss(nn.Module):
    """``-mean_rows sum_c y_c * log_softmax(logits)_c * exp(-alpha_c)`` with a learnable ``alpha`` per output column
    (initialised to ``alpha0`` = 0.1 as released). Rows are the flattened ``(segment, class)`` targets."""

    def __init__(self, num_outputs: int, alpha0: float = 0.1):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((num_outputs,), float(alpha0)))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1, targets.shape[-1])
        weighted = targets * F.log_softmax(logits, dim=-1) * torch.exp(-self.alpha)
        return -weighted.sum(dim=-1).mean()


class QuerySegmenter(nn.Module):
    """Query-conditioned mask head: frames ``(N, C, H, W)`` (+ an optional frozen visual feature grid
    ``(N, G, h, w)``) and query codes ``(N, T, D)`` -> mask logits ``(N, H_out, W_out)``.

    A small encoder-decoder in the spirit of AVSBench's (backbone stages -> query fusion -> FPN-like decoder), run at
    1/``factor`` resolution without losing a pixel: the frames are folded space-to-depth (``pixel_unshuffle``: each
    ``factor x factor`` block becomes ``factor^2`` channels), a stem convolution, two stride-2 convolutions to
    1/(4 ``factor``) resolution (receptive field covering an object), the projected visual grid added there when
    given. The query (mean of its T codes) modulates those coarse features by FiLM (per-channel scale and shift) and
    scores each coarse position by dot-product attention ``<K h_p, Q q> / sqrt(width)``; the upsampled score map is
    refined from the stem features, FiLM-modulated by the query as well, into ``factor^2`` sub-pixel logits per
    position that ``pixel_shuffle`` puts back at full resolution (a sub-pixel decoder). Logits are resized
    bilinearly to ``out_size`` when it differs. ``factor=2`` does a quarter of the full-resolution work of a stem
    and refinement at full resolution (measured on AV-Digits: the AVS run 19.9 s -> 11.3 s, mean test mIoU over
    A->T/T->A and two seeds 31.6 -> 37.4 with its batch 16); frames whose side is not a multiple of ``factor`` are
    padded by edge replication and the logits cropped back.
    """

    def __init__(self, dim: int, in_channels: int, width: int = 16, grid_channels: int = 0, factor: int = 2):
        super().__init__()
        if factor < 1 or width < 2:
            raise ValueError(f"need factor >= 1 and width >= 2, got factor={factor}, width={width}")
        wide, sub = 2 * width, factor * factor
        self.width, self.factor = width, factor
        self.stem = nn.Sequential(nn.Conv2d(in_channels * sub, width, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(width, wide, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(wide, wide, 3, stride=2, padding=1), nn.ReLU())
        self.grid = nn.Conv2d(grid_channels, wide, 1) if grid_channels else None
        self.film = nn.Linear(dim, 2 * wide)
        self.film_fine = nn.Linear(dim, 2 * width)
        self.fuse = nn.Sequential(nn.Conv2d(wide, wide, 3, padding=1), nn.ReLU())
        self.key = nn.Conv2d(wide, width, 1)
        self.query = nn.Linear(dim, width)
        self.refine = nn.Sequential(nn.Conv2d(width + 1, width // 2, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(width // 2, sub, 1))

    def forward(self, frames: Tensor, query_codes: Tensor, out_size: tuple[int, int],
                grid: Tensor | None = None) -> Tensor:
        height, width = frames.shape[-2:]
        f = self.factor
        if height % f or width % f:
            frames = F.pad(frames, (0, -width % f, 0, -height % f), mode="replicate")
        q = query_codes.mean(dim=1)
        skip = self.stem(F.pixel_unshuffle(frames, f))
        h = self.down(skip)
        if self.grid is not None:
            if grid is None:
                raise ValueError("this head was built with a visual feature grid; pass grid=(N, G, h, w)")
            h = h + self.grid(F.interpolate(grid, size=h.shape[-2:], mode="bilinear", align_corners=False))
        scale, shift = self.film(q).chunk(2, dim=-1)
        h = self.fuse(F.relu(h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]))
        coarse = torch.einsum("nchw,nc->nhw", self.key(h), self.query(q)).unsqueeze(1) / self.width ** 0.5
        coarse = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        scale, shift = self.film_fine(q).chunk(2, dim=-1)
        fine = F.relu(skip * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        sub_pixels = coarse + self.refine(torch.cat([fine, coarse], dim=1))          # (N, f*f, H/f, W/f)
        logits = F.pixel_shuffle(sub_pixels, f)[..., :height, :width]
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits[:, 0]


class AudioGalleryEncoder(nn.Module):
    """Raw audio features ``(B, T, F)`` -> unit embeddings ``(B, E)``: per-segment MLP, temporal mean, L2 norm."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, audio: Tensor) -> Tensor:
        return F.normalize(self.mlp(audio.flatten(2)).mean(dim=1), dim=-1)


class QueryProjector(nn.Module):
    """Frozen query codes ``(B, T, D)`` -> unit embeddings ``(B, E)``: temporal mean, then a 2-layer MLP, L2 norm."""

    def __init__(self, dim: int, out_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, codes: Tensor) -> Tensor:
        return F.normalize(self.mlp(codes.mean(dim=1)), dim=-1)
