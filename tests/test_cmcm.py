"""CMCM loss: the vectorised form equals a per-sample loop written from the formula; chance level; gradients."""
import math
from itertools import combinations

import pytest
import torch

from cmg_lib.objectives.cmcm import code_distribution, cmcm_loss

torch.set_num_threads(1)


def naive_cmcm_loss(z, embedding, form="released"):
    """Straight from the formula, one sample at a time (the released code's loop structure,
    ``model/main_model_2.py:651-710``)."""
    names = list(z)
    B = z[names[0]].shape[0]
    P = {}
    for m in names:
        rows = []
        for b in range(B):
            distance = torch.stack([torch.linalg.vector_norm(z[m][b] - e, dim=-1) for e in embedding], dim=-1)
            rows.append(torch.softmax(-distance, dim=-1).mean(0))
        P[m] = torch.stack(rows)
    total = 0.0
    for m, n in combinations(names, 2):
        S = torch.empty(B, B)
        for i in range(B):
            for j in range(B):
                if form == "released":
                    S[i, j] = (P[m][i] * torch.log(P[n][j] + 1e-10)).sum() + (P[n][i] * torch.log(P[m][j] + 1e-10)).sum()
                else:
                    S[i, j] = (P[m][i] * torch.log(P[n][j] + 1e-10)).sum() + (P[n][j] * torch.log(P[m][i] + 1e-10)).sum()
        loss = 0.0
        if form == "released":
            E = torch.exp(S + torch.max(-S))
            for i in range(B):
                loss = loss - torch.log(E[i, i] / (E[i].sum() + 1e-5))
        else:
            for i in range(B):
                loss = loss - torch.log(torch.exp(S[i, i]) / torch.exp(S[i]).sum())
                loss = loss - torch.log(torch.exp(S[i, i]) / torch.exp(S[:, i]).sum())
        total = total + loss / B
    return 0.5 * total


@pytest.mark.parametrize("form", ["released", "symmetric"])
@pytest.mark.parametrize("names", [("audio", "video"), ("audio", "video", "text")])
def test_vectorised_equals_naive_loop(form, names):
    torch.manual_seed(0)
    embedding = torch.randn(7, 4)
    z = {m: torch.randn(5, 3, 4) for m in names}
    torch.testing.assert_close(cmcm_loss(z, embedding, form), naive_cmcm_loss(z, embedding, form),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form,per_pair", [("released", lambda B: math.log(B + 1e-5)),
                                           ("symmetric", lambda B: 2 * math.log(B))])
@pytest.mark.parametrize("names", [("audio", "video"), ("audio", "video", "text")])
def test_identical_inputs_give_chance_level(form, per_pair, names):
    torch.manual_seed(1)
    B = 6
    same = torch.randn(1, 3, 4).expand(B, 3, 4)
    loss = cmcm_loss({m: same.clone() for m in names}, torch.randn(9, 4), form)
    pairs = len(names) * (len(names) - 1) // 2
    assert loss.item() == pytest.approx(0.5 * pairs * per_pair(B), rel=1e-5)


def test_matched_pairs_score_below_chance_and_gradient_reaches_z_only():
    torch.manual_seed(2)
    B, L = 8, 16
    embedding = torch.randn(L, 4, requires_grad=True)
    base = torch.randn(B, 3, 4) * 2
    z = {"audio": (base + 0.01 * torch.randn(B, 3, 4)).requires_grad_(),
         "video": (base + 0.01 * torch.randn(B, 3, 4)).requires_grad_()}
    loss = cmcm_loss(z, embedding)
    assert loss.item() < 0.5 * math.log(B) - 0.1
    shuffled = {"audio": z["audio"], "video": z["video"][torch.roll(torch.arange(B), 1)]}
    assert cmcm_loss(shuffled, embedding).item() > loss.item()
    with torch.no_grad():
        embedding.mul_(2.0)          # an EMA update between the loss and backward() must not break the graph
    loss.backward()
    assert embedding.grad is None
    assert z["audio"].grad.abs().sum() > 0 and torch.isfinite(z["video"].grad).all()


def test_code_distribution_and_finite_gradient_at_a_code():
    embedding = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]], requires_grad=True)     # exactly on the codes
    P = code_distribution(z, embedding)
    p = torch.softmax(torch.tensor([0.0, -5.0]), 0)                        # plain distance 5, not squared 25
    torch.testing.assert_close(P[0], 0.5 * (p + p.flip(0)), rtol=1e-5, atol=1e-6)
    P.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_bad_inputs_raise():
    e = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="form"):
        cmcm_loss({"audio": torch.zeros(2, 1, 2), "video": torch.zeros(2, 1, 2)}, e, form="bidirectional")
    with pytest.raises(ValueError, match="at least 2"):
        cmcm_loss({"audio": torch.zeros(2, 1, 2)}, e)
    with pytest.raises(ValueError, match="batch size"):
        cmcm_loss({"audio": torch.zeros(2, 1, 2), "video": torch.zeros(3, 1, 2)}, e)
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        cmcm_loss({"audio": torch.zeros(2, 1, 3), "video": torch.zeros(2, 1, 3)}, e)
