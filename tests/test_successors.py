"""The successors' terms (FCID's coarse level and InfoNCE, MICU's FCMI and CUJP) and TOC's scores, on small cases
whose answers are computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from cmg_lib.downstream.toc import released_dims, toc_dimensions, toc_scores
from cmg_lib.objectives.coarse import CoarseLevel, coarse_infonce, group, infonce_pairs
from cmg_lib.objectives.cujp import UnifiedJigsaw, puzzles
from cmg_lib.objectives.fcmi import fcmi_losses, time_mask
from cmg_lib.objectives.infonce import info_nce

EYE = torch.eye(2)
ONE_OFF = math.log(1 + math.exp(-1))        # -log(e / (e + 1)): two orthogonal unit rows at temperature 1


def test_info_nce_known_answers():
    assert info_nce(EYE, EYE, temperature=1.0).item() == pytest.approx(ONE_OFF)
    assert info_nce(EYE, EYE).item() == pytest.approx(math.log(1 + math.exp(-10)), rel=1e-3)   # temperature 0.1
    # scale does not matter (unit vectors); swapped keys put the positives off the diagonal
    assert info_nce(3 * EYE, 0.5 * EYE, temperature=1.0).item() == pytest.approx(ONE_OFF)
    assert info_nce(EYE, EYE.flip(0), temperature=1.0).item() == pytest.approx(math.log(1 + math.e))
    # a query masked to zero has all logits 0: log N, and the mask passes no gradient to what it masked
    z = torch.tensor([[5.0, 1.0], [0.0, 1.0]], requires_grad=True)
    loss = info_nce(z * torch.tensor([[0.0], [1.0]]), EYE, temperature=1.0)
    assert loss.item() == pytest.approx((math.log(2) + ONE_OFF) / 2)
    loss.backward()
    assert z.grad[0].abs().sum().item() == 0.0
    # leading axes are independent problems, averaged
    stacked = torch.stack([EYE, EYE.flip(0)])
    assert info_nce(stacked, torch.stack([EYE, EYE]), 1.0).item() == pytest.approx((ONE_OFF + math.log(1 + math.e)) / 2)
    with pytest.raises(ValueError, match="one shape"):
        info_nce(EYE, torch.eye(3))


def test_fcmi_known_answers():
    z = {"audio": EYE[None], "video": EYE[None]}                       # one clip, T = 2 orthogonal steps
    fine, coarse = fcmi_losses(z, torch.ones(1, 2), temperature=1.0)
    assert fine.item() == pytest.approx(4 * ONE_OFF)                  # 4 ordered pairs, each ONE_OFF
    assert coarse.item() == pytest.approx(0.0)                        # one clip: its own key is the only one
    # the second step masked: its query is zero (log 2), the first step still ONE_OFF, for every pair
    fine, _ = fcmi_losses(z, torch.tensor([[1.0, 0.0]]), temperature=1.0)
    assert fine.item() == pytest.approx(4 * (ONE_OFF + math.log(2)) / 2)
    # coarse: two clips whose time-means are orthogonal; masking keeps the directions (means of one step)
    clips = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    _, coarse = fcmi_losses({"audio": clips, "video": clips}, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 1.0)
    assert coarse.item() == pytest.approx(4 * ONE_OFF)
    keep = time_mask(1000, 10, 0.3, torch.Generator().manual_seed(0))
    assert keep.shape == (1000, 10) and set(keep.unique().tolist()) == {0.0, 1.0}
    assert 0.68 < keep.mean().item() < 0.72                           # 70 % kept
    with pytest.raises(ValueError, match="keep-mask"):
        fcmi_losses(z, torch.ones(2, 2))


def test_cujp_puzzles_and_classifier():
    rows = {"audio": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "video": torch.tensor([[5.0, 6.0, 7.0, 8.0]])}
    inputs, labels = puzzles(rows, torch.tensor([1, 0]), torch.tensor([[0, 1], [1, 0]]))
    # pieces: video's first half, audio's second half; order 0 keeps them, order 1 swaps them
    assert inputs.tolist() == [[5.0, 6.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]] and labels.tolist() == [0, 1]
    torch.manual_seed(0)
    jig = UnifiedJigsaw(dim=4, chunks=2, permutations=2, hidden=8)
    assert sorted(map(tuple, jig.orders.tolist())) == [(0, 1), (1, 0)]   # 2 of 2! orders: both
    q = {m: torch.randn(3, 5, 4, requires_grad=True) for m in ("audio", "video")}
    loss, accuracy = jig(q, torch.Generator().manual_seed(0))
    loss.backward()
    assert 0.0 <= accuracy <= 1.0 and loss.item() > 0
    assert any(q[m].grad.abs().sum() > 0 for m in q)                   # the pieces train the codes' encoders
    assert UnifiedJigsaw(dim=8, chunks=4, permutations=5).orders.shape == (5, 4)
    with pytest.raises(ValueError, match="divide"):
        UnifiedJigsaw(dim=6, chunks=4)
    with pytest.raises(ValueError, match="jigsaw_permutations"):
        UnifiedJigsaw(dim=4, chunks=2, permutations=3)


def test_coarse_level_shapes_groups_and_pairs():
    assert (group("audio"), group("video"), group("text")) == ("av", "av", "text")
    assert infonce_pairs(("audio", "video", "text")) == [("audio", "text"), ("video", "text")]
    assert infonce_pairs(("audio", "video")) == [("audio", "video")]
    torch.manual_seed(0)
    level = CoarseLevel(("audio", "video"), 4)
    assert level.groups() == ["av"] and set(level.decoders) == {"audio", "video"}
    z = {m: torch.randn(3, 5, 4) for m in ("audio", "video")}
    feats = level(z)
    assert feats["audio"].general.shape == (3, 4) and (feats["audio"].general >= 0).all()
    # audio and video share the encoders: the same z gives the same clip vector
    same = level({"audio": z["audio"], "video": z["audio"]})
    torch.testing.assert_close(same["audio"].clip, same["video"].clip)
    # per segment: each step on its own, so a clip of one step gives the clip path's general vector
    torch.testing.assert_close(level.per_segment(z["audio"][:, :1], "audio")[:, 0], level(
        {"audio": z["audio"][:, :1]})["audio"].general)
    pairs = level.club_pairs(feats, lambda t: t, lambda t: t)
    assert set(pairs) == {"coarse_av"} and pairs["coarse_av"][0].shape == (6, 1, 4)
    assert level.reconstruction("audio", feats["audio"].general, feats["audio"]).item() >= 0
    # coarse InfoNCE on orthogonal clips: one pair, ONE_OFF at temperature 1
    assert coarse_infonce({"audio": EYE, "video": EYE}, 1.0).item() == pytest.approx(ONE_OFF)


def test_toc_scores_known_answer():
    # codes (1, 2), (3, 0), (-1, 1): dim 0 pair mean (3^2 - 11) / 6 = -1/3, variance 4; dim 1 pair mean
    # (3^2 - 5) / 6 = 2/3, variance 1; scores 0.7/3 + 1.2 and -1.4/3 + 0.3
    e = torch.tensor([[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]])
    torch.testing.assert_close(toc_scores(e), torch.tensor([0.7 / 3 + 1.2, -1.4 / 3 + 0.3]))
    assert toc_dimensions(e, 1).tolist() == [0] and toc_dimensions(e, 2).tolist() == [0, 1]
    # the pair mean equals the released double loop over ordered pairs i != j
    torch.manual_seed(0)
    e = torch.randn(6, 5, dtype=torch.float64)
    loop = sum(e[i] * e[j] for i in range(6) for j in range(6) if i != j) / 30
    torch.testing.assert_close(toc_scores(e), -0.7 * loop + 0.3 * e.var(0))
    assert (released_dims("ave", 64), released_dims("avvp", 64), released_dims("ave_avvp", 64),
            released_dims("ucf_vgg", 64)) == (64, 49, 32, 42)
    with pytest.raises(ValueError, match="toc_dims"):
        toc_dimensions(e, 6)
