"""TOC, FCID's training-free codebook optimisation (ACL 2025 Findings, arXiv 2403.05168;
book/differences.md#toc): keep the code dimensions that separate the codes best, drop the rest, downstream only.

Released ``ACL25-FCID&TOC/src/ave_fc.py:405-429`` (``cal_criterion``, called once on the codebook before the head
is trained, ``:170``): for the codebook ``E (L, D)`` each dimension d is scored

    score_d = -0.7 * mean_{i != j} E_id E_jd + 0.3 * var_i(E_id)

(the mean over the L(L-1) ordered pairs of distinct codes; the variance unbiased, over the L codes). A dimension
where codes agree in sign and size scores low; one where they spread, high. The ``k`` highest-scoring dimensions
are kept (``toc_max_num=1, toc_min_num=0`` in every released script) and every code vector downstream is cut to
them (``video_vq[:, :, indices]``), so the head reads k features. The released k per task of 256
(:data:`RELEASED_DIMS`) is set in the scripts (``ave.sh``, ``avvp.sh``, ``ave_avvp.sh``, ``ucf_vggsound.sh``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

PAIR_WEIGHT, VARIANCE_WEIGHT = -0.7, 0.3
RELEASED_WIDTH = 256
RELEASED_DIMS = {"ave": 256, "avvp": 196, "ave_avvp": 128, "ucf_vgg": 168}      # of 256: AVE keeps every dimension


def toc_scores(embedding: Tensor) -> Tensor:
    """``(D,)`` scores of the dimensions of a codebook ``embedding (L, D)``, L >= 2 (module docstring); the pair
    mean is ``((sum_i E_id)^2 - sum_i E_id^2) / (L (L - 1))``, no L x L loop."""
    if embedding.dim() != 2 or embedding.shape[0] < 2:
        raise ValueError(f"TOC scores a codebook (L, D) with L >= 2 codes, got {tuple(embedding.shape)}")
    e = embedding.detach().double()
    codes = e.shape[0]
    pair_mean = (e.sum(0) ** 2 - (e * e).sum(0)) / (codes * (codes - 1))
    return (PAIR_WEIGHT * pair_mean + VARIANCE_WEIGHT * e.var(dim=0, correction=1)).to(embedding.dtype)


def toc_dimensions(embedding: Tensor, k: int) -> Tensor:
    """The ``k`` dimensions with the highest :func:`toc_scores`, in increasing index order (long ``(k,)``)."""
    width = embedding.shape[-1]
    if not 1 <= int(k) <= width:
        raise ValueError(f"toc_dims must be between 1 and the code width {width}, got {k}")
    return torch.topk(toc_scores(embedding), int(k)).indices.sort().values


def released_dims(task: str, width: int) -> int:
    """The released k of ``task`` (:data:`RELEASED_DIMS`, of 256) at code width ``width``, rounded to the nearest
    dimension (at least 1)."""
    if task not in RELEASED_DIMS:
        raise ValueError(f"no released TOC setting for task {task!r}; the release has {sorted(RELEASED_DIMS)}")
    return max(1, int(math.floor(RELEASED_DIMS[task] * width / RELEASED_WIDTH + 0.5)))
