"""Cross-Modal Code Matching (CMCM; Liu et al. 2021, paper ref. [17]), the ``L_cmcm`` term of Uni-Code (Sec. 4.4).

Each sample's soft code distribution ``P_b = mean_t softmax_k(-|z_{b,t} - e_k|)`` is compared across modalities
with a contrastive objective that pulls a sample's distributions in two modalities together and pushes other
samples' apart. The gradient flows into z only: the codebook is treated as a constant (it is EMA-updated).

``form="released"`` follows ``Cross_VQEmbeddingEMA_AVT`` (book/differences.md#cmcm-form; released steps
2-3, section 3 item 7): Euclidean (not squared) distance without temperature; per modality pair (m, n)
``S_ij = sum_k P^m_ik log(P^n_jk + 1e-10) + sum_k P^n_ik log(P^m_jk + 1e-10)``; one-directional InfoNCE over rows
``-(1/B) sum_i log(E_ii / (sum_j E_ij + 1e-5))`` with ``E = exp(S + max(-S))`` (a global shift); total = 0.5 times the
sum over all modality pairs. The released per-sample Python loop is replaced by ``diag`` and ``logsumexp``, which
gives the same value (the shift and the 1e-5 enter through ``logaddexp``).

``form="symmetric"``: Liu et al.'s symmetric form, ``S_ij = sum_k P^m_ik log P^n_jk + P^n_jk log P^m_ik`` and
InfoNCE in both directions (rows and columns) without shift or 1e-5; the same 0.5 x sum over pairs is kept so the
two forms are on one scale.
"""
from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import Tensor

__all__ = ["cmcm_loss", "code_distribution", "CMCM_FORMS"]

CMCM_FORMS = ("released", "symmetric")
LOG_EPS = 1e-10          # released log(P + 1e-10)
DENOMINATOR_EPS = 1e-5   # released sum_j E_ij + 1e-5
DISTANCE_FLOOR = 1e-12   # squared-distance floor before sqrt (released has none): keeps gradients finite when z = e_k


def code_distribution(z: Tensor, embedding: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample soft code distribution ``P (B, L)`` of ``z (B, T, D)`` over the codes ``embedding (L, D)``:
    ``mean_t softmax_k(-|z_t - e_k| / temperature)`` with the plain Euclidean distance (book/differences.md#cmcm-form;
    released temperature 1, book/differences.md#cmcm-temperature)."""
    # a copy, so that an in-place EMA update of the codebook before backward() cannot invalidate this graph
    codes = embedding.detach().to(dtype=z.dtype, copy=True)
    squared = (z * z).sum(-1, keepdim=True) + (codes * codes).sum(-1) - 2.0 * z @ codes.t()   # (B, T, L)
    distance = squared.clamp_min(DISTANCE_FLOOR).sqrt()
    return torch.softmax(-distance / temperature, dim=-1).mean(dim=1)


def _released_info_nce(similarity: Tensor) -> Tensor:
    """``-(1/B) sum_i log(E_ii / (sum_j E_ij + 1e-5))`` with ``E = exp(S + max(-S))``, in log space."""
    logits = similarity + (-similarity).max()
    denominator = torch.logaddexp(torch.logsumexp(logits, dim=1),
                                  torch.tensor(math.log(DENOMINATOR_EPS), dtype=logits.dtype, device=logits.device))
    return -(logits.diagonal() - denominator).mean()


def _symmetric_info_nce(similarity: Tensor) -> Tensor:
    """``-(1/B) sum_i [log softmax_j(S_ij)_ii + log softmax_j(S_ji)_ii]``."""
    diagonal = similarity.diagonal()
    rows = diagonal - torch.logsumexp(similarity, dim=1)
    columns = diagonal - torch.logsumexp(similarity, dim=0)
    return -(rows + columns).mean()


def cmcm_loss(z: dict[str, Tensor], embedding: Tensor, form: str = "released", temperature: float = 1.0) -> Tensor:
    """CMCM loss over all pairs of the modalities in ``z`` (each ``(B, T_m, D)``, the same B; T may differ).

    ``embedding (L, D)`` is the shared codebook (used as a constant). Returns a scalar with gradient into z."""
    if form not in CMCM_FORMS:
        raise ValueError(f"cmcm form must be one of {CMCM_FORMS}, got {form!r}")
    if not isinstance(z, dict) or len(z) < 2:
        raise ValueError(f"cmcm_loss needs a dict of at least 2 modalities, got "
                         f"{sorted(z) if isinstance(z, dict) else type(z).__name__}")
    if embedding.dim() != 2:
        raise ValueError(f"embedding must be (L, D), got {tuple(embedding.shape)}")
    batch = {m: t.shape[0] for m, t in z.items()}
    for m, t in z.items():
        if t.dim() != 3 or t.shape[-1] != embedding.shape[1] or not t.is_floating_point():
            raise ValueError(f"z[{m!r}] must be a float tensor (B, T, {embedding.shape[1]}), got {tuple(t.shape)}")
    if len(set(batch.values())) != 1:
        raise ValueError(f"all modalities need the same batch size, got {batch}")

    distributions = {m: code_distribution(t, embedding, temperature) for m, t in z.items()}
    logs = {m: torch.log(p + LOG_EPS) for m, p in distributions.items()}
    total = None
    for m, n in combinations(z, 2):
        if form == "released":
            similarity = distributions[m] @ logs[n].t() + distributions[n] @ logs[m].t()
            loss = _released_info_nce(similarity)
        else:
            similarity = distributions[m] @ logs[n].t() + logs[m] @ distributions[n].t()
            loss = _symmetric_info_nce(similarity)
        total = loss if total is None else total + loss
    return 0.5 * total
