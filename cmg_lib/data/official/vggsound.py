"""VGGSound-AVEL pre-training data (book/official_data.md; ``dataset/VGGSOUND_dataset.py``, ``VGGSOUND_dataset179k.py``).

* ``24k``: the rows of ``vggsound-avel40k.csv`` whose ``split`` is ``train`` (the paper's 24K, code comment
  ``# train = 24k``).
* ``40k``: train, then test, then val rows (the released loaders concatenate all three in this order, whatever
  ``split`` they are given).
* ``81k``: every row of ``video_name_vggsound81k_checked.csv`` (column ``id`` = file name; a ``.mp4`` suffix is
  dropped); audio-visual only, no labels, features in ``audio/zip`` and ``video/zip``.

Items: ``audio`` (10, 128) (padded by repeating the last row / truncated), ``video`` (10, 7, 7, 512) as stored,
``text`` (10, 768) token embeddings of the class prompt (when available), ``label`` = line index of ``category`` in
``VggsoundAVEL40kCategories.txt`` (24k/40k only; pre-training never uses it).
"""
from __future__ import annotations

from typing import Sequence

from .base import AUDIO_ROW, TEXT_DIM, VIDEO_ROW, OfficialDataset, read_av_clip, resolve_modalities
from .files import column, index_of, read_lines, read_table
from .layout import Paths
from .text import TokenEmbeddings, read_prompts

_SPLIT_ORDER = {"24k": ("train",), "40k": ("train", "test", "val")}


class VGGSoundPretrain(OfficialDataset):
    def __init__(self, paths: Paths, split: str, modalities: Sequence[str] | None = None, text_dim: int = TEXT_DIM):
        if split == "81k":
            csv = paths["vggsound81k_csv"]
            header, rows = read_table(csv, "a csv with column 'id' (video file names, e.g. <id>.mp4)", ["id"])
            names = column(header, rows, "id", csv)
            self.video_ids = [n[:-4] if n.endswith(".mp4") else n for n in names]
            self.categories, self.labels, class_names = None, None, ()
            available = ("audio", "video")
            self.audio_dir, self.video_dir = paths["vggsound81k_audio"], paths["vggsound81k_video"]
        else:
            csv = paths["vggsound_csv"]
            header, rows = read_table(csv, "a csv with columns category, video_id, split",
                                      ["category", "video_id", "split"])
            splits = column(header, rows, "split", csv)
            keep = [i for s in _SPLIT_ORDER[split] for i, row_split in enumerate(splits) if row_split == s]
            all_ids = column(header, rows, "video_id", csv)
            self.video_ids = [all_ids[i] for i in keep]
            all_categories = column(header, rows, "category", csv)
            self.categories = [all_categories[i] for i in keep]
            class_names = read_lines(paths["vggsound_categories"], "the 141 VGGSound-AVEL class names, one per line")
            self.labels = index_of(class_names, self.categories, csv, "categories")
            available = ("audio", "video", "text")
            self.audio_dir, self.video_dir = paths["vggsound_audio"], paths["vggsound_video"]
        mods = resolve_modalities(modalities, available, paths["text_embeddings"].is_dir(), f"pretrain/{split}")
        self.text = None
        if "text" in mods:
            prompts = read_prompts(paths["vggsound_prompts"])
            missing = sorted(set(self.categories) - set(prompts))
            if missing:
                raise ValueError(f"{paths['vggsound_prompts']}: no prompt for categories {missing[:3]} "
                                 f"({len(missing)} missing)")
            self.text = TokenEmbeddings(paths["text_embeddings"], dim=text_dim)
            self.text.check(self.categories)
        shapes = {"audio": AUDIO_ROW, "video": VIDEO_ROW, "text": (text_dim,)}
        super().__init__(name=f"official/pretrain/{split}", modalities=mods, feature_shapes=shapes,
                         class_names=class_names, length=len(self.video_ids))

    def _read(self, i: int) -> dict:
        vid, out = self.video_ids[i], {}
        out.update(read_av_clip(vid, self.modalities, self.audio_dir, self.video_dir))
        if self.text is not None:
            out["text"] = self.text(self.categories[i])
        if self.labels is not None:
            out["label"] = int(self.labels[i])
        return out
