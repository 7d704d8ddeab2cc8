"""Metrics of the downstream tasks, as small pure functions (fractions in [0, 1]; ``run_task`` reports percent).

Each function follows the released code where one exists (book/differences.md#downstream-protocol, #avs-protocol,
#retrieval-protocol):

* ``clip_labels_from_segments`` / ``clip_accuracy``: ``compute_accuracy_supervised`` (AVE, UCF<->VGGSound, 4.0).
* ``localisation_batch`` / ``localisation_scores``: the AVVP segment-level precision/recall at sigmoid > 0.5 over
  every ``(segment, class)`` cell *including the background column*, averaged over batches, F1 from the averages
  (4.2; the paper's AVVP "accuracy" is this precision).
* ``mask_iou`` / ``f_measure`` / ``avs_scores``: AVSBench's ``mask_iou`` and ``Eval_Fmeasure`` (4.5).
* ``recall_at_k``: Recall@K (keys ``R@K``) of X-to-audio retrieval (no released code, 4.6; protocol in
  ``retrieval.py``).
* ``threshold_grid`` / ``open_set_scores`` / ``best_threshold``: the open-set task's known and unknown accuracy
  and H-score at a max-softmax threshold, and the released 10-value sweep (MICU's ``ave_oscmg.py``; protocol in
  ``openset.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor

F_BETA2 = 0.3          # AVSBench's beta^2 for the F-measure
F_THRESHOLDS = 255     # AVSBench's number of thresholds in [0, 1)


def _batches(n: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def clip_labels_from_segments(segment_labels: Tensor) -> Tensor:
    """Clip class from ``(B, T, C+1)`` multi-hot segment labels as released (``ave.py:195-198``).

    Per segment, the argmax over the C foreground columns (background = last column dropped); the clip class is the
    *maximum of those indices over T* (so a segment of pure background contributes index 0, never above a real event).
    """
    if segment_labels.dim() != 3 or segment_labels.shape[-1] < 2:
        raise ValueError(f"segment labels must be (B, T, C+1) with C >= 1, got {tuple(segment_labels.shape)}")
    per_segment = segment_labels[..., :-1].argmax(dim=-1)
    return per_segment.max(dim=1).values


def clip_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``(N, C)`` clip logits against ``(N,)`` class ids (a fraction)."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("clip_accuracy needs at least one clip")
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def localisation_batch(logits: Tensor, targets: Tensor, threshold: float = 0.5) -> tuple[float, float]:
    """Micro precision and recall of one batch (``avvp.py:432-445``): cells with sigmoid(logit) > threshold are
    predicted positive, over all ``(..., C+1)`` cells including background. No positive prediction -> (0, 0)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    predicted = torch.sigmoid(logits) > threshold
    positives = targets > 0.5
    n_pred = int(predicted.sum())
    if n_pred == 0:
        return 0.0, 0.0
    true_pos = float((predicted & positives).sum())
    n_gt = int(positives.sum())
    return true_pos / n_pred, (true_pos / n_gt if n_gt else 0.0)


def localisation_scores(logits: Tensor, targets: Tensor, batch_size: int = 80,
                        threshold: float = 0.5) -> dict[str, float]:
    """Released AVVP metric over ``(N, T, C+1)`` clips: per-batch precision/recall (batches of ``batch_size`` clips,
    the released loader's 80) averaged with weight = batch size, then ``F1 = 2PR / (P + R)`` from the averages."""
    if logits.shape != targets.shape or logits.dim() != 3:
        raise ValueError(f"expected logits and targets (N, T, C+1), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    n = logits.shape[0]
    if n == 0:
        raise ValueError("localisation_scores needs at least one clip")
    sums = torch.zeros(2, dtype=torch.float64)
    for start, stop in _batches(n, batch_size):
        p, r = localisation_batch(logits[start:stop], targets[start:stop], threshold)
        sums += torch.tensor([p, r], dtype=torch.float64) * (stop - start)
    precision, recall = (sums / n).tolist()
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def background_only_scores(targets: Tensor, batch_size: int = 80, threshold: float = 0.5) -> dict[str, float]:
    """:func:`localisation_scores` of a head that calls every segment background (the last of the ``C+1``
    columns) and nothing else: the floor a localisation head starts from. With one label per segment its
    precision and recall are both the background share of the segments."""
    if targets.dim() != 3 or targets.shape[-1] < 2:
        raise ValueError(f"expected targets (N, T, C+1) with C >= 1, got {tuple(targets.shape)}")
    logits = torch.full(targets.shape, -30.0, dtype=torch.float32)
    logits[..., -1] = 30.0                                   # sigmoid 1 - 1e-13 / 1e-13: past any threshold in (0, 1)
    return localisation_scores(logits, targets, batch_size, threshold)


def mask_iou(logits: Tensor, gt: Tensor, eps: float = 1e-7) -> float:
    """AVSBench ``mask_iou`` of one batch of ``(N, H, W)`` frame logits: binarise sigmoid > 0.5, IoU per frame, a
    frame with an empty ground truth is scored on the inverse masks (true negatives / all pixels); mean over frames."""
    if logits.shape != gt.shape or logits.dim() != 3:
        raise ValueError(f"expected logits and masks (N, H, W), got {tuple(logits.shape)} and {tuple(gt.shape)}")
    pred = (torch.sigmoid(logits.float()) > 0.5).float()
    target = (gt > 0.5).float()
    inter = (pred * target).sum(dim=(1, 2))
    union = torch.maximum(pred, target).sum(dim=(1, 2))
    empty = target.sum(dim=(1, 2)) == 0
    inter = torch.where(empty, ((1 - pred) * (1 - target)).sum(dim=(1, 2)), inter)
    union = torch.where(empty, torch.full_like(union, float(gt.shape[1] * gt.shape[2])), union)
    return (inter / (union + eps)).mean().item()


def f_measure(logits: Tensor, gt: Tensor, beta2: float = F_BETA2, n_thresholds: int = F_THRESHOLDS) -> float:
    """AVSBench ``Eval_Fmeasure`` of one batch of ``(N, H, W)`` frame logits.

    For each of ``n_thresholds`` thresholds ``linspace(0, 1 - 1e-10)``: per frame with a non-empty ground truth,
    precision = TP / #(sigmoid >= t), recall = TP / #gt, F = (1 + b2) P R / (b2 P + R) (NaN -> 0); the F curve is
    averaged over those frames and the batch score is its maximum over thresholds (0 when every frame is empty).
    Counted with a histogram over threshold bins, so no ``(N, thresholds, H, W)`` tensor is built.
    """
    if logits.shape != gt.shape or logits.dim() != 3:
        raise ValueError(f"expected logits and masks (N, H, W), got {tuple(logits.shape)} and {tuple(gt.shape)}")
    keep = (gt > 0.5).flatten(1).any(dim=1)
    if not bool(keep.any()):
        return 0.0
    prob = torch.sigmoid(logits[keep].float()).flatten(1)
    target = (gt[keep] > 0.5).flatten(1).float()
    thresholds = torch.linspace(0, 1 - 1e-10, n_thresholds)
    # bin b = number of thresholds <= p, so "p >= thresholds[t]" <=> bin > t
    bins = torch.searchsorted(thresholds, prob.contiguous(), right=True)
    frames = prob.shape[0]
    offsets = (torch.arange(frames) * (n_thresholds + 1)).unsqueeze(1)
    size = frames * (n_thresholds + 1)
    all_hist = torch.bincount((bins + offsets).flatten(), minlength=size).view(frames, -1).double()
    tp_hist = torch.bincount((bins + offsets).flatten(), weights=target.flatten().double(),
                             minlength=size).view(frames, -1)
    # count(bin > t) for t = 0..K-1: reverse cumulative sum, shifted by one
    n_pred = all_hist.flip(1).cumsum(1).flip(1)[:, 1:]
    true_pos = tp_hist.flip(1).cumsum(1).flip(1)[:, 1:]
    precision = true_pos / (n_pred + 1e-20)
    recall = true_pos / (target.sum(dim=1, keepdim=True).double() + 1e-20)
    f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
    f = torch.nan_to_num(f, nan=0.0)
    return f.mean(dim=0).max().item()


def avs_scores(logits: Tensor, gt: Tensor, batch_size: int = 4, frames_per_clip: int | None = None) -> dict[str, float]:
    """AVSBench test aggregation: ``mask_iou`` and ``f_measure`` per batch of ``batch_size`` clips (test.sh: 4), then
    the unweighted mean over batches. ``logits``/``gt``: ``(N, F, H, W)`` clips of F frames, or ``(N, H, W)``."""
    if logits.shape != gt.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and masks {tuple(gt.shape)} must have the same shape")
    if logits.dim() == 3:
        logits, gt = logits.unsqueeze(1), gt.unsqueeze(1)
    if logits.dim() != 4 or logits.shape[0] == 0:
        raise ValueError(f"expected (N, F, H, W) or (N, H, W) with N >= 1, got {tuple(logits.shape)}")
    ious, fs = [], []
    for start, stop in _batches(logits.shape[0], batch_size):
        lb, gb = logits[start:stop].flatten(0, 1), gt[start:stop].flatten(0, 1)
        ious.append(mask_iou(lb, gb))
        fs.append(f_measure(lb, gb))
    return {"miou": sum(ious) / len(ious), "f_score": sum(fs) / len(fs)}


def recall_at_k(similarity: Tensor, targets: Tensor | None = None, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K of a ``(Q, G)`` query-by-gallery similarity matrix: the fraction of queries whose target gallery item
    (``targets[q]``, default ``q``) is among the K most similar. Rank = number of gallery items *strictly* more
    similar than the target (ties resolved in the query's favour)."""
    if similarity.dim() != 2 or similarity.shape[0] == 0:
        raise ValueError(f"expected a (Q, G) similarity matrix with Q >= 1, got {tuple(similarity.shape)}")
    q = similarity.shape[0]
    if targets is None:
        if similarity.shape[1] < q:
            raise ValueError("without targets the gallery must hold one item per query (G >= Q)")
        targets = torch.arange(q)
    target_sim = similarity.gather(1, targets.view(-1, 1).long())
    rank = (similarity > target_sim).sum(dim=1)
    return {f"R@{k}": (rank < k).float().mean().item() for k in ks}


def threshold_grid(scores: Tensor, count: int = 10) -> Tensor:
    """``count`` thresholds evenly spaced from the lowest to the highest of ``scores`` (each clip's max-softmax
    probability), both ends included: the released sweep (``ICCV25-OSCMG/code/src/ave_oscmg.py:331-335``)."""
    if scores.dim() != 1 or scores.numel() == 0 or count < 2:
        raise ValueError(f"threshold_grid needs a non-empty (N,) score vector and count >= 2, got "
                         f"{tuple(scores.shape)} and {count}")
    low, high = float(scores.min()), float(scores.max())
    return torch.tensor([low + (high - low) * k / (count - 1) for k in range(count)], dtype=torch.float64)


def open_set_scores(probs: Tensor, targets: Tensor, threshold: float) -> dict[str, float]:
    """Open-set accuracy of ``(N, K)`` known-class probabilities against ``targets (N,)`` in ``0..K`` (K =
    "unknown"): a clip whose highest probability is below ``threshold`` is called unknown, any other its argmax
    class (released ``ave_oscmg.py:341-353``). ``known``: the share of known clips given their class; ``unknown``:
    the share of unknown clips called unknown; ``hscore``: their harmonic mean (0 when both are 0)."""
    if probs.dim() != 2 or targets.shape != probs.shape[:1]:
        raise ValueError(f"expected probs (N, K) and targets (N,), got {tuple(probs.shape)} and {tuple(targets.shape)}")
    unknown_id = probs.shape[1]
    is_unknown = targets == unknown_id
    if bool(is_unknown.all()) or not bool(is_unknown.any()):
        raise ValueError(f"open-set scores need clips of known classes (< {unknown_id}) and unknown ones "
                         f"(= {unknown_id}); got {int((~is_unknown).sum())} and {int(is_unknown.sum())}")
    top, predicted = probs.max(dim=1)
    predicted = torch.where(top < threshold, torch.full_like(predicted, unknown_id), predicted)
    hits = predicted == targets
    known, unknown = hits[~is_unknown].float().mean().item(), hits[is_unknown].float().mean().item()
    hscore = 2 * known * unknown / (known + unknown) if known + unknown > 0 else 0.0
    return {"known": known, "unknown": unknown, "hscore": hscore}


def best_threshold(probs: Tensor, targets: Tensor, count: int = 10) -> tuple[float, dict[str, float]]:
    """The threshold of :func:`threshold_grid` (over these clips' max probabilities) with the highest H-score (the
    first of equals, as the released strict ``>``) and its :func:`open_set_scores`."""
    best = None
    for threshold in threshold_grid(probs.max(dim=1).values, count).tolist():
        scores = open_set_scores(probs, targets, threshold)
        if best is None or scores["hscore"] > best[1]["hscore"]:
            best = (threshold, scores)
    return best
