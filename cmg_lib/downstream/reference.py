"""The reference every downstream number can be held against: the same task, head and protocol on a modality's raw
features instead of its frozen codes.

:class:`RawFeatures` stands in for a pre-trained model in ``run_task``: its ``quantize`` returns the segment's raw
features, flattened (audio ``(T, 128)``, video ``(T, 5*5*64)`` on AV-Digits), where a model returns its code
vectors. What a head reaches on them is what the data gives that head; a code that loses class information
scores below it.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from ..config import Config, ModelConfig


class RawFeatures(nn.Module):
    """A modality's raw per-segment features as its "codes" (``(B, T, *shape) -> (B, T, prod(shape))``).

    ``config.model.hidden_dim`` is the flattened width (what a head's input width is read from) and
    ``config.preset`` names the stand-in in the result record; one modality only: another is a ValueError."""

    def __init__(self, modality: str, feature_shape: tuple[int, ...], segments: int = 10):
        super().__init__()
        self.modality, self.modalities = modality, (modality,)
        self.feature_shape = tuple(int(s) for s in feature_shape)
        width = math.prod(self.feature_shape)
        self.config = Config(model=ModelConfig(segments=segments, hidden_dim=width, n_heads=1),
                             preset=f"raw features ({modality})", method="none")

    def quantize(self, x: Tensor, modality: str) -> tuple[None, Tensor]:
        if modality != self.modality:
            raise ValueError(f"this reference holds the raw {self.modality!r} features, not {modality!r}")
        if tuple(x.shape[2:]) != self.feature_shape:
            raise ValueError(f"raw {modality!r} features must be (B, T, {', '.join(map(str, self.feature_shape))}), "
                             f"got {tuple(x.shape)}")
        return None, x.reshape(*x.shape[:2], -1).float()

    def forward(self, x: Tensor) -> Tensor:                  # a module needs one; the tasks call quantize
        return self.quantize(x, self.modality)[1]


def raw_features(dataset, modality: str, segments: int = 10) -> RawFeatures:
    """The stand-in for ``modality`` of a loaded split (its ``feature_shapes``)."""
    shapes = getattr(dataset, "feature_shapes", {})
    if modality not in shapes:
        raise ValueError(f"the split has no modality {modality!r}; it has {sorted(shapes)}")
    return RawFeatures(modality, shapes[modality], segments)


