"""Linear-probe quality check of the dataset's features: is each modality informative, is there a cross-modal gap?

"Raw" below means the features exactly as the dataset delivers them (log-mel summary, frozen-CNN grid, MiniLM
tokens), before any pre-training or alignment.

Per-segment probes on the AVE-like split (11 classes: 10 digits + background, labels from ``segment_label/*``):

* within a modality: logistic regression trained on the train split's raw features, tested on the test split
  (unseen voices and images) of the same modality; should be well above the majority-class rate;
* across modalities without alignment: each modality is mapped to a common width by its own fixed random Gaussian
  projection, the probe is trained on the source modality and tested on the target modality; should be near
  chance. This is the gap a unified representation (Uni-Code) has to close.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import schema
from .common import split_tensors

MODALITIES = ("audio", "video", "text")


def segment_table(dataset, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a split to per-segment rows: features (N*T, F) float32 and class (N*T,), background = C.

    The whole split is materialised once (``common.split_tensors``).
    """
    batch = split_tensors(dataset)
    x = batch[modality].flatten(2).flatten(0, 1).numpy()
    y = batch[schema.segment_key(modality)].argmax(-1).flatten().numpy()
    return x, y


class LinearProbe:
    """Multinomial logistic regression on standardised features: Adam on seeded minibatches of ``batch`` rows (the
    whole table when smaller), in torch. Minibatches because the full-batch skinny GEMMs (20000 x 1600 video rows,
    11 classes) cost 0.46 s per step on 2 cores: 300 of them were 2.5 minutes of the data tour."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int, steps: int = 300, weight_decay: float = 1e-4,
                 batch: int = 4096):
        x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        target = torch.from_numpy(np.asarray(y, np.int64))
        gen = torch.Generator().manual_seed(seed)
        n_cls = int(target.max()) + 1
        self.weight = (0.01 * torch.randn(n_cls, x.shape[1], generator=gen)).requires_grad_(True)
        self.bias = torch.zeros(n_cls, requires_grad=True)
        opt = torch.optim.Adam([self.weight, self.bias], lr=0.01, weight_decay=weight_decay)
        z = (x - self.mean) / self.std
        n = z.shape[0]
        for _ in range(steps):
            rows = torch.randint(n, (batch,), generator=gen) if n > batch else slice(None)
            loss = F.cross_entropy(F.linear(z[rows], self.weight, self.bias), target[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = (torch.from_numpy(np.ascontiguousarray(x, np.float32)) - self.mean) / self.std
            return F.linear(z, self.weight, self.bias).argmax(1).numpy()


def _fit(x: np.ndarray, y: np.ndarray, seed: int) -> LinearProbe:
    return LinearProbe(x, y, seed)


def majority_rate(y: np.ndarray) -> float:
    return float(np.bincount(y).max() / len(y))


def within_modality(train, test, modality: str, seed: int = 0) -> dict:
    """Per-segment accuracy of a linear probe on one modality's raw features (train split -> test split)."""
    xtr, ytr = segment_table(train, modality)
    xte, yte = segment_table(test, modality)
    model = _fit(xtr, ytr, seed)
    pred = model.predict(xte)
    event = yte < train.num_classes
    return {"accuracy": float((pred == yte).mean()), "event_accuracy": float((pred[event] == yte[event]).mean()),
            "majority": majority_rate(yte), "chance_event": 1.0 / train.num_classes, "segments": int(len(yte))}


def cross_modality(train, test, source: str, target: str, width: int = 128, seed: int = 0) -> dict:
    """Train on ``source`` features, test on ``target`` features, both through fixed random projections to ``width``.

    Only event segments are used (10 digit classes, chance = 0.1), so background cannot inflate the score.
    """
    rng = np.random.default_rng(seed)
    xs, ys = segment_table(train, source)
    xt, yt = segment_table(test, target)
    keep_s, keep_t = ys < train.num_classes, yt < train.num_classes
    xs, ys, xt, yt = xs[keep_s], ys[keep_s], xt[keep_t], yt[keep_t]
    proj_s = rng.standard_normal((xs.shape[1], width)).astype(np.float32) / np.sqrt(xs.shape[1])
    proj_t = rng.standard_normal((xt.shape[1], width)).astype(np.float32) / np.sqrt(xt.shape[1])
    model = _fit(xs @ proj_s, ys, seed)
    xss, yss = segment_table(test, source)
    keep_ss = yss < train.num_classes
    source_acc = float((model.predict(xss[keep_ss] @ proj_s) == yss[keep_ss]).mean())
    pred = model.predict(xt @ proj_t)
    return {"accuracy": float((pred == yt).mean()), "source_accuracy": source_acc,
            "chance": 1.0 / train.num_classes, "majority": majority_rate(yt), "segments": int(len(yt))}


def run_probes(scale: str = "default", seed: int = 0, cache_dir=None, subset: str = "ave") -> dict:
    """All probes on ``subset`` (train -> test): within each modality and for every ordered modality pair."""
    from . import load_dataset

    splits = schema.SUBSETS[subset]
    train = load_dataset("avdigits", subset, splits[0], scale=scale, seed=seed, cache_dir=cache_dir)
    test = load_dataset("avdigits", subset, splits[-1], scale=scale, seed=seed, cache_dir=cache_dir)
    out = {"within": {m: within_modality(train, test, m, seed) for m in MODALITIES}, "cross": {}}
    for s in MODALITIES:
        for t in MODALITIES:
            if s != t:
                out["cross"][f"{s}->{t}"] = cross_modality(train, test, s, t, seed=seed)
    return out


def variance_shares(x: np.ndarray, factors: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of the total feature variance explained by each factor alone (between-group variance over total,
    summed over feature dimensions: eta squared), for rows ``x`` (N, F) and integer factors (N,)."""
    x = np.asarray(x, np.float64)
    centred = x - x.mean(0)
    total = float((centred ** 2).sum())
    out = {}
    for name, g in factors.items():
        _, inverse = np.unique(np.asarray(g), return_inverse=True)
        counts = np.bincount(inverse)
        sums = np.zeros((len(counts), x.shape[1]))
        np.add.at(sums, inverse, centred)
        out[name] = float(((sums ** 2) / counts[:, None]).sum() / total)
    return out


def feature_variance_shares(scale: str = "default", seed: int = 0, cache_dir=None, subset: str = "ave",
                            split: str = "test") -> dict[str, dict[str, float]]:
    """Per modality, on event segments of ``subset/split``: variance share of the class and of each nuisance factor
    the build records (AV-Digits only; video and text per token slot, audio per second)."""
    from . import load_dataset
    from .avdigits import Store, build_dataset

    data = load_dataset("avdigits", subset, split, scale=scale, seed=seed, cache_dir=cache_dir)
    nuisance = Store.open(build_dataset(scale, seed, cache_dir)).nuisance(subset, split)
    out = {}
    for m in MODALITIES:
        x, y = segment_table(data, m)
        event = y < data.num_classes
        factors = {"class": y[event]}
        factors.update({k: v.reshape(-1)[event] for k, v in nuisance.get(m, {}).items()})
        out[m] = variance_shares(x[event], factors)
    return out
