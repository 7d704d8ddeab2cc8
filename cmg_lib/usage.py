"""Code-usage statistics, one implementation for the codebook, the training monitor, the figures and the tables.

* :func:`histograms` counts code indices per modality; :func:`perplexity` is ``exp(entropy)`` of a usage
  histogram (0 for an empty one); :func:`shared_fraction` the share of used codes that every modality used;
  :func:`mode_agreement` counts the clips whose most frequent code is the same in every modality (released
  ``equal_num``, book/differences.md#reset-rule's bookkeeping).
* :class:`CodeCounts` holds a batch's histograms and mode agreement, computed once by the codebook and added up
  over a logging window by the training monitor; :meth:`CodeCounts.health` is the one place their measures are
  named (``perplexity/<m>``, ``active_codes/<m>``, ``shared_fraction``, ``mode_agreement``).
* :func:`usage_summary`, :func:`code_categories` and :func:`category_fractions` describe ``{modality: counts}``
  mappings for the figures; the Fig. 4 colour rule (paper caption): a code belongs to ``pair[0]`` when that
  modality makes up more than 80 % of the pair's quantisations that picked it, to ``pair[1]`` likewise, is
  ``"shared"`` when each accounts for at least 20 %, and ``"unused"`` when neither picked it.
* :func:`code_usage` runs a frozen model over a dataset and counts codes per clip class.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

DOMINANCE = 0.8          # Fig. 4: more than 80 % from one modality -> that modality's colour


def histograms(indices: Tensor, codebook_size: int) -> Tensor:
    """Per-row code counts: ``indices`` ``(M, ...)`` long -> ``(M, codebook_size)`` float64 counts."""
    flat = indices.reshape(indices.shape[0], -1).long()
    offsets = torch.arange(flat.shape[0], device=flat.device)[:, None] * codebook_size
    counts = torch.bincount((flat + offsets).reshape(-1), minlength=flat.shape[0] * codebook_size)
    return counts.view(flat.shape[0], codebook_size).double()


def perplexity(counts: Tensor | np.ndarray) -> Tensor:
    """``exp(H(p))`` of each row's normalised counts (last axis); 0 for a row without any count."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    total = counts.sum(-1, keepdim=True)
    p = counts / total.clamp_min(1e-300)
    value = torch.exp(-torch.special.xlogy(p, p).sum(-1))
    return torch.where(total.squeeze(-1) > 0, value, torch.zeros_like(value))


def shared_fraction(counts: Tensor) -> float:
    """Codes used by every row of ``counts`` ``(M, L)`` over codes used by any row (0 when none is used)."""
    used = torch.as_tensor(counts) > 0
    return float(used.all(0).sum() / used.any(0).sum().clamp_min(1))


def mode_agreement(indices: Tensor, codebook_size: int) -> tuple[int, int]:
    """``(clips whose most frequent code, lowest index on ties, is the same in every modality, clips)`` for
    ``indices`` ``(M, B, T)``."""
    idx = indices.long()
    per_clip = torch.zeros(*idx.shape[:2], codebook_size, device=idx.device)
    per_clip.scatter_add_(2, idx, torch.ones(idx.shape, device=idx.device))
    modes = per_clip.argmax(-1)                                               # (M, B)
    return int((modes == modes[:1]).all(0).sum()), int(modes.shape[1])


@dataclass
class CodeCounts:
    """How one or more batches used the codebook: ``counts (M, L)`` float64 code histograms, one row per modality,
    and ``agreeing`` of the ``samples`` clips picked the same most frequent code in every modality. One batch's
    (:meth:`of`) add up over a window with ``+``."""

    counts: Tensor
    agreeing: float = 0.0
    samples: float = 0.0

    @classmethod
    def of(cls, indices: Tensor, codebook_size: int) -> "CodeCounts":
        """The counts of one batch's indices ``(M, B, T)``."""
        agreeing, samples = mode_agreement(indices, codebook_size)
        return cls(histograms(indices, codebook_size), float(agreeing), float(samples))

    def __add__(self, other: "CodeCounts") -> "CodeCounts":
        return CodeCounts(self.counts + other.counts.to(self.counts.device), self.agreeing + other.agreeing,
                          self.samples + other.samples)

    def health(self, names: Sequence[str]) -> dict[str, float]:
        """Per modality ``perplexity/<m>`` (:func:`perplexity`) and ``active_codes/<m>`` (codes it used); then
        ``shared_fraction`` (:func:`shared_fraction`) and ``mode_agreement`` (the share of agreeing clips)."""
        if len(names) != self.counts.shape[0]:
            raise ValueError(f"CodeCounts has {self.counts.shape[0]} modalities, got names {list(names)}")
        out: dict[str, float] = {}
        for m, ppl, used in zip(names, perplexity(self.counts).tolist(), (self.counts > 0).sum(1).tolist()):
            out[f"perplexity/{m}"] = ppl
            out[f"active_codes/{m}"] = int(used)
        out["shared_fraction"] = shared_fraction(self.counts)
        out["mode_agreement"] = self.agreeing / max(self.samples, 1.0)
        return out


# ------------------------------------------------------------------------------------------------ {modality: counts}

def usage_summary(counts: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per modality: number of codes used, perplexity ``exp(H)`` of the usage distribution, top-code share."""
    out = {}
    for m, c in counts.items():
        c = np.asarray(c, dtype=np.float64)
        total = c.sum()
        out[m] = {"used": int((c > 0).sum()), "perplexity": float(perplexity(c)),
                  "top_share": float(c.max() / total) if total > 0 else 0.0}
    return out


def code_categories(counts: Mapping[str, np.ndarray], pair: tuple[str, str] = ("video", "audio")) -> np.ndarray:
    """Fig. 4 category of every code from the usage counts of a modality pair ``(first, second)``: ``pair[0]``,
    ``pair[1]``, ``"shared"`` or ``"unused"`` (see the module docstring)."""
    first, second = pair
    if first not in counts or second not in counts:
        raise ValueError(f"code_categories needs counts for {pair}, got modalities {list(counts)}")
    a = np.asarray(counts[first], dtype=np.float64)
    b = np.asarray(counts[second], dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"counts must be 1-D arrays of equal length, got {a.shape} and {b.shape}")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("usage counts must be non-negative")
    total = a + b
    share = np.divide(a, total, out=np.zeros_like(a), where=total > 0)
    cats = np.full(a.shape, "shared", dtype=object)
    cats[share > DOMINANCE] = first
    cats[(total > 0) & (share < 1 - DOMINANCE)] = second
    cats[total == 0] = "unused"
    return cats


def category_fractions(counts: Mapping[str, np.ndarray], pair: tuple[str, str] = ("video", "audio")) -> dict:
    """Fraction of the *used* codes in each Fig. 4 category (the quantity the paper's caption talks about)."""
    cats = code_categories(counts, pair)
    used = cats != "unused"
    n = max(int(used.sum()), 1)
    return {c: float((cats == c).sum() / n) for c in (pair[0], pair[1], "shared")} | {"used": int(used.sum())}


# ------------------------------------------------------------------------------------------------ a model over data

def code_usage(model, dataset, modalities: Sequence[str] | None = None, batch_size: int = 128,
               label_key: str = "label") -> dict[Any, dict[str, np.ndarray]]:
    """Per-class code-usage counts: ``{class | "all": {modality: counts (L,)}}`` from ``model.quantize``.

    Runs the frozen encoder over ``dataset`` (items are batch dicts, see ``cmg_lib.data.schema``) and counts, per
    clip class, how often each modality's segments pick each code (one ``bincount`` over (class, code) pairs per
    batch). The explorer (``cmg_lib.viz.explorer``) and the Fig. 4 code maps take this structure.
    """
    mods = list(modalities or model.config.model.modality_names)
    size = int(model.config.model.codebook_size)
    counts: dict[Any, dict[str, np.ndarray]] = {"all": {m: np.zeros(size, dtype=np.int64) for m in mods}}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            labels = batch[label_key].numpy() if label_key in batch else None
            for m in mods:
                idx = model.quantize(batch[m].to(device), m)[0].cpu().numpy()      # (B, T)
                counts["all"][m] += np.bincount(idx.ravel(), minlength=size)
                if labels is None:
                    continue
                classes = np.repeat(labels, idx.shape[1])                          # class c, code k -> c * L + k
                uniq = np.unique(labels)
                for c in uniq.tolist():
                    counts.setdefault(int(c), {mm: np.zeros(size, dtype=np.int64) for mm in mods})
                flat = np.bincount(classes * size + idx.ravel(), minlength=(int(uniq.max()) + 1) * size)
                flat = flat.reshape(-1, size)
                for c in uniq.tolist():
                    counts[int(c)][m] += flat[c]
    model.train(was_training)
    return counts


def aligned_code_agreement(model, dataset, pair: tuple[str, str] = ("audio", "video"),
                           batch_size: int = 256) -> dict[str, float]:
    """The paper's central property, measured: on the segments where both modalities of ``pair`` carry the same
    event (one class, not background, in each ``segment_label/<m>``), the fraction quantised to the same code
    (:func:`code_agreement` on the model's codes of every clip of ``dataset``)."""
    keys = [f"segment_label/{m}" for m in pair]
    codes: list[list[Tensor]] = [[], []]
    labels: list[list[Tensor]] = [[], []]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            if any(k not in batch for k in keys):
                raise ValueError(f"aligned_code_agreement needs {keys} in the dataset's items, got {sorted(batch)}")
            for i, m in enumerate(pair):
                codes[i].append(model.quantize(batch[m].to(device), m)[0].cpu())
                labels[i].append(batch[keys[i]])
    model.train(was_training)
    return code_agreement([torch.cat(c) for c in codes], [torch.cat(y) for y in labels],
                          int(model.config.model.codebook_size))


def code_agreement(codes: Sequence[Tensor], segment_labels: Sequence[Tensor], size: int) -> dict[str, float]:
    """Same code on aligned segments, from the codes ``(N, T)`` of two modalities and their segment labels
    ``(N, T, C+1)`` (multi-hot, background last): aligned = both carry one event, the same class, in a segment.

    Returns ``same_code`` (the fraction of aligned segments with equal codes), ``segments`` (how many are aligned),
    ``chance`` (the same fraction if the two modalities picked codes independently with their observed marginal
    frequencies on those segments) and ``bound`` (the most it could be given each modality's code frequencies per
    event class: sum over classes of the class's share times the overlap sum_k min(p_a(k | c), p_b(k | c)) of the
    two modalities' per-class code distributions; two modalities that use different codes for a class cannot agree
    on it, however they are paired)."""
    events = []
    for labels in segment_labels:
        labels = labels[..., :-1]                                                    # drop background
        single = labels.sum(-1) == 1
        events.append(torch.where(single, labels.argmax(-1), torch.full_like(single, -1, dtype=torch.long)))
    aligned = (events[0] >= 0) & (events[0] == events[1])                           # (N, T)
    total = int(aligned.sum())
    if total == 0:
        return {"same_code": math.nan, "segments": 0, "chance": math.nan, "bound": math.nan}
    picked = [c[aligned].numpy() for c in codes]
    classes = events[0][aligned].numpy()
    joint = np.stack([np.bincount(p, minlength=size) for p in picked])
    p = joint / joint.sum(1, keepdims=True)
    bound = 0.0
    for c in np.unique(classes):
        counts = np.stack([np.bincount(x[classes == c], minlength=size) for x in picked])
        bound += np.minimum(*(counts / counts.sum(1, keepdims=True))).sum() * counts[0].sum()
    return {"same_code": int((picked[0] == picked[1]).sum()) / total, "segments": total,
            "chance": float((p[0] * p[1]).sum()), "bound": float(bound / total)}
