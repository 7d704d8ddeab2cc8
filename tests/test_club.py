"""CLUB estimator (Uni-Code Eq. 4-5; released CLUBSample_group, book/differences.md#club-negatives)."""
import copy
import functools
import math

import pytest
import torch

from cmg_lib.objectives import ClubEstimator


def _pairs(gen, batch, length, dim, dependent):
    x = torch.randn(batch, length, dim, generator=gen)
    y = x + 0.1 * torch.randn(batch, length, dim, generator=gen) if dependent else torch.randn(batch, length, dim,
                                                                                               generator=gen)
    return x, y



@functools.lru_cache(maxsize=None)
def _fit(dim, dependent, steps=250):
    """One fitted estimator per (dim, dependence), shared by both negative modes (fresh samples for evaluation)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    club = ClubEstimator(dim, dim, hidden=64)
    opt = torch.optim.Adam(club.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y = _pairs(gen, 64, 8, dim, dependent)        # B*T = 512
        loss = club.learning_loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return club, gen


@pytest.mark.parametrize("dim", [2, 8])
@pytest.mark.parametrize("negatives", ["sampled", "all"])
def test_fitted_estimate_separates_independent_from_dependent(dim, negatives):
    for dependent in (False, True):
        club, _ = _fit(dim, dependent)
        gen = torch.Generator().manual_seed(2)
        x, y = _pairs(gen, 256, 8, dim, dependent)
        with torch.no_grad():
            estimate = club.mi_upper_bound(x, y, negatives, generator=gen).item()
        if dependent:
            # true MI of y = x + 0.1 noise is dim/2 * log(101); CLUB is an upper bound up to fitting error
            assert estimate > 0.5 and estimate > 0.8 * dim / 2 * math.log(101)
        else:
            assert abs(estimate) < 0.1


def test_log_likelihood_matches_hand_computed_gaussian():
    club = ClubEstimator(3, 2, hidden=8)
    x, y = torch.randn(4, 5, 3), torch.randn(4, 5, 2)
    mu, logvar = club.mu_logvar(x)
    manual = ((-(mu - y) ** 2 / logvar.exp() - logvar).sum(-1) / 2).mean()
    assert torch.allclose(club.log_likelihood(x, y), manual)
    assert torch.allclose(club.learning_loss(x, y), -manual)
    # logvar head ends in Tanh; widths follow the released hidden // 2
    assert logvar.abs().max() <= 1 and club.mu_net[0].out_features == 4
    with torch.no_grad():                       # zero last layers: q = N(0, I), log q = -|y|^2 / 2 (no constant)
        for net in (club.mu_net, club.logvar_net):
            net[6].weight.zero_()
            net[6].bias.zero_()
    y = torch.tensor([[[1.0, 2.0]], [[0.0, -2.0]]])                       # |y|^2 = 5 and 4
    assert club.log_likelihood(torch.randn(2, 1, 3), y).item() == pytest.approx(-(5 + 4) / 2 / 2)


def test_all_negatives_equals_brute_force():
    torch.manual_seed(3)
    club = ClubEstimator(4, 3, hidden=16)
    x, y = torch.randn(5, 6, 4), torch.randn(5, 6, 3)
    mu, logvar = club.mu_logvar(x)
    log_q = lambda target: ((-(mu - target) ** 2 / logvar.exp() - logvar).sum(-1) / 2)   # noqa: E731
    positive = log_q(y).mean()
    # explicit (B_i, B_j, T, d) tensor: entry [i, j] = log q(y_jt | x_it), averaged over i, j, t
    negative = torch.stack([torch.stack([log_q(y[j].expand_as(y))[i] for j in range(5)]) for i in range(5)]).mean()
    assert torch.allclose(club.mi_upper_bound(x, y, "all"), positive - negative, atol=1e-5)


def test_sampled_matches_released_formula_and_gradients_flow():
    torch.manual_seed(4)
    club = ClubEstimator(4, 3, hidden=16)
    x = torch.randn(6, 5, 4, requires_grad=True)
    y = torch.randn(6, 5, 3, requires_grad=True)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(9))
    mu, logvar = club.mu_logvar(x)
    pos = -((mu - y) ** 2).mean(1) / logvar.mean(1).exp()
    neg = -((mu - y[perm]) ** 2).mean(1) / logvar.mean(1).exp()
    expected = (pos.sum(-1) - neg.sum(-1)).mean() / 2
    got = club.mi_upper_bound(x, y, "sampled", generator=torch.Generator().manual_seed(9))
    assert torch.allclose(got, expected, atol=1e-6)
    got.backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


def test_bad_inputs_raise():
    club = ClubEstimator(4, 3, hidden=16)
    with pytest.raises(ValueError, match="x \\(..., 4\\)"):
        club.log_likelihood(torch.randn(2, 5, 3), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="B >= 2"):
        club.mi_upper_bound(torch.randn(1, 5, 4), torch.randn(1, 5, 3))
    with pytest.raises(ValueError, match="negatives"):
        club.mi_upper_bound(torch.randn(2, 5, 4), torch.randn(2, 5, 3), negatives="every")


def _bank():
    """Three estimators in two shape groups (two equal, one with another y width), as in an AVT model."""
    torch.manual_seed(0)
    ests = [ClubEstimator(6, 4, 10), ClubEstimator(6, 4, 10), ClubEstimator(6, 3, 10)]
    gen = torch.Generator().manual_seed(3)
    pairs = [(torch.randn(5, 4, 6, generator=gen), torch.randn(5, 4, y, generator=gen)) for y in (4, 4, 3)]
    return ests, pairs


def test_batched_learning_gradients_equal_autograd():
    """The training loop's CLUB inner step (batched nets, written-out backward) against autograd on the
    per-estimator ``learning_loss``, the reference."""
    from cmg_lib.objectives.club import learning_loss_and_grads
    ests, pairs = _bank()
    ref = copy.deepcopy(ests)
    ref_loss = sum(e.learning_loss(x, y) for e, (x, y) in zip(ref, pairs))
    ref_loss.backward()
    for p in (p for e in ests for p in e.parameters()):
        p.grad = torch.full_like(p, 7.0)                        # stale gradients are replaced, not accumulated
    loss = learning_loss_and_grads(ests, pairs)
    assert not loss.requires_grad and torch.allclose(loss, ref_loss.detach(), atol=1e-6)
    for e, r in zip(ests, ref):
        for (name, p), q in zip(e.named_parameters(), r.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    assert all(x.grad is None for x, _ in pairs)
    with pytest.raises(ValueError, match="one \\(x, y\\) pair per estimator"):
        learning_loss_and_grads(ests, pairs[:2])


@pytest.mark.parametrize("negatives", ["sampled", "all"])
def test_batched_mi_bounds_equal_each_estimator(negatives):
    """``mi_upper_bounds`` (``step.mi_terms``' fast path) equals the loop over ``mi_upper_bound``: values, the
    random negatives drawn in the same order, and the gradients into x and y."""
    from cmg_lib.objectives.club import mi_upper_bounds
    ests, pairs = _bank()
    pairs = [(x.requires_grad_(), y.requires_grad_()) for x, y in pairs]
    torch.manual_seed(5)
    ref = [e.mi_upper_bound(x, y, negatives=negatives) for e, (x, y) in zip(ests, pairs)]
    ref_grads = torch.autograd.grad(sum(ref), [t for pair in pairs for t in pair])
    torch.manual_seed(5)
    out = mi_upper_bounds(ests, pairs, negatives)
    grads = torch.autograd.grad(sum(out), [t for pair in pairs for t in pair])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out, ref))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, ref_grads))
