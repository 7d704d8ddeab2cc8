"""Readers for the authors' officially released feature files (the data of paper Sec. 5.1), one module per format.

``load_official(root, subset, split, ...)`` returns a ``torch.utils.data.Dataset`` of ``dict[str, Tensor]`` items
per ``cmg_lib/data/schema.py``. ``root`` holds the released files at the released scripts' relative paths
(``layout.LAYOUT``; documented with the text-embedding recipe in ``book/official_data.md``):

==============  =========================  ===============================================================
subset          splits                     reader
==============  =========================  ===============================================================
``pretrain``    ``24k``, ``40k``, ``81k``  :class:`vggsound.VGGSoundPretrain` (zip-of-pickle + csv)
``ave``         ``train``, ``val``, ``test`` :func:`ave.ave_dataset` (HDF5)
``avvp``        ``train``, ``test``        :func:`avvp.avvp_dataset` (tab csv + zip-of-pickle)
``ave_avvp``    ``train`` / ``test``       AVE side (HDF5, 12 classes) / AVVP side (12 classes)
``ucf_vgg``     ``vggsound``, ``ucf``      :class:`ucf.UCFVGGSound`
``avs``         ``train``, ``val``, ``test`` :class:`avs.AVSS4` (PNG frames and masks)
==============  =========================  ===============================================================

Feature pickles are read with a numpy-only unpickler (``files.NumpyOnlyUnpickler``): a pickle that references
anything but numpy array reconstruction is refused, because unpickling can execute arbitrary code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..schema import check_subset
from .base import TEXT_DIM, OfficialDataset
from .layout import LAYOUT, Paths
from .text import embedding_stem

__all__ = ["load_official", "LAYOUT", "OfficialDataset", "embedding_stem"]


def load_official(root: str | Path, subset: str, split: str, *, modalities: Sequence[str] | None = None,
                  preload: bool = False, paths: Mapping[str, str | Path] | None = None, text_dim: int = TEXT_DIM,
                  image_size: tuple[int, int] | None = (224, 224)) -> OfficialDataset:
    """Read one split of the official data under ``root``.

    ``modalities``: which feature keys to read (default: all the subset has; ``text`` only when ``root/
    text_embeddings`` exists). ``preload``: read every row into memory now instead of lazily per item. ``paths``:
    overrides of ``LAYOUT`` entries. ``text_dim``: expected token-embedding width (768 for BERT-base; ``None``
    accepts any). ``image_size``: expected AVS frame/mask size (``None`` accepts any).
    """
    check_subset(subset, split)
    where = Paths(root, paths)
    if subset == "pretrain":
        from .vggsound import VGGSoundPretrain

        dataset = VGGSoundPretrain(where, split, modalities, text_dim)
    elif subset == "ave":
        from .ave import ave_dataset

        dataset = ave_dataset(where, split, modalities)
    elif subset == "avvp":
        from .avvp import avvp_dataset

        dataset = avvp_dataset(where, split, modalities)
    elif subset == "ave_avvp":
        dataset = _ave_avvp(where, split, modalities)
    elif subset == "ucf_vgg":
        from .ucf import UCFVGGSound

        dataset = UCFVGGSound(where, split, modalities)
    elif subset == "avs":
        from .avs import AVSS4

        dataset = AVSS4(where, split, modalities, text_dim, image_size)
    else:
        raise ValueError(f"subset {subset!r} has no official release (the authors' retrieval protocol is not "
                         "public, book/differences.md#retrieval-protocol); official subsets are "
                         "['ave', 'ave_avvp', 'avs', 'avvp', 'pretrain', 'ucf_vgg']")
    dataset.data_paths = where                     # for its content hash (content.py), computed on first use
    return dataset.preload() if preload else dataset


def _ave_avvp(where: Paths, split: str, modalities):
    """AVE -> AVVP (book/official_data.md): ``train`` = AVE clips of the 12 shared classes, ``test`` = AVVP videos."""
    from .files import read_lines

    if split == "train":
        from .ave import AVEClips

        names = read_lines(where["ave_avvp_categories"], "the 12 classes shared by AVE and AVVP, one per line")
        return AVEClips(name="official/ave_avvp/train", feature_dir=where["ave"],
                        order_path=where["ave_avvp_order"], labels_path=where["ave_avvp_labels"],
                        class_names=names, modalities=modalities)
    from .avvp import AVVPVideos

    return AVVPVideos(name="official/ave_avvp/test", categories=where["ave_avvp_categories"],
                      audio_csv=where["ave_avvp_audio_csv"], visual_csv=where["ave_avvp_visual_csv"],
                      audio_dir=where["avvp_audio"], video_dir=where["avvp_video"], modalities=modalities)
