"""Cross-modal event localisation (paper Sec. 5.1, Tables 1-3): ``avvp`` and ``ave_avvp``.

A per-segment ``SegmentClassifier`` (released ``Semantic_Decoder_AVVP``, C+1 outputs with background) is trained on one
modality's frozen codes and segment labels with ``BCEWithLogits + ExpLogLoss`` (book/differences.md#downstream-protocol)
and evaluated on another modality's codes against *that* modality's segment labels. Metric: the released micro precision
/ recall at sigmoid > 0.5 over every cell including background, batches of 80, F1 from the averages
(``metrics.localisation_scores``). The paper reports the precision as AVVP "accuracy" and the F1 for AVE->AVVP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.schema import segment_key
from .common import Context, TaskOutcome, check_modalities, extract, fit, load_split, percent, resolve_settings
from .heads import ExpLogLoss, SegmentClassifier
from .metrics import localisation_scores

LOCALISE_DEFAULTS = {"epochs": 50, "lr": 4e-4, "batch_size": 80, "grad_clip": 0.5, "milestones": (10, 20, 30),
                     "gamma": 0.5, "alpha0": 0.1, "threshold": 0.5, "eval_batch_size": 80}


def _localise(ctx: Context, task: str, train: dict, train_modality: str, evaluations: dict[str, tuple[dict, str]],
              select: tuple[str, str] | None, settings: dict):
    """Fit SegmentClassifier + ExpLogLoss alphas on ``train``; score each (store, modality) of ``evaluations``."""
    key = segment_key(train_modality)
    codes, targets = train[f"codes/{train_modality}"], train[key].float()
    outputs = targets.shape[-1]
    for name, (store, m) in evaluations.items():
        if store[segment_key(m)].shape[-1] != outputs:
            raise ValueError(f"{task}: training labels have {outputs} columns (C+1) but the {name} labels of "
                             f"{m!r} have {store[segment_key(m)].shape[-1]}; the class lists must match")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        trainable = nn.ModuleDict({"head": SegmentClassifier(ctx.dim, outputs),
                                   "explog": ExpLogLoss(outputs, settings["alpha0"])})
    head, explog = trainable["head"], trainable["explog"]

    def loss_on(idx):
        logits, y = head(codes[idx]), targets[idx]
        return F.binary_cross_entropy_with_logits(logits, y) + explog(logits, y)

    def evaluate():
        out = {}
        for name, (store, m) in evaluations.items():
            scores = localisation_scores(head(store[f"codes/{m}"]), store[segment_key(m)].float(),
                                         settings["eval_batch_size"], settings["threshold"])
            out[name] = {"accuracy": scores["precision"], **scores}
        return out

    best, history, state = fit(trainable, loss_on, codes.shape[0], evaluate, settings, ctx.seed, select,
                               ctx.progress, f"{task} {train_modality}->head")
    trainable.load_state_dict(state)
    return best, history, head, outputs


def run_avvp(ctx: Context, train_modality: str, test_modality: str, epochs: int | None, options: dict) -> TaskOutcome:
    """AVVP: train on split ``train`` (``train_modality`` codes and segment labels); test on ``test_modality``.

    heldout: reported on split ``test`` at the last epoch. released: evaluated on the training clips with the other
    modality's codes and labels (the released audio/visual csvs cover the same videos), best epoch by precision.
    """
    check_modalities(ctx, "avvp", train_modality, test_modality)
    settings = resolve_settings("avvp", LOCALISE_DEFAULTS, epochs, options)
    train_set = load_split(ctx, "avvp", "train")
    labels = tuple(dict.fromkeys((segment_key(train_modality), segment_key(test_modality))))
    if ctx.protocol == "released":
        train = extract(ctx, train_set, tuple(dict.fromkeys((train_modality, test_modality))), labels, "avvp/train")
        test, n_test, select = train, len(train_set), ("test", "precision")
    else:
        train = extract(ctx, train_set, (train_modality,), (segment_key(train_modality),), "avvp/train")
        test_set = load_split(ctx, "avvp", "test")
        test = extract(ctx, test_set, (test_modality,), (segment_key(test_modality),), "avvp/test")
        n_test, select = len(test_set), None
    best, history, head, outputs = _localise(ctx, "avvp", train, train_modality, {"test": (test, test_modality)},
                                             select, settings)
    return TaskOutcome(percent(history[best - 1]["test"]), best, len(train_set), n_test,
                       {**settings, "num_classes": outputs - 1}, history, head)


def run_ave_avvp(ctx: Context, train_modality: str, test_modality: str, epochs: int | None,
                 options: dict) -> TaskOutcome:
    """AVE -> AVVP (cross dataset + cross modal): train the per-segment head on subset ``ave_avvp`` split ``train``
    (the AVE side, ``train_modality``), test localisation on split ``test`` (the AVVP side, ``test_modality``).
    Reported metric: F1. heldout: last epoch; released: best test F1 (``ave_avvp.py:421-424``)."""
    check_modalities(ctx, "ave_avvp", train_modality, test_modality)
    settings = resolve_settings("ave_avvp", LOCALISE_DEFAULTS, epochs, options)
    train_set, test_set = load_split(ctx, "ave_avvp", "train"), load_split(ctx, "ave_avvp", "test")
    train = extract(ctx, train_set, (train_modality,), (segment_key(train_modality),), "ave_avvp/train")
    test = extract(ctx, test_set, (test_modality,), (segment_key(test_modality),), "ave_avvp/test")
    select = ("test", "f1") if ctx.protocol == "released" else None
    best, history, head, outputs = _localise(ctx, "ave_avvp", train, train_modality, {"test": (test, test_modality)},
                                             select, settings)
    return TaskOutcome(percent(history[best - 1]["test"]), best, len(train_set), len(test_set),
                       {**settings, "num_classes": outputs - 1}, history, head)
