"""Cross-modal event classification (paper Sec. 5.1, Tables 1-3): ``ave`` and ``ucf_vgg``.

A ``ClipClassifier`` (released ``Semantic_Decoder``) is trained with cross-entropy on the frozen codes of one modality
and evaluated on the codes of another; metric = clip top-1 accuracy (the paper's AVE "precision",
``compute_accuracy_supervised``, book/differences.md#downstream-protocol). Released recipe: Adam 4e-4, MultiStepLR([10,
20, 30], 0.5), grad-clip 0.5, batch 80; 30 epochs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from ..data.schema import segment_key
from .common import (Context, TaskOutcome, check_modalities, clip_targets, extract, fit, load_split, percent,
                     resolve_settings)
from .heads import ClipClassifier
from .metrics import clip_accuracy

CLASSIFY_DEFAULTS = {"epochs": 30, "lr": 4e-4, "batch_size": 80, "grad_clip": 0.5, "milestones": (10, 20, 30),
                     "gamma": 0.5, "holdout_fraction": 0.2}
UCF_VGG_SPLITS = {"audio": "vggsound", "video": "ucf"}   # which split carries each modality (released CSVs)


def _label_keys(dataset: Dataset, *modalities: str) -> tuple[str, ...]:
    """``label`` where the split has clip labels, else the segment labels of ``modalities`` (class derived later)."""
    return ("label",) if "label" in dataset[0] else tuple(dict.fromkeys(segment_key(m) for m in modalities))


def _num_classes(dataset: Dataset, store: dict, modality: str) -> int:
    if getattr(dataset, "num_classes", None):
        return int(dataset.num_classes)
    if segment_key(modality) in store:
        return int(store[segment_key(modality)].shape[-1] - 1)
    raise ValueError("the dataset has no num_classes attribute and no segment labels to infer it from")


def _train_classifier(ctx: Context, task: str, train: dict, train_modality: str, num_classes: int,
                      evaluations: dict[str, tuple[dict, str]], select: tuple[str, str] | None,
                      settings: dict) -> tuple[int, list, dict]:
    """Fit a ClipClassifier on ``train`` codes of ``train_modality``; ``evaluations`` maps a name to
    (store, modality) scored by accuracy after every epoch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        head = ClipClassifier(ctx.dim, num_classes)
    codes, targets = train[f"codes/{train_modality}"], clip_targets(train, train_modality)
    if int(targets.max()) >= num_classes or int(targets.min()) < 0:
        raise ValueError(f"clip labels must lie in [0, {num_classes}), got [{int(targets.min())}, {int(targets.max())}]")

    def loss_on(idx):
        return F.cross_entropy(head(codes[idx]), targets[idx])

    def evaluate():
        return {name: {"accuracy": clip_accuracy(head(store[f"codes/{m}"]), clip_targets(store, m))}
                for name, (store, m) in evaluations.items()}

    best, history, state = fit(head, loss_on, codes.shape[0], evaluate, settings, ctx.seed, select, ctx.progress,
                               f"{task} {train_modality}->head")
    head.load_state_dict(state)
    return best, history, head


def run_ave(ctx: Context, train_modality: str, test_modality: str, epochs: int | None, options: dict) -> TaskOutcome:
    """AVE-style classification: train on split ``train`` with ``train_modality`` codes; test ``test_modality``.

    heldout: epoch chosen on split ``val`` (train modality), reported on split ``test``. released: evaluated on the
    training clips themselves with the test modality's codes, best epoch on that number (``ave.py:135``).
    """
    check_modalities(ctx, "ave", train_modality, test_modality)
    settings = resolve_settings("ave", {k: v for k, v in CLASSIFY_DEFAULTS.items() if k != "holdout_fraction"},
                                epochs, options)
    train_set = load_split(ctx, "ave", "train")
    both = tuple(dict.fromkeys((train_modality, test_modality)))
    if ctx.protocol == "released":
        train = extract(ctx, train_set, both, _label_keys(train_set, *both), "ave/train")
        evaluations = {"train": (train, train_modality), "test": (train, test_modality)}
        select, n_test = ("test", "accuracy"), train[f"codes/{test_modality}"].shape[0]
    else:
        train = extract(ctx, train_set, (train_modality,), _label_keys(train_set, train_modality), "ave/train")
        val_set, test_set = load_split(ctx, "ave", "val"), load_split(ctx, "ave", "test")
        val = extract(ctx, val_set, (train_modality,), _label_keys(val_set, train_modality), "ave/val")
        test = extract(ctx, test_set, (test_modality,), _label_keys(test_set, test_modality), "ave/test")
        evaluations = {"val": (val, train_modality), "test": (test, test_modality)}
        select, n_test = ("val", "accuracy"), len(test_set)
    num_classes = _num_classes(train_set, train, train_modality)
    best, history, head = _train_classifier(ctx, "ave", train, train_modality, num_classes, evaluations, select,
                                            settings)
    return TaskOutcome(percent(history[best - 1]["test"]), best, len(train_set), n_test,
                       {**settings, "num_classes": num_classes}, history, head)


def _holdout(dataset: Dataset, fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """Split off a seeded ``fraction`` of the clips for testing (fixed seed: the same test clips for every run)."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {fraction}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, int(round(fraction * len(dataset))))
    if n_test >= len(dataset):
        raise ValueError(f"split of {len(dataset)} clips is too small to hold out {fraction:.0%} for testing")
    train, test = Subset(dataset, order[n_test:]), Subset(dataset, order[:n_test])
    for part in (train, test):
        part.num_classes = getattr(dataset, "num_classes", None)
    return train, test


def run_ucf_vgg(ctx: Context, train_modality: str, test_modality: str, epochs: int | None,
                options: dict) -> TaskOutcome:
    """Cross-dataset + cross-modal classification (UCF-101 <-> VGGSound-AVEL, 16 classes;
    book/differences.md#downstream-protocol).

    Audio lives in split ``vggsound``, video in split ``ucf``: train on the whole split of ``train_modality``, test on
    the whole split of ``test_modality``. With train == test modality (the labeled-modality upper bound) a seeded
    ``holdout_fraction`` of that split is held out for testing (the same clips whatever the run's seed). heldout: last epoch; released: best test epoch.
    """
    for m in (train_modality, test_modality):
        if m not in UCF_VGG_SPLITS:
            raise ValueError(f"task 'ucf_vgg' pairs {sorted(UCF_VGG_SPLITS)} (split {UCF_VGG_SPLITS}); got {m!r}")
    check_modalities(ctx, "ucf_vgg", train_modality, test_modality)
    settings = resolve_settings("ucf_vgg", CLASSIFY_DEFAULTS, epochs, options)
    train_split, test_split = UCF_VGG_SPLITS[train_modality], UCF_VGG_SPLITS[test_modality]
    train_set = load_split(ctx, "ucf_vgg", train_split)
    if train_split == test_split:
        train_set, test_set = _holdout(train_set, settings["holdout_fraction"])
    else:
        test_set = load_split(ctx, "ucf_vgg", test_split)
    train = extract(ctx, train_set, (train_modality,), _label_keys(train_set, train_modality), f"ucf_vgg/{train_split}")
    test = extract(ctx, test_set, (test_modality,), _label_keys(test_set, test_modality), f"ucf_vgg/{test_split}")
    num_classes = _num_classes(train_set, train, train_modality)
    test_classes = _num_classes(test_set, test, test_modality)
    if test_classes != num_classes:
        raise ValueError(f"split {train_split!r} has {num_classes} classes but {test_split!r} has {test_classes}; "
                         "the two class lists must be aligned")
    select = ("test", "accuracy") if ctx.protocol == "released" else None
    best, history, head = _train_classifier(ctx, "ucf_vgg", train, train_modality, num_classes,
                                            {"test": (test, test_modality)}, select, settings)
    return TaskOutcome(percent(history[best - 1]["test"]), best, len(train_set), len(test_set),
                       {**settings, "num_classes": num_classes, "train_split": train_split,
                        "test_split": test_split}, history, head)
