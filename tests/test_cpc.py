"""Cross-CPC (Uni-Code Eq. 6; released Cross_CPC_AVT, book/differences.md#cpc-steps to #cpc-self-weight)."""
import math

import pytest
import torch

from cmg_lib.objectives import CrossCPC

AV, AVT = ("audio", "video"), ("audio", "video", "text")



def _random_z(names, batch=32, length=10, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, length, dim, generator=gen) for m in names}


@pytest.mark.parametrize("softmax", ["predictions", "targets"])
@pytest.mark.parametrize("names,self_weight", [(AV, 0.0), (AVT, 0.1)])
def test_initial_loss_is_chance(softmax, names, self_weight):
    torch.manual_seed(0)
    cpc = CrossCPC(names, 16, context_dim=32, layers=2, steps=2, softmax=softmax, self_weight=self_weight)
    loss, stats = cpc(_random_z(names), generator=torch.Generator().manual_seed(1))
    n = len(names)
    chance = math.log(32) * (n * (n - 1) + self_weight * n)     # every pair at log B, weighted
    assert abs(loss.item() - chance) < 0.1 * chance
    assert len([k for k in stats if k.startswith("cpc_acc/")]) == (n * n if self_weight else n * (n - 1))


@pytest.mark.parametrize("softmax", ["predictions", "targets"])
def test_matches_explicit_eq6_and_released_normalisation(softmax):
    torch.manual_seed(2)
    cpc = CrossCPC(AV, 8, context_dim=8, layers=1, steps=2, softmax=softmax, self_weight=0.5)
    z = {m: v.requires_grad_() for m, v in _random_z(AV, batch=5, length=7, dim=8).items()}
    t = 3
    expected = 0.0
    for m in AV:
        context = cpc.lstms[m](z[m][:, : t + 1])[0][:, t]
        for k in range(2):
            pred = cpc.predictors[m][k](context)                          # p^m_k, (B, D)
            for n in AV:
                scores = z[n][:, t + 1 + k] @ pred.T                      # [target i, prediction j]
                if softmax == "targets":       # Eq. 6: each prediction normalised over candidate targets
                    term = -torch.stack([scores[i, i] - torch.logsumexp(scores[:, i], 0) for i in range(5)]).mean()
                else:                          # released LogSoftmax dim=1: each target over the predictions
                    term = -torch.stack([scores[i, i] - torch.logsumexp(scores[i, :], 0) for i in range(5)]).mean()
                expected = expected + (0.5 if m == n else 1.0) * term / 2
    loss, _ = cpc(z, t=t)
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    for m in AV:   # gradient reaches the used prefix and targets (t + 1, t + 2) but never later steps
        assert z[m].grad[:, : t + 3].abs().sum() > 0 and z[m].grad[:, t + 3:].abs().sum() == 0


def test_self_weight_zero_drops_intra_pairs():
    torch.manual_seed(3)
    full = CrossCPC(AVT, 16, context_dim=16, layers=1, self_weight=0.1)
    cross_only = CrossCPC(AVT, 16, context_dim=16, layers=1, self_weight=0.0)
    cross_only.load_state_dict(full.state_dict())
    z = _random_z(AVT, batch=8)
    loss_full, stats_full = full(z, t=4)
    loss_cross, stats_cross = cross_only(z, t=4)
    intra = sum(stats_full[f"cpc_loss/{m}->{m}"] for m in AVT)
    cross = sum(stats_full[f"cpc_loss/{m}->{n}"] for m in AVT for n in AVT if m != n)
    assert "cpc_loss/audio->audio" not in stats_cross and len(stats_cross) == 12
    assert loss_cross.item() == pytest.approx(cross, rel=1e-5)
    assert loss_full.item() - loss_cross.item() == pytest.approx(0.1 * intra, rel=1e-4)


@pytest.mark.parametrize("softmax", ["predictions", "targets"])
def test_learns_to_predict_a_time_shifted_copy(softmax):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cpc = CrossCPC(AV, 16, context_dim=64, layers=1, steps=1, softmax=softmax, self_weight=0.0)
    opt = torch.optim.Adam(cpc.parameters(), lr=3e-3)
    for _ in range(200):
        seq = torch.randn(32, 11, 16, generator=gen)
        z = {"audio": seq[:, 1:], "video": seq[:, :-1]}    # video_{t+1} = audio_t: known to the audio context
        loss, stats = cpc(z, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["cpc_loss/audio->video"] < 0.3 * math.log(32) and stats["cpc_acc/audio->video"] > 0.9
    # audio_{t+1} = video_{t+2} is unseen by the video context: that direction stays near chance
    assert stats["cpc_loss/video->audio"] > 0.8 * math.log(32)
    assert loss.item() < 0.7 * 2 * math.log(32)


def test_random_t_range_and_determinism():
    cpc = CrossCPC(AV, 16, context_dim=16, layers=1, steps=2)
    z = _random_z(AV, batch=4, length=4)            # T - K - 1 = 1: the only valid t is 1
    assert torch.equal(cpc(z)[0], cpc(z, t=1)[0])
    z = _random_z(AV, batch=4)
    a = cpc(z, generator=torch.Generator().manual_seed(5))[0]
    b = cpc(z, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)


def test_validation_errors():
    cpc = CrossCPC(AV, 16, context_dim=16, layers=1, steps=1)
    z = _random_z(AV, batch=4)
    with pytest.raises(ValueError, match=r"t must be in \[1, 8\]"):
        cpc(z, t=9)
    with pytest.raises(ValueError, match=r"t must be in"):
        cpc(z, t=0)
    with pytest.raises(ValueError, match="expects features for"):
        cpc({"audio": z["audio"]})
    with pytest.raises(ValueError, match=r"\(B, T, 16\)"):
        cpc({"audio": z["audio"], "video": z["video"][:, :, :8]})
    with pytest.raises(ValueError, match="T >= 3"):
        cpc({m: v[:, :2] for m, v in z.items()})
    with pytest.raises(ValueError, match="at least 2"):
        cpc({m: v[:1] for m, v in z.items()})
    with pytest.raises(ValueError, match="softmax"):
        CrossCPC(AV, 16, softmax="rows")
