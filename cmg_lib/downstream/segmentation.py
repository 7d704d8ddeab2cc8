"""Cross-modal query-based segmentation, AVS-S4 (paper Sec. 5.1, Table 4, Fig. 5): task ``avs``.

A2T = train with audio queries, test with text queries; T2A the reverse. The released code plugs the codes into
AVSBench's PVT-v2-b5 model (ImageNet weights, TPAVI blocks; book/differences.md#avs-protocol). Without those weights
this module trains a small ``QuerySegmenter`` (heads.py) from scratch: the pooled frozen codes of the query modulate
(FiLM) and score (dot product) coarse visual features computed from the frames plus, where the split has one, the frozen
visual feature grid of each frame (``video`` ``(F, h, w, G)``, option ``use_grid``) -- the stand-in for the pretrained
backbone. The head works at half resolution on space-to-depth folded frames and predicts sub-pixel logits (``factor=2``,
see ``QuerySegmenter``), resized to the mask size.

Loss = BCE over every annotated training frame (``train_frames="all"``, default; the official S4 train split
annotates only each clip's first frame, so there this is the released first-frame BCE); ``"first"`` forces the
released first-frame-only loss on AV-Digits too (5x less data: it does not learn the task in a few epochs). Metrics: AVSBench mIoU and F-score (beta^2 = 0.3, 255
thresholds), per batch of 4 clips, mean over batches, on every annotated test frame.

Frames are area-downsampled to at most ``size`` pixels per side (AVS official frames are 224 px); masks stay at full
resolution. Epoch selection on split ``val``: heldout scores it with the *training* modality's queries; released
with the *test* modality's (``train_ta.py`` validates on audio). Released trains 1 epoch at lr 1e-4 on a pretrained
backbone; a head from scratch needs more: default 6 epochs at 3e-3, batch 16 frames (one run on AV-Digits' default
scale: ~11 s on a 2-core AVX-512 CPU, of which ~1.3 s are the frozen-code extraction; the full-resolution head
before it took 20 s there and 45-55 s on an older 2-core machine).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset

from .common import Context, TaskOutcome, check_modalities, extract, fit, load_split, percent, resolve_settings
from .heads import QuerySegmenter
from .metrics import f_measure, mask_iou

AVS_DEFAULTS = {"epochs": 6, "lr": 3e-3, "batch_size": 16, "grad_clip": None, "milestones": (), "gamma": 1.0,
                "width": 16, "size": 64, "eval_batch_size": 4, "train_frames": "all", "use_grid": True, "factor": 2}


def _frame_reducer(mask_frames: int, size: int):
    """``(B, F, H, W, C)`` frames -> the first ``mask_frames`` frames as ``(B, Fm, C, h, w)``, area-downsampled so
    that the longer side is at most ``size``."""
    def reduce(frames: Tensor) -> Tensor:
        if frames.dim() != 5:
            raise ValueError(f"AVS frames must be (B, F, H, W, C), got {tuple(frames.shape)}")
        b, _, h, w, c = frames.shape
        x = frames[:, :mask_frames].float().permute(0, 1, 4, 2, 3).reshape(-1, c, h, w)
        scale = min(1.0, size / max(h, w))
        if scale < 1.0:
            x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
        return x.reshape(b, mask_frames, c, *x.shape[-2:])
    return reduce


def _grid_reducer(mask_frames: int):
    """``(B, T, h, w, G)`` visual feature grids -> those of the first ``mask_frames`` frames as ``(B, Fm, G, h, w)``."""
    def reduce(video: Tensor) -> Tensor:
        return video[:, :mask_frames].float().permute(0, 1, 4, 2, 3).contiguous()
    return reduce


def has_grid(item: dict) -> bool:
    """Whether an AVS item carries a per-frame visual feature grid ``video`` ``(F >= masks, h, w, G)``."""
    video = item.get("video")
    return video is not None and video.dim() == 4 and video.shape[0] >= item["mask"].shape[0]


def avs_store(ctx: Context, dataset: Dataset, modalities: tuple[str, ...], where: str, size: int,
              use_grid: bool = False) -> dict:
    """Frozen query codes, reduced frames ``(N, Fm, C, h, w)``, uint8 masks ``(N, Fm, H, W)`` and, with
    ``use_grid``, the visual grids ``grid`` ``(N, Fm, G, h', w')`` of one split."""
    first = dataset[0]
    if "mask" not in first or "frames" not in first:
        raise ValueError(f"{where} lacks 'frames'/'mask'; task 'avs' needs subset 'avs' (has {sorted(first)})")
    mask_frames = int(first["mask"].shape[0])
    if first["frames"].shape[0] < mask_frames:
        raise ValueError(f"{where}: {first['frames'].shape[0]} frames but {mask_frames} masks; need a frame per mask")
    reduce = {"frames": _frame_reducer(mask_frames, size), "mask": lambda m: (m > 0.5).to(torch.uint8)}
    keys = ("frames", "mask")
    if use_grid:
        if not has_grid(first):
            raise ValueError(f"{where} has no per-frame visual grid 'video' (F, h, w, G); pass use_grid=False")
        reduce["video"], keys = _grid_reducer(mask_frames), keys + ("video",)
    store = extract(ctx, dataset, modalities, keys, where, reduce=reduce, tag=f"size={size},grid={use_grid}")
    if use_grid:
        store["grid"] = store.pop("video")
    return store


def segment(head: QuerySegmenter, store: dict, modality: str, clips: Tensor) -> Tensor:
    """Mask logits ``(len(clips), Fm, H, W)`` of the given clips, conditioned on their ``modality`` query codes."""
    frames = store["frames"][clips]                                   # (n, Fm, C, h, w)
    n, fm = frames.shape[:2]
    codes = store[f"codes/{modality}"][clips].repeat_interleave(fm, dim=0)
    grid = store["grid"][clips].flatten(0, 1) if "grid" in store else None
    logits = head(frames.flatten(0, 1), codes, tuple(store["mask"].shape[-2:]), grid)
    return logits.view(n, fm, *logits.shape[-2:])


def score(head: QuerySegmenter, store: dict, modality: str, batch_size: int) -> dict[str, float]:
    """AVSBench mIoU and F-score of a whole split: metric per batch of ``batch_size`` clips, mean over batches."""
    n, ious, fs = store["mask"].shape[0], [], []
    chunk = batch_size * 16
    for start in range(0, n, chunk):
        clips = torch.arange(start, min(start + chunk, n))
        logits, masks = segment(head, store, modality, clips), store["mask"][clips].float()
        for b in range(0, len(clips), batch_size):
            lb, mb = logits[b:b + batch_size].flatten(0, 1), masks[b:b + batch_size].flatten(0, 1)
            ious.append(mask_iou(lb, mb))
            fs.append(f_measure(lb, mb))
    return {"miou": sum(ious) / len(ious), "f_score": sum(fs) / len(fs)}


def run_avs(ctx: Context, train_modality: str, test_modality: str, epochs: int | None, options: dict) -> TaskOutcome:
    """Train the query-conditioned head on split ``train`` with ``train_modality`` queries; choose the epoch on
    ``val``; report mIoU and F-score on ``test`` with ``test_modality`` queries (in %)."""
    check_modalities(ctx, "avs", train_modality, test_modality)
    settings = resolve_settings("avs", AVS_DEFAULTS, epochs, options)
    if settings["train_frames"] not in ("first", "all"):
        raise ValueError(f"train_frames must be 'first' (released: BCE on each clip's first frame) or 'all', "
                         f"got {settings['train_frames']!r}")
    size = int(settings["size"])
    val_modality = test_modality if ctx.protocol == "released" else train_modality
    train_set, val_set, test_set = (load_split(ctx, "avs", s) for s in ("train", "val", "test"))
    grid = bool(settings["use_grid"]) and has_grid(train_set[0])
    train = avs_store(ctx, train_set, (train_modality,), "avs/train", size, grid)
    val = avs_store(ctx, val_set, (val_modality,), "avs/val", size, grid)
    test = avs_store(ctx, test_set, (test_modality,), "avs/test", size, grid)
    if settings["train_frames"] == "first":
        train = {k: (v[:, :1] if k in ("frames", "mask", "grid") else v) for k, v in train.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        head = QuerySegmenter(ctx.dim, train["frames"].shape[2], int(settings["width"]),
                              train["grid"].shape[2] if grid else 0, int(settings["factor"]))
    fm = train["mask"].shape[1]
    codes, frames, masks = train[f"codes/{train_modality}"], train["frames"].flatten(0, 1), train["mask"].flatten(0, 1)
    grids = train["grid"].flatten(0, 1) if grid else None
    out_size = tuple(masks.shape[-2:])

    def loss_on(frame_idx):
        logits = head(frames[frame_idx], codes[frame_idx // fm], out_size,
                      None if grids is None else grids[frame_idx])
        return F.binary_cross_entropy_with_logits(logits, masks[frame_idx].float())

    def evaluate():
        return {"val": score(head, val, val_modality, settings["eval_batch_size"])}

    best, history, state = fit(head, loss_on, frames.shape[0], evaluate, settings, ctx.seed, ("val", "miou"),
                               ctx.progress, f"avs {train_modality}->head")
    head.load_state_dict(state)
    head.eval()
    with torch.no_grad():
        metrics = score(head, test, test_modality, settings["eval_batch_size"])
    return TaskOutcome(percent(metrics), best, len(train_set), len(test_set),
                       {**settings, "val_modality": val_modality, "grid": grid}, history, head)


def predict_masks(ctx: Context, head: QuerySegmenter, dataset: Dataset, modality: str, indices: list[int],
                  size: int, use_grid: bool) -> dict[str, Tensor]:
    """Frames, masks and predicted masks of the first annotated frame of the clips ``indices`` (for Fig. 5)."""
    store = avs_store(ctx, Subset(dataset, indices), (modality,), "avs predictions", size, use_grid)
    head.eval()
    with torch.no_grad():
        logits = segment(head, store, modality, torch.arange(len(indices)))[:, 0]
    items = [dataset[i] for i in indices]
    prob = torch.sigmoid(logits)
    return {"frames": torch.stack([it["frames"][0] for it in items]).float(),
            "masks": torch.stack([it["mask"][0] for it in items]).float(),
            "prob": prob, "pred": prob > 0.5, "index": torch.tensor(indices)}
