"""What a researcher looks at to see *why* a pre-trained model transfers or not (book chapter "Why the released
recipe behaves differently here"): code purity, linear probes on the semantic features z, the same code on aligned
segments, codes used and shared, and the contrastive terms against their chance levels.

All measures are on held-out AVE-style segments of the embedded data (``ave`` test split; the probes train on the
``ave`` train split), per modality, and take a checkpoint (or a loaded model).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..checkpoint import load_checkpoint
from ..data import load_dataset
from ..data import schema
from ..data.common import split_tensors
from ..data.probes import LinearProbe
from ..usage import aligned_code_agreement, category_fractions, code_agreement, shared_fraction
from .claims import HALF_WIDTH, t_interval
from .runs import run_history


def _segments(dataset, modality: str) -> tuple[torch.Tensor, np.ndarray]:
    """Inputs ``(N, T, ...)`` and per-segment event class ``(N*T,)`` (background = C) of a split."""
    tables = split_tensors(dataset)
    return tables[modality], tables[schema.segment_key(modality)].argmax(-1).flatten().numpy()


def _encode(model, x: torch.Tensor, modality: str, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """z ``(N*T, D)`` and code indices ``(N*T,)`` of inputs ``(N, T, ...)``."""
    zs, codes = [], []
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            z = model.encode(x[s:s + chunk], modality)
            zs.append(z.reshape(-1, z.shape[-1]).float().cpu())
            codes.append(model.codebook.nearest(z)[0].reshape(-1).cpu())
    return torch.cat(zs).numpy(), torch.cat(codes).numpy()


def code_purity(codes: np.ndarray, classes: np.ndarray, background: int) -> float:
    """On event segments, the share of segments whose code's most frequent event class is their own class
    (1 = every code is class-pure; the usage-weighted mean of per-code majority shares)."""
    event = classes != background
    if not event.any():
        return math.nan
    c, y = codes[event], classes[event]
    table = np.zeros((int(c.max()) + 1, background), dtype=np.int64)
    np.add.at(table, (c, y), 1)
    return float(table.max(1).sum() / table.sum())


def model_diagnostics(model, data: str = "avdigits", *, scale: str = "default",
                      cache_dir: str | os.PathLike | None = None, probe_seed: int = 0) -> dict[str, float]:
    """Per modality ``purity/<m>``, ``probe_z/<m>`` (event-segment accuracy of a linear probe on z, train -> test
    split, chance = the majority event class), codes used; for the first modality pair ``same_code`` on aligned
    segments with its ``same_code_chance``; ``shared_fraction`` (codes every modality used / used by any)."""
    model.eval()
    train = load_dataset(data, "ave", "train", scale=scale, cache_dir=cache_dir)
    test = load_dataset(data, "ave", "test", scale=scale, cache_dir=cache_dir)
    background, size = test.num_classes, int(model.config.model.codebook_size)
    names = model.config.model.modality_names
    out: dict[str, float] = {}
    test_codes = {}                     # (N*T,) per modality: purity, codes used, same code all read these
    for m in names:
        xtr, ytr = _segments(train, m)
        xte, yte = _segments(test, m)
        ztr, _ = _encode(model, xtr, m)
        zte, test_codes[m] = _encode(model, xte, m)
        out[f"purity/{m}"] = code_purity(test_codes[m], yte, background)
        ev_tr, ev_te = ytr != background, yte != background
        probe = LinearProbe(ztr[ev_tr], ytr[ev_tr], probe_seed)
        out[f"probe_z/{m}"] = float((probe.predict(zte[ev_te]) == yte[ev_te]).mean())
        out[f"probe_chance/{m}"] = float(np.bincount(yte[ev_te]).max() / ev_te.sum())
    usage = {m: np.bincount(test_codes[m], minlength=size) for m in names}
    for m, counts in usage.items():
        out[f"codes_used/{m}"] = int((counts > 0).sum())
    out["shared_fraction"] = shared_fraction(torch.as_tensor(np.stack(list(usage.values()))))
    tables, pair = split_tensors(test), names[:2]
    agreement = code_agreement([torch.from_numpy(test_codes[m]).view(len(test), -1) for m in pair],
                               [tables[schema.segment_key(m)] for m in pair], size)
    out["same_code"], out["same_code_chance"] = agreement["same_code"], agreement["chance"]
    out["same_code_bound"] = agreement["bound"]
    for m in names:
        out.update({f"{k}/{m}": v for k, v in code_reliance(model, m, tables[m]).items()})
    return out


def code_reliance(model, name: str, x: torch.Tensor, seed: int = 0, rows: int = 512) -> dict[str, float]:
    """How much the decoder rebuilds its input through the code (Eq. 3's D(z_hat; z_bar)), on the first ``rows``
    clips ``x`` (B, T, ...) of modality ``name``: ``recon`` the reconstruction error (MSE, as in training) with each
    clip's own code and specific features, and ``code_reliance`` the error when every clip gets another clip's
    codes (a fixed seeded permutation) divided by ``recon``: 1 when the decoder ignores the code, far above 1
    when the code carries what it rebuilds."""
    from ..modalities import Decoder

    x = x[:rows]
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    model.eval()
    with torch.no_grad():
        feats = model.features(name, x.to(model.codebook.embedding.device))
        _, codes = model.codebook.nearest(model.semantic[name](feats))
        specific = model.specific[name](feats)[0]
        own = float(Decoder.loss(model.decoders[name](codes, specific), feats))
        other = float(Decoder.loss(model.decoders[name](codes[perm], specific), feats))
    return {"recon": own, "code_reliance": other / own if own > 0 else math.nan}


def training_diagnostics(ckpt: str | os.PathLike, batch_size: int, last: int = 3) -> dict[str, float]:
    """From a cached run's history (mean of the last ``last`` log entries): every mi term, CMCM against its chance
    value 0.5 log B per modality pair (uniform code distributions), the Cross-CPC top-1 accuracies against 1/B."""
    history = run_history(ckpt)[-last:]
    if not history:
        return {}
    keys = sorted({k for h in history for k in h if k.startswith(("mi/", "cpc_acc/")) or k == "cmcm"})
    out = {k: float(np.mean([h[k] for h in history if k in h])) for k in keys}
    if "cmcm" in out:
        out["cmcm_chance"] = 0.5 * math.log(batch_size)
    if any(k.startswith("cpc_acc/") for k in out):
        out["cpc_chance"] = 1.0 / batch_size
    return out


def diagnose(ckpts: dict[int, str | os.PathLike], data: str = "avdigits", *, scale: str = "default",
             cache_dir: str | os.PathLike | None = None) -> dict[int, dict[str, float]]:
    """``model_diagnostics`` and ``training_diagnostics`` of each pre-training seed's checkpoint."""
    out = {}
    for seed, ckpt in ckpts.items():
        model = load_checkpoint(ckpt)
        out[seed] = {**model_diagnostics(model, data, scale=scale, cache_dir=cache_dir),
                     **training_diagnostics(ckpt, model.config.train.batch_size)}
    return out


def shared_category_fractions(usage: Mapping[tuple[str, int], Mapping], pair: tuple[str, str] = ("video", "audio")
                              ) -> dict[str, dict[int, float]]:
    """Fig. 4's verdict input (``claims.code_sharing_claims``): per method and pre-training seed, the fraction of
    the used codes in the "shared" category (each modality of ``pair`` makes at least 20 % of a code's uses;
    ``usage.category_fractions``) of ``usage[(method, seed)]`` (``usage.code_usage`` output: its ``"all"``)."""
    out: dict[str, dict[int, float]] = {}
    for (method, seed), counts in usage.items():
        out.setdefault(method, {})[seed] = category_fractions(counts["all"], pair)["shared"]
    return out


def same_code_agreement(models: Mapping[tuple[str, int], object], dataset, pair: tuple[str, str] = ("audio", "video")
                        ) -> dict[str, dict[int, dict[str, float]]]:
    """Per method and pre-training seed, ``usage.aligned_code_agreement`` of ``models[(method, seed)]`` on
    ``dataset``: the same code on aligned segments, its chance level and the segments seen (the input of
    ``claims.same_code_claims``)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for (method, seed), model in models.items():
        out.setdefault(method, {})[seed] = aligned_code_agreement(model, dataset, pair)
    return out


# The measures of the released-recipe chapter's diagnostics tables, by table: its controlled experiments (one
# released choice back per row) and its CLUB conditions (``interval_table(per_row, "club")``)
MEASURE_SETS: dict[str, tuple[str, ...]] = {
    "controlled": ("purity/audio", "purity/video", "probe_z/audio", "probe_z/video", "same_code", "same_code_chance",
                   "codes_used/audio", "codes_used/video", "mi/audio", "mi/video", "cmcm", "cmcm_chance",
                   "cpc_acc/audio->video", "cpc_chance"),
    "club": ("same_code", "same_code_chance", "same_code_bound", "code_reliance/audio", "code_reliance/video",
             "recon/audio", "recon/video", "mi/audio", "mi/video"),
}


def _decimals(x: float, digits: int) -> int:
    """Decimals that show ``digits`` significant digits of ``x`` (none for 0 or for digits left of the point)."""
    if x == 0 or not math.isfinite(x):
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(x))))


def format_interval(mean: float, half: float, max_decimals: int = 4) -> str:
    """``mean ± half`` for a table: the mean to two significant digits and the half-width to one, both at the
    finer of the two decimals (0.228571 ± 0.0123 -> ``0.23 ± 0.01``, 35.0 ± 2.1 -> ``35 ± 2``, 0.0312 ± 0.0005 ->
    ``0.0312 ± 0.0005``; below ``max_decimals``, two significant digits: ``1.2e-05``); the mean alone when there is
    no interval (``half`` infinite); ``–`` for no value."""
    if math.isnan(mean):
        return "–"
    finite = math.isfinite(half)
    d = min(max_decimals, max(_decimals(mean, 2), _decimals(half, 1) if finite else 0))
    if mean != 0 and round(mean, d) == 0:            # too small for max_decimals: two significant digits
        return f"{mean:.2g}" + (f" ± {half:.1g}" if finite else "")
    return f"{mean:.{d}f}" + (f" ± {half:.{d}f}" if finite else "")


def seed_summary(per_seed: dict[int, dict[str, float]], keys: Sequence[str] | None = None) -> dict[str, str]:
    """``mean ± half-width`` of the 95 % Student-t interval (``claims.t_interval``) of each measure over seeds, as
    text for a table (:func:`format_interval`; the mean alone for one seed)."""
    keys = keys or sorted({k for d in per_seed.values() for k in d})
    out = {}
    for k in keys:
        mean, half, n = t_interval([d[k] for d in per_seed.values() if k in d])
        out[k] = format_interval(mean, half)
    return out


def interval_table(per_row: Mapping[str, Mapping[int, Mapping[str, float]]], keys: Sequence[str] | str,
                   index: str | None = None) -> pd.DataFrame:
    """One row per entry of ``per_row`` (its per-seed measures), one column per measure of ``keys`` (or of the
    named :data:`MEASURE_SETS` entry) that the row's first seed has: :func:`seed_summary` text, labelled as
    ``claims.HALF_WIDTH`` (``attrs["spread"]``); a column constant over the rows goes into the caption
    (``attrs["fold_constant"]``, ``viz.readable_table``)."""
    if isinstance(keys, str):
        if keys not in MEASURE_SETS:
            raise ValueError(f"unknown measure set {keys!r}; known: {sorted(MEASURE_SETS)} (or pass the keys)")
        keys = MEASURE_SETS[keys]
    table = pd.DataFrame({row: seed_summary(per_seed, [k for k in keys if k in next(iter(per_seed.values()))])
                          for row, per_seed in per_row.items()}).T.rename_axis(index)
    table.attrs["spread"] = HALF_WIDTH
    table.attrs["fold_constant"] = True
    return table
