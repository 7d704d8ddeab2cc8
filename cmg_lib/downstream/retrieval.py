"""Cross-modal X-to-audio retrieval (paper Sec. 5.1, Table 5): task ``retrieval``.

The released code has none (book/differences.md#retrieval-protocol: "done ad hoc, code lost"), so this module defines
the protocol:

* The model is pre-trained on video + text (no audio). Audio enters only downstream, through a *trainable* gallery
  encoder on the raw audio features (``AudioGalleryEncoder``: per-segment MLP, temporal mean, L2 norm).
* Queries are the frozen codes of ``train_modality`` (e.g. text), mean-pooled over T and projected by a trainable
  ``QueryProjector``. Both towers are trained with the symmetric InfoNCE loss (temperature ``temperature``) over the
  in-batch pairs of split ``train`` (query i <-> audio i of the same clip).
* Test: queries = the frozen codes of ``test_modality`` (e.g. video) of split ``test``; gallery = the audio of every
  test clip; query i's match is the audio of clip i (instance level). Metrics: Recall@1/5/10 (%) by cosine
  similarity, plus ``class_R@1`` = % of queries whose top-1 audio has the query's class (where labels exist).
  V2T in Table 5 = train with video queries, test with text ones. No model selection: the last epoch is reported
  under both protocols (there is no released protocol to follow).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Context, TaskOutcome, check_modalities, extract, fit, load_split, percent, resolve_settings
from .heads import AudioGalleryEncoder, QueryProjector
from .metrics import recall_at_k

RETRIEVAL_DEFAULTS = {"epochs": 30, "lr": 1e-3, "batch_size": 128, "grad_clip": None, "milestones": (), "gamma": 1.0,
                      "temperature": 0.07, "embed_dim": 128, "hidden": 256, "min_batch": 2}
GALLERY_MODALITY = "audio"


def info_nce(queries: torch.Tensor, gallery: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of unit embeddings ``(B, E)`` where row i of each side is a positive pair."""
    logits = queries @ gallery.T / temperature
    target = torch.arange(queries.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def run_retrieval(ctx: Context, train_modality: str, test_modality: str, epochs: int | None,
                  options: dict) -> TaskOutcome:
    """Train X->audio retrieval with ``train_modality`` queries on split ``train``; test ``test_modality`` queries
    against the audio of split ``test`` (metrics in %)."""
    for m in (train_modality, test_modality):
        if m == GALLERY_MODALITY:
            raise ValueError(f"task 'retrieval' retrieves {GALLERY_MODALITY!r}; the query modalities must be others "
                             f"(e.g. 'text' and 'video'), got {m!r}")
    check_modalities(ctx, "retrieval", train_modality, test_modality)
    settings = resolve_settings("retrieval", RETRIEVAL_DEFAULTS, epochs, options)
    train_set, test_set = load_split(ctx, "retrieval", "train"), load_split(ctx, "retrieval", "test")
    label = ("label",) if "label" in test_set[0] else ()
    train = extract(ctx, train_set, (train_modality,), (GALLERY_MODALITY,), "retrieval/train")
    test = extract(ctx, test_set, (test_modality,), (GALLERY_MODALITY,) + label, "retrieval/test")
    audio_train = train[GALLERY_MODALITY].float().flatten(2)
    audio_test = test[GALLERY_MODALITY].float().flatten(2)
    if audio_train.shape[-1] != audio_test.shape[-1]:
        raise ValueError(f"train and test audio features differ: {audio_train.shape[-1]} vs {audio_test.shape[-1]}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        towers = nn.ModuleDict({
            "query": QueryProjector(ctx.dim, settings["embed_dim"], settings["hidden"]),
            "audio": AudioGalleryEncoder(audio_train.shape[-1], settings["embed_dim"], settings["hidden"])})
    codes = train[f"codes/{train_modality}"]

    if codes.shape[0] < settings["min_batch"] or settings["min_batch"] < 2:
        raise ValueError(f"retrieval needs batches of >= 2 pairs (min_batch >= 2, got {settings['min_batch']}) "
                         f"and at least min_batch training clips, got {codes.shape[0]}")

    def loss_on(idx):           # a last batch below min_batch (no negative) is skipped by fit
        return info_nce(towers["query"](codes[idx]), towers["audio"](audio_train[idx]), settings["temperature"])

    def evaluate():
        sim = towers["query"](test[f"codes/{test_modality}"]) @ towers["audio"](audio_test).T
        scores = recall_at_k(sim, ks=(1, 5, 10))
        if "label" in test:
            labels = test["label"].long()
            scores["class_R@1"] = (labels[sim.argmax(dim=1)] == labels).float().mean().item()
        return {"test": scores}

    best, history, state = fit(towers, loss_on, codes.shape[0], evaluate, settings, ctx.seed, None, ctx.progress,
                               f"retrieval {train_modality}->audio")
    towers.load_state_dict(state)
    return TaskOutcome(percent(history[best - 1]["test"]), best, len(train_set), len(test_set),
                       {**settings, "gallery": GALLERY_MODALITY}, history, towers)
