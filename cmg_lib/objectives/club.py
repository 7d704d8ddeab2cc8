"""CLUB: contrastive log-ratio upper bound of mutual information (Cheng et al. 2020; Uni-Code Eq. 4-5).

The variational posterior q_theta(y|x) is a diagonal Gaussian whose mean and log-variance come from two MLPs (released
``CLUBSample_group``, book/differences.md#club-negatives: x -> h/2 -> h/2 -> h/2 -> y with ReLU, the log-variance net
ending in Tanh). Training alternates (paper Sec. 4.2, book/differences.md#club-negatives): the estimator minimises
``learning_loss`` on DETACHED inputs with its own optimiser, then the main networks minimise ``mi_upper_bound``, whose
gradient flows into both x and y.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

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

    def linears(self) -> tuple[list[nn.Linear], list[nn.Linear]]:
        """The four ``Linear`` layers of the mean net and of the log-variance net, input side first."""
        return ([m for m in self.mu_net if isinstance(m, nn.Linear)],
                [m for m in self.logvar_net if isinstance(m, nn.Linear)])

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

        ``"sampled"``: released ``CLUBSample_group.mi_est`` (book/differences.md#club-negatives): one random batch
        permutation gives the negative; squared errors and the log-variance are averaged over T before the division by
        exp(logvar).
        ``"all"``: paper Eq. 5, positives log q(y_it|x_it) minus the mean over all (i, j, t) of log q(y_jt|x_it); the
        log-variance terms cancel and mean_j (mu_it - y_jt)^2 is expanded as mu^2 - 2 mu mean_j y + mean_j y^2, so no
        (B, B, T, dim) tensor is built.
        """
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
        self._check(x, y, sequence=True)
        mu, logvar = self.mu_logvar(x)
        return self.bound_from(mu, logvar, y, negatives, generator)

    @staticmethod
    def bound_from(mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor, negatives: str = "sampled",
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """``mi_upper_bound`` given the posterior's ``mu`` and ``logvar`` of x (``(B, T, y_dim)`` each)."""
        if negatives == "sampled":
            perm = torch.randperm(y.shape[0], generator=generator).to(y.device)   # CPU generator, any device
            inv_var = (-logvar.mean(dim=1)).exp()                                    # (B, d)
            positive = -((mu - y) ** 2).mean(dim=1) * inv_var
            negative = -((mu - y[perm]) ** 2).mean(dim=1) * inv_var
            return (positive.sum(-1) - negative.sum(-1)).mean() / 2
        y_mean, y_sq_mean = y.mean(dim=0, keepdim=True), (y ** 2).mean(dim=0, keepdim=True)   # over j, per (t, d)
        all_pairs_sq = mu ** 2 - 2 * mu * y_mean + y_sq_mean                          # mean_j (mu_it - y_jt)^2
        return (((all_pairs_sq - (mu - y) ** 2) / logvar.exp()).sum(-1) / 2).mean()


# ---------------------------------------------------------------------------------------------------- batched
def _groups(estimators: Sequence[ClubEstimator], pairs: Sequence[tuple[Tensor, Tensor]]) -> dict[tuple, list[int]]:
    """Estimators of equal layer shapes (x_dim, y_dim, width) whose inputs have one shape, by position: each
    group runs as one batch (FCID's coarse estimators read (M B, 1, D) clip rows beside the fine (B, T, D))."""
    groups: dict[tuple, list[int]] = {}
    for i, est in enumerate(estimators):
        key = (est.x_dim, est.y_dim, est.mu_net[0].out_features, tuple(pairs[i][0].shape))
        groups.setdefault(key, []).append(i)
    return groups


def _stacked(members: Sequence[ClubEstimator]) -> list[tuple[Tensor, Tensor]]:
    """Per layer, ``(W (G, out, in), b (G, out))`` of the G = 2 * len(members) nets, ordered mu_0, logvar_0, mu_1..."""
    nets = [net for est in members for net in est.linears()]
    return [(torch.stack([net[i].weight for net in nets]), torch.stack([net[i].bias for net in nets]))
            for i in range(len(nets[0]))]


def _mlp_forward(h: Tensor, layers: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[Tensor]]:
    """The G nets on ``h (G, N, in)`` as one ``baddbmm`` per layer, ReLU between; the output ``(G, N, out)`` and
    the input of every layer (for the backward)."""
    inputs = []
    for i, (w, b) in enumerate(layers):
        inputs.append(h)
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h, inputs


@torch.no_grad()
def learning_loss_and_grads(estimators: Sequence[ClubEstimator], pairs: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """``sum_m estimators[m].learning_loss(*pairs[m])`` with its gradient written into every estimator parameter's
    ``.grad`` (replacing it), as ``loss.backward()`` after zeroing would; the inputs get no gradient (the
    estimators' alternating step, released ``mi_est``'s ``learning_loss`` on detached pairs).

    Estimators of equal shapes run together: per layer one ``baddbmm`` over all their mean and log-variance nets
    forward and two ``bmm`` backward, the backward of the Gaussian log-likelihood written out:
    with ``r = mu - y``, ``v = exp(-logvar)`` and N positions, d/dmu = r v / N and
    d/dlogvar = (1 - r^2 v) / (2 N), times ``1 - logvar^2`` through the Tanh. Autograd on ``learning_loss`` is
    the reference (tests/test_club.py)."""
    if len(estimators) != len(pairs) or not estimators:
        raise ValueError(f"need one (x, y) pair per estimator, got {len(pairs)} pairs for {len(estimators)}")
    total = None
    for members in _groups(estimators, pairs).values():
        ests = [estimators[i] for i in members]
        for i in members:
            estimators[i]._check(*pairs[i], sequence=False)
        dx, dy = ests[0].x_dim, ests[0].y_dim
        x = torch.stack([pairs[i][0].reshape(-1, dx) for i in members])                 # (M, N, dx)
        y = torch.stack([pairs[i][1].reshape(-1, dy) for i in members])                 # (M, N, dy)
        m, n = x.shape[:2]
        layers = _stacked(ests)
        out, inputs = _mlp_forward(x.unsqueeze(1).expand(m, 2, n, dx).reshape(2 * m, n, dx).to(layers[0][0].dtype),
                                   layers)
        out = out.view(m, 2, n, dy)
        mu, logvar = out[:, 0], torch.tanh(out[:, 1])
        r = mu - y
        inv_var = torch.exp(-logvar)
        r2v = r * r * inv_var
        loss = (r2v + logvar).sum() / (2 * n)                       # sum over members of -log_likelihood
        total = loss if total is None else total + loss
        grad = torch.stack([r * inv_var / n, (1 - r2v) * (1 - logvar * logvar) / (2 * n)], dim=1)
        grad = grad.view(2 * m, n, dy)
        nets = [net for est in ests for net in est.linears()]
        for i in range(len(layers) - 1, -1, -1):
            w, h = layers[i][0], inputs[i]
            grad_w, grad_b = torch.bmm(grad.transpose(1, 2), h), grad.sum(1)
            for net, gw, gb in zip(nets, grad_w.unbind(0), grad_b.unbind(0)):
                net[i].weight.grad, net[i].bias.grad = gw, gb
            if i:
                grad = torch.ops.aten.threshold_backward(torch.bmm(grad, w), h, 0)    # ReLU backward (h = relu(.))
    return total


def mi_upper_bounds(estimators: Sequence[ClubEstimator], pairs: Sequence[tuple[Tensor, Tensor]],
                    negatives: str = "sampled") -> list[Tensor]:
    """``[estimators[m].mi_upper_bound(*pairs[m], negatives)]`` with the posterior nets of equal-shaped
    estimators run as one ``baddbmm`` per layer; differentiable w.r.t. the inputs and, if they require it, the
    estimators' parameters. The random negatives are drawn per estimator in order, as the loop over
    ``mi_upper_bound`` draws them."""
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
    if len(estimators) != len(pairs) or not estimators:
        raise ValueError(f"need one (x, y) pair per estimator, got {len(pairs)} pairs for {len(estimators)}")
    posteriors: list[tuple[Tensor, Tensor] | None] = [None] * len(estimators)
    for members in _groups(estimators, pairs).values():
        ests = [estimators[i] for i in members]
        for i in members:
            estimators[i]._check(*pairs[i], sequence=True)
        dx, dy = ests[0].x_dim, ests[0].y_dim
        x = torch.stack([pairs[i][0] for i in members])                                 # (M, B, T, dx)
        m, shape = x.shape[0], x.shape[1:-1]
        x = x.reshape(m, 1, -1, dx).expand(m, 2, -1, dx).reshape(2 * m, -1, dx)
        out, _ = _mlp_forward(x, _stacked(ests))
        out = out.view(m, 2, *shape, dy)
        for j, i in enumerate(members):
            posteriors[i] = (out[j, 0], torch.tanh(out[j, 1]))
    return [ClubEstimator.bound_from(mu, logvar, y, negatives)
            for (mu, logvar), (_, y) in zip(posteriors, pairs)]
