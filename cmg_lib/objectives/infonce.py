"""InfoNCE with in-batch negatives, the contrastive term both successors of Uni-Code add (FCID's coarse term,
MICU's FCMI; book/differences.md#fcid-coarse-infonce, #micu-fcmi).

Both releases call the ``info-nce-pytorch`` package's ``InfoNCE()`` with its defaults and two arguments
(``ACL25-FCID&TOC/src/pretrain_fc.py:300``, ``ICCV25-OSCMG/code/src/pretrain_micu.py:349``): queries and keys are
L2-normalised, ``logits = q k^T / temperature`` (temperature 0.1), and row i's positive is key i, every other key
its negative; the loss is the cross-entropy towards the diagonal, averaged over the rows. It runs in one direction
(query -> key).

:func:`info_nce` takes any number of leading axes, ``(..., N, D)``: each leading index is one independent problem
of N rows and the mean runs over all of them, so MICU's per-clip loss over time steps (``N = T``, one problem per
clip) is one call. A zero query (a time step masked by multiplying it with 0) normalises to zero, so all its
logits are 0 and it costs ``log N``, as in the package; the mask passes no gradient to the masked features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_TEMPERATURE = 0.1           # info-nce-pytorch's default, used unchanged by both releases


def info_nce(query: Tensor, key: Tensor, temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """Mean over rows (and leading axes) of ``-log softmax_j(<q_i, k_j> / temperature)_i`` on unit vectors;
    ``query`` and ``key`` are ``(..., N, D)`` of one shape, N >= 1."""
    if query.shape != key.shape or query.dim() < 2:
        raise ValueError(f"info_nce expects query and key of one shape (..., N, D), got {tuple(query.shape)} and "
                         f"{tuple(key.shape)}")
    if not temperature > 0:
        raise ValueError(f"info_nce needs a temperature > 0, got {temperature}")
    logits = F.normalize(query, dim=-1) @ F.normalize(key, dim=-1).transpose(-2, -1) / temperature   # (..., N, N)
    rows = logits.shape[-1]
    target = torch.arange(rows, device=logits.device).expand(logits.shape[:-1])
    return F.cross_entropy(logits.reshape(-1, rows), target.reshape(-1))
