"""Compared alignment methods of Table 1 (S-MiT, MST, CODIS, TURN) and their registry."""
import math

import pytest
import torch

from cmg_lib.config import ALIGNMENTS
from cmg_lib.presets import preset
from cmg_lib.objectives import AlignmentContext, build_alignment
from cmg_lib.objectives.codis import sinkhorn_assignments
from cmg_lib.objectives.smit import masked_margin_softmax

METHODS = [a for a in ALIGNMENTS if a != "none"]
B, T = 16, 10



def _context(names, dim, codebook, shuffled, seed=0):
    """z^a random; the other modalities are the same clips (paired) or the clips in another order (shuffled)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(B, T, dim, generator=gen, requires_grad=True)
    order = torch.roll(torch.arange(B), 1)                       # a derangement: no clip keeps its partner
    z = {m: (base if i == 0 or not shuffled else base[order]) for i, m in enumerate(names)}
    indices = {m: torch.cdist(v.reshape(-1, dim), codebook).argmin(-1).reshape(B, T) for m, v in z.items()}
    quantized = {m: v + (codebook[indices[m]] - v).detach() for m, v in z.items()}   # straight-through
    return base, AlignmentContext(z, quantized, indices, codebook)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("names", [("audio", "video"), ("audio", "video", "text")])
def test_finite_with_gradient_and_prefers_paired_modalities(name, names):
    cfg = preset("released_avt", "baseline").model
    codebook = torch.randn(cfg.codebook_size, cfg.hidden_dim, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(0)
    method = build_alignment(name, cfg)
    base, paired = _context(names, cfg.hidden_dim, codebook, shuffled=False)
    loss_paired = method(paired)
    loss_paired.backward()
    _, shuffled = _context(names, cfg.hidden_dim, codebook, shuffled=True)
    loss_shuffled = method(shuffled)
    assert loss_paired.dim() == 0 and torch.isfinite(loss_paired) and torch.isfinite(loss_shuffled)
    assert base.grad is not None and base.grad.abs().sum() > 0
    assert loss_paired.item() < loss_shuffled.item()


def test_mms_known_values():
    a = torch.eye(3)
    # identical orthogonal clips: positives cos 1 - margin, negatives cos 0
    loss = masked_margin_softmax(a, a, margin=0.5, temperature=1.0)
    expected = 2 * -math.log(math.exp(0.5) / (math.exp(0.5) + 2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sinkhorn_targets_are_balanced_distributions():
    scores = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)   # cosine range
    q = sinkhorn_assignments(scores, eps=0.05, iterations=3)
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5) and (q >= 0).all()   # rows are distributions
    greedy_usage = torch.softmax(scores / 0.05, dim=1).sum(0)
    assert q.sum(0).std() < 0.5 * greedy_usage.std()           # OT spreads samples over prototypes
    converged = sinkhorn_assignments(scores, eps=0.05, iterations=500)
    assert torch.allclose(converged.sum(0), torch.full((8,), 32 / 8), rtol=1e-2)   # equal partition
    assert torch.allclose(sinkhorn_assignments(torch.zeros(4, 5)), torch.full((4, 5), 0.2))


def test_turn_cross_reconstruction_uses_the_other_modality_codes():
    cfg = preset("released_av", "turn").model
    torch.manual_seed(0)
    turn = build_alignment("turn", cfg)
    base = torch.randn(B, T, cfg.hidden_dim, generator=torch.Generator().manual_seed(3))
    codebook = base.reshape(-1, cfg.hidden_dim)                  # every feature is a code: exact quantisation
    _, ctx = _context(("audio", "video"), cfg.hidden_dim, codebook, shuffled=False, seed=3)
    with pytest.raises(ValueError, match="needs quantized"):
        turn(AlignmentContext(ctx.z, {}, ctx.indices, codebook))
    opt = torch.optim.Adam(turn.parameters(), lr=1e-2)
    for _ in range(150):                                         # the shared decoder learns to invert the codes
        loss = turn(ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, shuffled = _context(("audio", "video"), cfg.hidden_dim, codebook, shuffled=True, seed=3)
    with torch.no_grad():
        swapped = AlignmentContext(ctx.z, {"audio": ctx.quantized["audio"], "video": shuffled.quantized["video"]},
                                   ctx.indices, codebook)
        # same z and contrastive term; only the video codes are mismatched: both cross terms cost ~ 2 per element
        assert turn(swapped).item() > turn(ctx).item() + 2.0


def test_registry():
    cfg = preset("released_avt", "baseline").model
    assert build_alignment("none", cfg) is None
    for name in METHODS:
        assert isinstance(build_alignment(name, cfg), torch.nn.Module)
    with pytest.raises(ValueError, match="expected one of .*smit"):
        build_alignment("clip", cfg)


def test_context_validation():
    z = {"audio": torch.randn(2, 3, 4), "video": torch.randn(2, 3, 5)}
    with pytest.raises(ValueError, match=r"equal \(B, T, D\)"):
        AlignmentContext(z, {}, {}, torch.randn(6, 4))
    with pytest.raises(ValueError, match="2 or 3 modalities"):
        AlignmentContext({"audio": z["audio"]}, {}, {}, torch.randn(6, 4))
    with pytest.raises(ValueError, match=r"embedding must be \(L, 4\)"):
        AlignmentContext({"audio": z["audio"], "video": z["audio"]}, {}, {}, torch.randn(6, 5))
