"""AVSBench-S4 (single source) for cross-modal segmentation (book/official_data.md; ``avs_s4/dataloader.py``).

* ``s4_meta_data.csv`` (comma): column 0 = video name, column 2 = category (read positionally, as released), column
  ``split`` in {train, val, test}.
* frames ``visual_frames/{split}/{category}/{name}/{name}_{k}.png``, k = 1..5, RGB (224 x 224 in the release);
  returned as ``frames`` (5, H, W, 3) float32 in [0, 1] (ImageNet normalisation is left to the model).
* masks ``gt_masks/{split}/{category}/{name}/{name}_{k}.png`` read in PIL mode ``'1'`` as released; only k = 1 for
  ``train`` (semi-supervised S4), k = 1..5 for ``val``/``test``: ``mask`` (1 or 5, H, W) float32 in {0, 1}.
* audio ``AVSBench/feature/audio/{split}/zip/{category}/{name}.zip`` (T, 128) fitted to **5** rows.
* text: token embeddings of the category's prompt (``AVSBenchCategories2Prompts.csv``) in 10 slots.
* ``label``: index of the category among the sorted distinct categories of the whole meta csv (the release has no
  class list for S4; sorting keeps ids identical across splits).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import AUDIO_ROW, TEXT_DIM, OfficialDataset, resolve_modalities
from .files import check_shape, column, fit_rows, read_feature_zip, read_table, require_file
from .text import TokenEmbeddings, read_prompts

AVS_FRAMES = 5


def _read_png(path, mode: str):
    from PIL import Image  # Pillow; only needed for AVS

    require_file(path, "a PNG video frame" if mode == "RGB" else "a PNG ground-truth mask")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except OSError as err:                       # PIL.UnidentifiedImageError and truncated files are OSErrors
        raise ValueError(f"{path}: not a readable image ({str(err)[:160]}); expected "
                         f"{'a PNG video frame' if mode == 'RGB' else 'a PNG ground-truth mask'}") from None


class AVSS4(OfficialDataset):
    def __init__(self, paths, split: str, modalities: Sequence[str] | None = None, text_dim: int = TEXT_DIM,
                 image_size: tuple[int, int] | None = (224, 224)):
        meta = paths["avs_meta"]
        header, rows = read_table(meta, "a csv with the video name in column 0, category in column 2 and a "
                                        "'split' column", ["split"])
        short = [k for k, r in enumerate(rows) if len(r) < 3]
        if len(header) < 3 or short:
            raise ValueError(f"{meta}: expected at least 3 columns (name, ..., category), found header {header}")
        splits = column(header, rows, "split", meta)
        self.class_names_all = sorted({r[2].strip() for r in rows})
        keep = [r for r, s in zip(rows, splits) if s == split]
        self.names = [r[0].strip() for r in keep]
        self.categories = [r[2].strip() for r in keep]
        lookup = {c: k for k, c in enumerate(self.class_names_all)}
        self.labels = np.asarray([lookup[c] for c in self.categories], dtype=np.int64)
        self.split, self.image_size = split, None if image_size is None else tuple(image_size)
        self.n_masks = 1 if split == "train" else AVS_FRAMES
        self.frames_dir, self.masks_dir = paths["avs_frames"] / split, paths["avs_masks"] / split
        self.audio_dir = paths["avs_audio"] / split / "zip"
        mods = resolve_modalities(modalities, ("audio", "text"), paths["text_embeddings"].is_dir(), f"avs/{split}")
        self.text = None
        if "text" in mods:
            prompts = read_prompts(paths["avs_prompts"])
            missing = sorted(set(self.categories) - set(prompts))
            if missing:
                raise ValueError(f"{paths['avs_prompts']}: no prompt for categories {missing[:3]}")
            self.text = TokenEmbeddings(paths["text_embeddings"], dim=text_dim)
            self.text.check(self.categories)
        super().__init__(name=f"official/avs/{split}", modalities=mods,
                         feature_shapes={"audio": AUDIO_ROW, "text": (text_dim,)},
                         class_names=self.class_names_all, length=len(self.names))

    def _images(self, folder, count: int, mode: str) -> np.ndarray:
        stack = np.stack([_read_png(folder / f"{folder.name}_{k}.png", mode) for k in range(1, count + 1)])
        if self.image_size is not None:
            tail = (3,) if mode == "RGB" else ()
            check_shape(stack.shape, (count, *self.image_size, *tail), str(folder), f"{mode} images")
        return stack

    def _read(self, i: int) -> dict:
        name, category = self.names[i], self.categories[i]
        frames = self._images(self.frames_dir / category / name, AVS_FRAMES, "RGB").astype(np.float32) / 255.0
        mask = self._images(self.masks_dir / category / name, self.n_masks, "1").astype(np.float32)
        if frames.shape[1:3] != mask.shape[1:3]:
            raise ValueError(f"{self.masks_dir / category / name}: masks are {mask.shape[1:3]} but frames are "
                             f"{frames.shape[1:3]}; expected the same size")
        out = {"frames": frames, "mask": mask, "label": int(self.labels[i])}
        if "audio" in self.modalities:
            path = self.audio_dir / category / f"{name}.zip"
            out["audio"] = fit_rows(read_feature_zip(path, (None, *AUDIO_ROW), "VGGish audio features (T, 128)"),
                                    AVS_FRAMES, str(path))
        if self.text is not None:
            out["text"] = self.text(category)
        return out
