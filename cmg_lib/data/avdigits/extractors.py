"""The frozen feature extractors of AV-Digits, each trained at build time on its own labelled task.

They play the part of upstream's VGGish (AudioSet) and VGG19 (ImageNet): trained once on a separate task and on a
pool of voices / images that no downstream split uses, then frozen; the dataset's features are their intermediate
maps.

* :class:`AudioNet`: log-mel (64 x 98) of a 1-s segment -> 128-d vector (mean over time and frequency of its last
  conv map). Task: recognise an *isolated* word (35 classes: the 28 number words "zero".."nineteen",
  "twenty".."ninety", 6 other words, or noise only), spoken by the extractor voice pool.
* :class:`DigitNet`: a 40 x 40 frame -> 5 x 5 x 64 grid (its last conv map). Task: name the *single* handwritten
  digit on a cluttered canvas (11 classes: 0-9 or none), images of the extractor image pool.

Downstream classes are two-word numbers ("forty two", a pair of digits side by side), which neither task contains.
Training runs on one CPU thread with a seeded generator, so the weights (and the build hash) do not depend on the
machine; 1/5 of the extractor pool (by voice / image) is held out to report each extractor's accuracy on its task.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn



AUDIO_DIM = 128
GRID, VIDEO_DIM = 5, 64

class AudioNet(nn.Module):
    """Small VGGish-like CNN: (N, 64, 98) log-mel -> (N, 128) embedding; ``forward`` adds the word head."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.AvgPool2d(2),                                              # 32 bands, 20 ms hops
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, AUDIO_DIM, 1), nn.ReLU())
        self.head = nn.Linear(AUDIO_DIM, num_classes)
        self.register_buffer("scale", torch.tensor([0.0, 1.0]))           # log-mel mean, std of its training set

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        x = (logmel - self.scale[0]) / self.scale[1]
        return self.body(x[:, None]).mean(dim=(2, 3))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(logmel))

class DigitNet(nn.Module):
    """Small CNN standing in for VGG19 pool5: (N, 40, 40) in [0, 1] -> (N, 5, 5, 64) grid; head on its max-pool."""

    def __init__(self, num_classes: int = 11):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, VIDEO_DIM, 3, padding=1), nn.BatchNorm2d(VIDEO_DIM), nn.ReLU(),
            nn.AvgPool2d(2))
        self.head = nn.Linear(VIDEO_DIM, num_classes)

    def grid(self, canvases: torch.Tensor) -> torch.Tensor:
        return self.body(canvases[:, None]).permute(0, 2, 3, 1)

    def forward(self, canvases: torch.Tensor) -> torch.Tensor:
        return self.head(self.grid(canvases).amax(dim=(1, 2)))

def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, seed: int, epochs: int, batch: int = 64,
        lr: float = 3e-3) -> nn.Module:
    """Adam on seeded minibatches, one CPU thread; returns the model frozen in eval mode."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for s in range(0, len(xt), batch):
                idx = order[s: s + batch]
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)

def init(cls, seed: int, **kwargs) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return cls(**kwargs)

def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> float:
    with torch.inference_mode():
        pred = np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[s: s + chunk], np.float32)))
                               .argmax(1).numpy() for s in range(0, len(x), chunk)])
    return float((pred == np.asarray(y)).mean())

def state(model: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()}

def load(bank: dict, prefix: str, cls, **kwargs) -> nn.Module:
    """Rebuild a frozen extractor from the ``prefix/*`` arrays of a bank, without touching torch's global random
    state (the layers' random initialisation, overwritten at once, runs on a forked generator: a training run that
    first reads a fresh build's video features then draws the same numbers as one that finds them cached)."""
    with torch.random.fork_rng(devices=[]):
        model = cls(**kwargs)
    model.load_state_dict({k[len(prefix) + 1:]: torch.from_numpy(np.asarray(v)) for k, v in bank.items()
                           if k.startswith(prefix + "/")})
    return model.eval().requires_grad_(False)

def audio_features(model: AudioNet, logmel: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(N, 64, 98) log-mel -> (N, 128) float32 embeddings."""
    out = np.empty((len(logmel), AUDIO_DIM), np.float32)
    with torch.inference_mode():
        for s in range(0, len(logmel), chunk):
            out[s: s + chunk] = model.embed(torch.from_numpy(np.ascontiguousarray(logmel[s: s + chunk]))).numpy()
    return out

def video_features(model: DigitNet, canvases: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(N, 40, 40) canvases -> (N, 5, 5, 64) float32 grids."""
    out = np.empty((len(canvases), GRID, GRID, VIDEO_DIM), np.float32)
    with torch.inference_mode():
        for s in range(0, len(canvases), chunk):
            out[s: s + chunk] = model.grid(torch.from_numpy(np.ascontiguousarray(canvases[s: s + chunk],
                                                                                 np.float32))).numpy()
    return out

