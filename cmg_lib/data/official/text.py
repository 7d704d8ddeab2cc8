"""Text for the official data: precomputed BERT token embeddings of each class prompt.

The released code embeds the class prompt inside its DataLoader collate with the ``bert-embedding`` package (BERT-base
uncased, last layer, ``##`` word-pieces averaged into whole words, [CLS]/[SEP] removed), keeps the tokens whose
vocabulary id is in ``cnt.pkl``, then zero-pads or truncates to 10 slots (book/differences.md#text-modality,
``pretrain.py:
97-139``). No BERT can be fetched at run time here, so the user makes the per-prompt token arrays once (recipe in
``book/official_data.md``) and this module only reads them:

* ``text_embeddings/<stem>.npy``: one array ``(n_tokens, 768)`` per class, ``<stem> = embedding_stem(category)``; or
* one ``text_embeddings/*.h5`` with a dataset per class, named by the category string or by its stem.

Because the prompt is a deterministic function of the class, so is the text feature; rows with the same class share it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .files import check_finite, check_shape, open_h5, read_table, require_dir

TEXT_SLOTS = 10
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def embedding_stem(category: str) -> str:
    """The file stem for a category: runs of characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``.

    >>> embedding_stem("playing acoustic guitar")
    'playing_acoustic_guitar'
    >>> embedding_stem("male speech, man speaking")
    'male_speech_man_speaking'
    """
    stem = _UNSAFE.sub("_", category.strip()).strip("_")
    if not stem:
        raise ValueError(f"category {category!r} has no usable characters for a file name")
    return stem


def fit_tokens(tokens: np.ndarray, slots: int = TEXT_SLOTS) -> np.ndarray:
    """Zero-pad or truncate ``(n_tokens, F)`` to ``(slots, F)`` float32, as the released collate (no mask kept)."""
    out = np.zeros((slots, tokens.shape[1]), dtype=np.float32)
    n = min(slots, tokens.shape[0])
    out[:n] = tokens[:n]
    return out


def read_prompts(path: Path) -> dict[str, str]:
    """Category -> prompt from a ``*Categories2Prompts.csv`` (column ``label``, prompt in the second column)."""
    header, rows = read_table(path, "a csv with column 'label' and the prompt sentence in the second column", ["label"])
    j = header.index("label")
    if len(header) < 2:
        raise ValueError(f"{path}: expected at least 2 columns (label, prompt), found {header}")
    prompts: dict[str, str] = {}
    for r in rows:
        if len(r) >= 2:
            prompts.setdefault(r[j].strip(), r[1].strip())  # released lookup takes the first matching row
    return prompts


class TokenEmbeddings:
    """Reads per-category token embeddings from ``folder`` and returns them fitted to ``(10, dim)`` float32."""

    def __init__(self, folder: Path, dim: int | None = 768, slots: int = TEXT_SLOTS):
        self.folder = require_dir(
            Path(folder), "precomputed BERT token embeddings of the class prompts: one <category>.npy of shape "
            "(n_tokens, 768) per class, or one .h5 with a dataset per class (see book/official_data.md)")
        self.dim, self.slots = dim, slots
        h5_files = sorted(self.folder.glob("*.h5"))
        if len(h5_files) > 1:
            raise ValueError(f"{self.folder}: found {len(h5_files)} .h5 files {[p.name for p in h5_files]}; "
                             "expected at most one (a dataset per category)")
        self.h5_path = h5_files[0] if h5_files else None
        self._cache: dict[str, np.ndarray] = {}

    def check(self, categories) -> None:
        """Fail early (FileNotFoundError) if any category has no embedding; also validates every shape."""
        for c in sorted(set(categories)):
            self(c)

    def __call__(self, category: str) -> np.ndarray:
        if category not in self._cache:
            self._cache[category] = fit_tokens(self._load(category), self.slots)
        return self._cache[category]

    def _load(self, category: str) -> np.ndarray:
        stem = embedding_stem(category)
        npy = self.folder / f"{stem}.npy"
        if npy.is_file():
            try:
                tokens = np.load(npy, allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise ValueError(f"{npy}: not a readable .npy array ({str(err)[:160]}); expected token embeddings "
                                 f"(n_tokens, {self.dim or 'F'})") from None
            source, key = str(npy), "array"
        elif self.h5_path is not None:
            with open_h5(self.h5_path, "token embeddings, a dataset per category") as f:
                key = category if category in f and "/" not in category else stem
                if key not in f:
                    raise FileNotFoundError(
                        f"no token embedding for category {category!r}: expected {npy} or a dataset named "
                        f"{category!r} or {stem!r} in {self.h5_path}")
                tokens = np.asarray(f[key][()])
            source, key = str(self.h5_path), f"dataset {key!r}"
        else:
            raise FileNotFoundError(f"no token embedding for category {category!r}: expected {npy} holding an array "
                                    f"(n_tokens, {self.dim or 'F'}) of BERT token embeddings of its prompt")
        check_shape(tokens.shape, (None, self.dim), source, key)
        check_finite(tokens, f"{source}: {key}")
        return tokens.astype(np.float32, copy=False)
