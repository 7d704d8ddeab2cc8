"""Fig. 5 of the paper: AVS-S4 frames with the ground-truth mask and two models' predicted masks overlaid.

``overlay_figure(frames, gt, pred_a, pred_b, titles)`` draws one row per clip and four columns (frame, ground truth,
prediction A, prediction B), e.g. the baseline vs the full model on T2A, from ``downstream.avs_predictions``;
``figure5(preds, dataset)`` is the chapter's figure in one call.
Builds a ``matplotlib.figure.Figure`` directly (no pyplot state), which Jupyter displays inline.
"""
from __future__ import annotations

import numpy as np

GT_COLOUR = (0.1, 0.8, 0.2)
PRED_COLOUR = (0.95, 0.2, 0.2)


def _array(x, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim < 3:
        raise ValueError(f"{name} must hold one image per row (N, H, W[, C]), got shape {arr.shape}")
    return arr.astype(np.float32)


def overlay(frame: np.ndarray, mask: np.ndarray, colour=PRED_COLOUR, alpha: float = 0.5) -> np.ndarray:
    """An RGB image: ``frame`` ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` in [0, 1] with ``mask > 0.5`` tinted."""
    rgb = frame if frame.ndim == 3 else frame[..., None]
    rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb[..., :3]
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"frame {rgb.shape[:2]} and mask {mask.shape} must have the same height and width")
    tint = (mask > 0.5)[..., None] * alpha
    return np.clip(rgb * (1 - tint) + np.asarray(colour, dtype=np.float32) * tint, 0.0, 1.0)


def overlay_figure(frames, gt, pred_a, pred_b, titles=("frame", "ground truth", "baseline", "Uni-Code"),
                   row_labels=None, size: float = 1.8, key: bool = True):
    """Figure of N rows x 4 columns: frame, GT overlay (green), ``pred_a`` and ``pred_b`` overlays (red).

    ``row_labels`` (one per row, e.g. each clip's query ``'query: "three"'``) are written left of the row;
    ``key`` adds the colour key under the figure.
    """
    from matplotlib.figure import Figure
    frames, gt = _array(frames, "frames"), _array(gt, "gt")
    pred_a, pred_b = _array(pred_a, "pred_a"), _array(pred_b, "pred_b")
    n = frames.shape[0]
    if not (gt.shape[0] == pred_a.shape[0] == pred_b.shape[0] == n) or n == 0:
        raise ValueError(f"frames, gt, pred_a and pred_b need the same N >= 1 rows, got "
                         f"{frames.shape[0]}, {gt.shape[0]}, {pred_a.shape[0]}, {pred_b.shape[0]}")
    if len(titles) != 4:
        raise ValueError(f"titles must name the 4 columns, got {list(titles)}")
    if row_labels is not None and len(row_labels) != n:
        raise ValueError(f"row_labels needs one label per row ({n}), got {len(row_labels)}")
    fig = Figure(figsize=(4 * size, n * size), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False)
    for i in range(n):
        images = (overlay(frames[i], gt[i], colour=(0, 0, 0), alpha=0.0), overlay(frames[i], gt[i], GT_COLOUR),
                  overlay(frames[i], pred_a[i]), overlay(frames[i], pred_b[i]))
        for j, image in enumerate(images):
            ax = axes[i, j]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]), fontsize=9, rotation=0, ha="right", va="center",
                                  labelpad=6)
    if key:
        from matplotlib.patches import Patch

        fig.legend(handles=[Patch(color=GT_COLOUR, label="ground-truth mask"),
                            Patch(color=PRED_COLOUR, label="predicted mask (probability > 0.5)")],
                   loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return fig


def figure5(preds, dataset, direction: str = "T→A", methods: tuple[str, str] = ("baseline", "unicode"),
            names: tuple[str, str] = ("baseline", "Uni-Code")):
    """Fig. 5: :func:`overlay_figure` of two methods' predictions (``preds[method]``: ``frames``, ``masks``,
    ``pred`` and the test clips' ``index``, ``experiments.chapters.table4``) on the same clips of ``dataset`` (the
    AVS test split), each row labelled with its clip's query."""
    first, second = (preds[m] for m in methods)
    queries = [f'query: "{dataset.class_names[int(dataset[int(i)]["label"])]}"' for i in second["index"]]
    return overlay_figure(first["frames"], first["masks"], first["pred"], second["pred"],
                          titles=("frame", "ground truth", *(f"{n} ({direction})" for n in names)), row_labels=queries)
