"""The batch contract shared by the embedded AV-Digits data and the official-feature readers.

Every dataset is a ``torch.utils.data.Dataset`` whose items are ``dict[str, Tensor]``; the default collate stacks
them into a batch ``dict[str, Tensor]`` with a leading batch axis B. Keys:

* modality features (float32): ``"audio"`` ``(T, 128)`` per item, ``"video"`` ``(T, H, W, C)``, ``"text"``
  ``(T, F)`` token embeddings (T = 10 segments / token slots; AVS official audio uses its own T, see below).
* ``"label"`` int64 ``()``: the clip's event class (0..C-1), where the subset has one.
* ``"segment_label/<modality>"`` float32 ``(T, C+1)``: multi-hot per segment, last column = background (1 exactly
  where no event is present in that modality). AVE (one event per clip) and AVVP (several) share this form.
* AVS: ``"frames"`` float32 ``(F, H, W, C)`` in [0, 1] (C = 3 official RGB, 1 on AV-Digits), ``"mask"`` float32
  ``(F, H, W)`` in {0, 1} (the sounding object), plus ``"video"`` features of those frames where available and the
  query modalities ``"audio"`` and ``"text"``.
* ``"index"`` int64 ``()``: the row's position in its split (stable across runs; for bookkeeping and figures).

Subsets and splits (``load_dataset(data, subset, split)``) mirror the paper's data (Sec. 5.1):

====================  =======================================  ==============================================
subset                splits                                   keys beyond the modalities
====================  =======================================  ==============================================
``pretrain``          ``24k``, ``40k``, ``81k``                ``label`` (never used by pre-training)
``ave``               ``train``, ``val``, ``test``              ``label``, ``segment_label/*``
``avvp``              ``train``, ``test``                       ``segment_label/*`` (25 classes upstream)
``ave_avvp``          ``train`` (AVE side), ``test`` (AVVP)     ``label`` (train), ``segment_label/*``
``ucf_vgg``           ``vggsound`` (audio), ``ucf`` (video)     ``label``
``avs``               ``train``, ``val``, ``test``              ``frames``, ``mask``, ``label``
``retrieval``         ``train``, ``test``                       ``label``
====================  =======================================  ==============================================
"""
from __future__ import annotations

PRETRAIN_SIZES = ("24k", "40k", "81k")          # the paper's pre-training sets (VGGSound-AVEL 24K / 40K / 81K)
SUBSETS: dict[str, tuple[str, ...]] = {
    "pretrain": PRETRAIN_SIZES,
    "ave": ("train", "val", "test"),
    "avvp": ("train", "test"),
    "ave_avvp": ("train", "test"),
    "ucf_vgg": ("vggsound", "ucf"),
    "avs": ("train", "val", "test"),
    "retrieval": ("train", "test"),
}
MODALITY_KEYS = ("audio", "video", "text")
SEGMENTS = 10


def segment_key(modality: str) -> str:
    return f"segment_label/{modality}"


def check_subset(subset: str, split: str) -> None:
    """Raise a ValueError naming the valid choices for an unknown subset or split."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {sorted(SUBSETS)}")
    if split not in SUBSETS[subset]:
        raise ValueError(f"unknown split {split!r} for subset {subset!r}; expected one of {SUBSETS[subset]}")
