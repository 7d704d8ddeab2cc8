"""Downstream metrics on hand-made inputs with hand-computed answers."""
import math

import pytest
import torch

from cmg_lib.downstream.metrics import (avs_scores, background_only_scores, clip_accuracy, clip_labels_from_segments,
                                        f_measure, localisation_batch, localisation_scores, mask_iou, recall_at_k)


def logit(p):
    p = torch.as_tensor(p, dtype=torch.float32)
    return torch.log(p / (1 - p))


def f_beta(p, r, b2=0.3):
    return (1 + b2) * p * r / (b2 * p + r)


# ---- AVS mIoU -------------------------------------------------------------------------------------------------------

def test_mask_iou_two_by_two_and_empty_gt_rule():
    pred = torch.tensor([[[10.0, -10.0], [10.0, -10.0]]])           # predicts the left column
    gt = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])                    # top row
    assert mask_iou(pred, gt) == pytest.approx(1 / 3, abs=1e-6)     # inter 1, union 3
    empty = torch.zeros(1, 2, 2)
    # empty GT: scored on the inverse masks: 2 true-negative pixels / 4 pixels
    assert mask_iou(pred, empty) == pytest.approx(0.5, abs=1e-6)
    # a batch is the mean over its frames
    assert mask_iou(torch.cat([pred, pred]), torch.cat([gt, empty])) == pytest.approx((1 / 3 + 1 / 2) / 2, abs=1e-6)
    # empty GT and empty prediction is a perfect frame
    assert mask_iou(-torch.ones(1, 2, 2), empty) == pytest.approx(1.0, abs=1e-6)


def test_mask_iou_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape|expected"):
        mask_iou(torch.zeros(1, 2, 2), torch.zeros(1, 3, 2))


# ---- AVS F-score ----------------------------------------------------------------------------------------------------

FRAME_A = (logit([[[0.9, 0.2], [0.6, 0.1]]]), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
FRAME_B = (logit([[[0.05, 0.05], [0.45, 0.3]]]), torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]))


def test_f_measure_single_frame_is_max_over_thresholds():
    # thresholds t: <=0.1: P=1/2,R=1 ; (0.1,0.2]: P=2/3,R=1 ; (0.2,0.6]: P=R=1/2 ; (0.6,0.9]: P=1,R=1/2 ; >0.9: 0
    curve = [f_beta(0.5, 1.0), f_beta(2 / 3, 1.0), f_beta(0.5, 0.5), f_beta(1.0, 0.5)]
    assert max(curve) == pytest.approx(13 / 16)
    assert f_measure(*FRAME_A) == pytest.approx(13 / 16, abs=1e-5)


def test_f_measure_averages_curves_before_the_max_and_skips_empty_frames():
    logits = torch.cat([FRAME_A[0], FRAME_B[0], logit([[[0.9, 0.9], [0.9, 0.9]]])])
    gt = torch.cat([FRAME_A[1], FRAME_B[1], torch.zeros(1, 2, 2)])
    # frame B: F = f(1/2, 1) for t <= 0.05, 1 on (0.05, 0.3], f(1, 1/2) on (0.3, 0.45], 0 above;
    # the mean curve peaks on (0.1, 0.2] where frame A has f(2/3, 1) = 13/18
    expected = (13 / 18 + 1.0) / 2
    assert f_measure(logits, gt) == pytest.approx(expected, abs=1e-5)
    assert expected < (13 / 16 + 1.0) / 2                 # not the mean of the per-frame maxima
    assert f_measure(logits[2:], gt[2:]) == 0.0            # only empty frames -> 0


def test_avs_scores_unweighted_mean_over_batches():
    pred = torch.tensor([[[10.0, -10.0], [10.0, -10.0]]])
    gt_third = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])      # IoU 1/3
    gt_full = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])       # IoU 1
    logits = torch.stack([pred, pred, pred])                 # (3 clips, 1 frame, 2, 2)
    gts = torch.stack([gt_third, gt_third, gt_full])
    scores = avs_scores(logits, gts, batch_size=2)           # batches {1/3, 1/3} and {1}
    assert scores["miou"] == pytest.approx((1 / 3 + 1.0) / 2, abs=1e-6)
    assert avs_scores(logits, gts, batch_size=3)["miou"] == pytest.approx(5 / 9, abs=1e-6)
    # threshold 0 counts every pixel (F(1/2, 1)); above ~0 only the left column remains (F(1/2, 1/2) resp. 1)
    assert scores["f_score"] == pytest.approx((f_beta(0.5, 1.0) + 1.0) / 2, abs=1e-5)


# ---- retrieval ------------------------------------------------------------------------------------------------------

def test_recall_at_k_known_ranks():
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.2],     # target 0 ranks 0
                        [0.8, 0.3, 0.7, 0.1],     # target 1 ranks 2
                        [0.2, 0.4, 0.1, 0.3]])    # target 2 ranks 3
    r = recall_at_k(sim, ks=(1, 2, 3, 4))
    assert r == pytest.approx({"R@1": 1 / 3, "R@2": 1 / 3, "R@3": 2 / 3, "R@4": 1.0})
    # explicit targets and ties in the query's favour
    assert recall_at_k(torch.tensor([[0.5, 0.5]]), torch.tensor([1]), ks=(1,))["R@1"] == 1.0
    with pytest.raises(ValueError, match="similarity"):
        recall_at_k(torch.zeros(0, 3))


# ---- AVVP localisation ----------------------------------------------------------------------------------------------

def test_localisation_batch_precision_recall_with_background_column():
    logits = torch.tensor([[[5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]]])   # predicted cells (0,0), (0,1), (1,bg)
    targets = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    p, r = localisation_batch(logits, targets)
    assert (p, r) == pytest.approx((2 / 3, 1.0))
    assert localisation_batch(-torch.ones(1, 2, 3) * 5, targets) == (0.0, 0.0)   # nothing predicted -> 0, 0


def test_localisation_scores_batch_weighting_and_f1_from_means():
    logits = torch.tensor([[[5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]],
                           [[-5.0, -5.0, -5.0], [-5.0, -5.0, -5.0]]])
    targets = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
                            [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    per_clip = localisation_scores(logits, targets, batch_size=1)     # (2/3, 1) and (0, 0) averaged
    assert per_clip["precision"] == pytest.approx(1 / 3)
    assert per_clip["recall"] == pytest.approx(1 / 2)
    assert per_clip["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    one_batch = localisation_scores(logits, targets, batch_size=80)   # 2 TP of 3 predicted, 4 GT cells
    assert one_batch["precision"] == pytest.approx(2 / 3)
    assert one_batch["recall"] == pytest.approx(1 / 2)
    assert one_batch["f1"] == pytest.approx(4 / 7)


# ---- clip accuracy (compute_accuracy_supervised) ---------------------------------------------------------------------

def test_clip_labels_from_segments_is_max_of_segment_indices_as_released():
    c, t = 4, 4
    seg = torch.zeros(2, t, c + 1)
    seg[0, [0, 3], c] = 1                 # background, event 2, event 2, background
    seg[0, [1, 2], 2] = 1
    seg[1, 0, 1] = 1                      # events 1 then 3 x3: the max index (3) wins
    seg[1, 1:, 3] = 1
    assert clip_labels_from_segments(seg).tolist() == [2, 3]
    seg[1, :, :] = 0
    seg[1, 0, 3] = 1
    seg[1, 1:, 1] = 1                     # one segment of class 3, three of class 1 -> 3, not the majority
    assert clip_labels_from_segments(seg).tolist() == [2, 3]


def test_clip_accuracy_from_segment_labels():
    seg = torch.zeros(3, 2, 4)
    seg[0, :, 0] = 1
    seg[1, :, 2] = 1
    seg[2, 0, 1] = 1
    seg[2, 1, 3] = 1                      # background only in segment 1 -> class 1
    labels = clip_labels_from_segments(seg)
    logits = torch.tensor([[3.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    assert clip_accuracy(logits, labels) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="labels"):
        clip_accuracy(logits, labels[:2])


def test_metrics_are_finite_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    logits, gt = torch.randn(6, 5, 7, generator=g), (torch.rand(6, 5, 7, generator=g) > 0.6).float()
    f, iou = f_measure(logits, gt), mask_iou(logits, gt)
    assert 0.0 <= f <= 1.0 and 0.0 <= iou <= 1.0 and math.isfinite(f)


def test_f_measure_matches_a_direct_threshold_loop():
    g = torch.Generator().manual_seed(1)
    logits, gt = torch.randn(4, 6, 6, generator=g) * 3, (torch.rand(4, 6, 6, generator=g) > 0.5).float()
    gt[2] = 0
    prob, curve, frames = torch.sigmoid(logits), torch.zeros(255), 0
    for i in range(4):                                     # AVSBench's Eval_Fmeasure, written out
        if gt[i].sum() == 0:
            continue
        frames += 1
        for j, t in enumerate(torch.linspace(0, 1 - 1e-10, 255)):
            hit = (prob[i] >= t).float()
            tp = (hit * gt[i]).sum()
            p, r = tp / (hit.sum() + 1e-20), tp / (gt[i].sum() + 1e-20)
            f = (1 + 0.3) * p * r / (0.3 * p + r)
            curve[j] += 0.0 if torch.isnan(f) else f
    assert f_measure(logits, gt) == pytest.approx((curve / frames).max().item(), abs=1e-5)


def test_background_only_scores_are_the_background_share_of_the_segments():
    # two clips of two segments, classes (a, b, background): clip 0 = [background, a], clip 1 = [background,
    # background]: 3 of 4 segments are background, so precision = recall = F1 = 0.75, in one batch or in two
    targets = torch.tensor([[[0, 0, 1], [1, 0, 0]], [[0, 0, 1], [0, 0, 1]]], dtype=torch.float32)
    for batch in (80, 1):
        scores = background_only_scores(targets, batch_size=batch)
        assert scores == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75})
    with pytest.raises(ValueError, match=r"expected targets \(N, T, C\+1\)"):
        background_only_scores(torch.zeros(2, 3))
