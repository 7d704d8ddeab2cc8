"""Cross-modal Contrastive Predictive Coding (Cross-CPC, Uni-Code Eq. 6) on pre-quantisation semantic features.

Released behaviour (``Cross_CPC_AVT``, book/differences.md#cpc-steps, #cpc-layers, #cpc-softmax, #cpc-self-weight): a
unidirectional LSTM per modality (2 layers released, 1 in the paper) summarises z^m_{<=t} into c^m_t; one Linear(context
-> dim) per (modality, step k) predicts p^m_k = W^m_k c^m_t; for every ordered pair m -> n the raw dot products S =
z^n_{t+k} p^m^T (B x B, no temperature) are scored with an in-batch InfoNCE. One random t per batch in [1, T - K - 1].
Cross pairs weigh 1, intra-modal pairs (m -> m) ``self_weight`` (released 0.1; 0 = paper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SOFTMAX_MODES = ("predictions", "targets")


class CrossCPC(nn.Module):
    """Cross-CPC over 2 or 3 modalities; ``forward(z) -> (loss, stats)``; stats hold per-pair (``m->n``: context of
    m predicts n) top-1 accuracy ``cpc_acc/m->n`` and unweighted loss ``cpc_loss/m->n`` (floats, for logging).

    ``softmax="predictions"``: released ``LogSoftmax`` with implicit dim=1, each target row z^n_{i,t+k} normalised
    over the B predictions. ``softmax="targets"``: paper Eq. 6, each prediction normalised over the B candidate
    targets z^n_j. loss = sum_k sum_{m,n} w_mn (-mean_i log softmax(S)_ii) / K.
    """

    def __init__(self, modalities: tuple[str, ...], dim: int, context_dim: int = 256, layers: int = 2,
                 steps: int = 1, softmax: str = "predictions", self_weight: float = 0.1):
        super().__init__()
        if len(modalities) < 2 or len(set(modalities)) != len(modalities):
            raise ValueError(f"CrossCPC needs at least 2 distinct modalities, got {modalities}")
        if softmax not in SOFTMAX_MODES:
            raise ValueError(f"softmax must be one of {SOFTMAX_MODES}, got {softmax!r}")
        if steps < 1 or layers < 1 or self_weight < 0:
            raise ValueError(f"need steps >= 1, layers >= 1, self_weight >= 0; got {steps}, {layers}, {self_weight}")
        self.modalities, self.dim, self.steps, self.softmax = tuple(modalities), int(dim), int(steps), softmax
        self.self_weight = float(self_weight)
        self.lstms = nn.ModuleDict({m: nn.LSTM(dim, context_dim, num_layers=layers, batch_first=True)
                                    for m in self.modalities})
        self.predictors = nn.ModuleDict({m: nn.ModuleList(nn.Linear(context_dim, dim) for _ in range(steps))
                                         for m in self.modalities})
        n = len(self.modalities)
        weights = torch.ones(n, n) - torch.eye(n) * (1.0 - self.self_weight)   # [target n, source m]
        self.register_buffer("pair_weights", weights, persistent=False)

    def _validate(self, z: dict[str, torch.Tensor], t: int | None) -> tuple[int, int]:
        if set(z) != set(self.modalities):
            raise ValueError(f"CrossCPC expects features for {self.modalities}, got {tuple(z)}")
        shapes = {m: tuple(z[m].shape) for m in self.modalities}
        first = shapes[self.modalities[0]]
        if any(len(s) != 3 or s != first for s in shapes.values()) or first[2] != self.dim:
            raise ValueError(f"CrossCPC expects equal (B, T, {self.dim}) features per modality, got {shapes}")
        batch, length = first[0], first[1]
        if batch < 2:
            raise ValueError(f"CrossCPC needs a batch of at least 2 (in-batch negatives), got {batch}")
        if length < self.steps + 2:
            raise ValueError(f"CrossCPC with {self.steps} steps needs T >= {self.steps + 2}, got T={length}")
        if t is not None and not 1 <= t <= length - self.steps - 1:
            raise ValueError(f"t must be in [1, {length - self.steps - 1}] for T={length}, K={self.steps}; got {t}")
        return batch, length

    def forward(self, z: dict[str, torch.Tensor], t: int | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        batch, length = self._validate(z, t)
        if t is None:   # released: randint(T - K - 1) + 1
            t = int(torch.randint(length - self.steps - 1, (1,), generator=generator)) + 1
        predictions, targets = [], []
        for m in self.modalities:
            context = self.lstms[m](z[m][:, : t + 1])[0][:, t]                                   # (B, C)
            predictions.append(torch.stack([w(context) for w in self.predictors[m]]))         # (K, B, D)
            targets.append(z[m][:, t + 1: t + 1 + self.steps].transpose(0, 1))                # (K, B, D)
        predictions, targets = torch.stack(predictions), torch.stack(targets)                  # (M, K, B, D)
        scores = torch.einsum("nkid,mkjd->nmkij", targets, predictions)                       # rows: targets i
        norm_dim = -1 if self.softmax == "predictions" else -2
        log_probs = F.log_softmax(scores, dim=norm_dim).diagonal(dim1=-2, dim2=-1)          # (M, M, K, B)
        per_pair = -log_probs.mean(dim=-1).mean(dim=-1)                                       # (n, m): mean over k
        loss = (self.pair_weights * per_pair).sum()
        with torch.no_grad():
            hits = scores.argmax(dim=norm_dim) == torch.arange(batch, device=scores.device)
            accuracy, pair_loss = hits.float().mean(dim=(-2, -1)).tolist(), per_pair.detach().tolist()  # one sync
        stats = {}
        for a, n in enumerate(self.modalities):
            for b, m in enumerate(self.modalities):
                if a != b or self.self_weight > 0:
                    stats[f"cpc_acc/{m}->{n}"] = accuracy[a][b]
                    stats[f"cpc_loss/{m}->{n}"] = pair_loss[a][b]
        return loss, stats
