"""CLUB: contrastive log-ratio upper bound of mutual information (Cheng et al. 2020; Uni-Code Eq. 4-5).

The variational posterior q_theta(y|x) is a diagonal Gaussian whose mean and log-variance come from two MLPs
(released ``CLUBSample_group``, book/differences.md row 6: x -> h/2 -> h/2 -> h/2 -> y with ReLU, the log-variance
net ending in Tanh). Training alternates (paper Sec. 4.2, book/differences.md row 6): the estimator minimises
``learning_loss`` on DETACHED inputs with its own optimiser, then the main networks minimise ``mi_upper_bound``,
whose gradient flows into both x and y.
"""
from __future__ import annotations

import torch
from torch import nn

NEGATIVE_MODES = ("sampled", "all")


def _mlp(x_dim: int, width: int, y_dim: int, tanh: bool) -> nn.Sequential:
    layers = [nn.Linear(x_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
              nn.Linear(width, width), nn.ReLU(), nn.Linear(width, y_dim)]
    return nn.Sequential(*layers, nn.Tanh()) if tanh else nn.Sequential(*layers)


class ClubEstimator(nn.Module):
    """Gaussian q_theta(y|x) with a CLUB MI upper bound over sequences ``(B, T, dim)``.

    ``hidden`` is the released ``hidden_size``; the MLP layers are ``hidden // 2`` wide (256 -> 128 as released).
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 256):
        super().__init__()
        if min(x_dim, y_dim) < 1 or hidden < 2:
            raise ValueError(f"ClubEstimator needs x_dim, y_dim >= 1 and hidden >= 2, got {x_dim}, {y_dim}, {hidden}")
        self.x_dim, self.y_dim = int(x_dim), int(y_dim)
        self.mu_net = _mlp(self.x_dim, hidden // 2, self.y_dim, tanh=False)
        self.logvar_net = _mlp(self.x_dim, hidden // 2, self.y_dim, tanh=True)

    def _check(self, x: torch.Tensor, y: torch.Tensor, sequence: bool) -> None:
        if x.shape[:-1] != y.shape[:-1] or x.shape[-1] != self.x_dim or y.shape[-1] != self.y_dim:
            raise ValueError(f"CLUB expects x (..., {self.x_dim}) and y (..., {self.y_dim}) with equal leading dims, "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        if sequence and (x.dim() != 3 or x.shape[0] < 2):
            raise ValueError(f"mi_upper_bound expects (B, T, dim) inputs with B >= 2, got {tuple(x.shape)}")

    def mu_logvar(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu_net(x), self.logvar_net(x)

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over all positions of sum_d [-(mu - y)^2 / exp(logvar) - logvar] / 2 (released ``loglikeli``;
        the constant -log(2 pi)/2 is dropped)."""
        self._check(x, y, sequence=False)
        mu, logvar = self.mu_logvar(x.reshape(-1, self.x_dim))
        y = y.reshape(-1, self.y_dim)
        return ((-(mu - y) ** 2 / logvar.exp() - logvar).sum(-1) / 2).mean()

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The estimator's own objective, -log_likelihood; call it on detached inputs (alternating training)."""
        return -self.log_likelihood(x, y)

    def mi_upper_bound(self, x: torch.Tensor, y: torch.Tensor, negatives: str = "sampled",
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """CLUB estimate of I(x; y) for ``(B, T, dim)`` sequences.

        ``"sampled"``: released ``CLUBSample_group.mi_est`` (book/differences.md row 6): one random batch permutation gives
        the negative; squared errors and the log-variance are averaged over T before the division by exp(logvar).
        ``"all"``: paper Eq. 5, positives log q(y_it|x_it) minus the mean over all (i, j, t) of log q(y_jt|x_it); the
        log-variance terms cancel and mean_j (mu_it - y_jt)^2 is expanded as mu^2 - 2 mu mean_j y + mean_j y^2, so
        no (B, B, T, dim) tensor is built.
        """
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
        self._check(x, y, sequence=True)
        mu, logvar = self.mu_logvar(x)
        if negatives == "sampled":
            perm = torch.randperm(x.shape[0], generator=generator).to(x.device)   # CPU generator, any device
            inv_var = (-logvar.mean(dim=1)).exp()                                    # (B, d)
            positive = -((mu - y) ** 2).mean(dim=1) * inv_var
            negative = -((mu - y[perm]) ** 2).mean(dim=1) * inv_var
            return (positive.sum(-1) - negative.sum(-1)).mean() / 2
        y_mean, y_sq_mean = y.mean(dim=0, keepdim=True), (y ** 2).mean(dim=0, keepdim=True)   # over j, per (t, d)
        all_pairs_sq = mu ** 2 - 2 * mu * y_mean + y_sq_mean                          # mean_j (mu_it - y_jt)^2
        return (((all_pairs_sq - (mu - y) ** 2) / logvar.exp()).sum(-1) / 2).mean()
