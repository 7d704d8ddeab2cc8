"""UCF-101 <-> VGGSound-AVEL, 16 shared classes (book/official_data.md; ``dataset/UCF_VGGSOUND_datasets.py``).

* split ``vggsound``: every row of ``vggsound2ucf.csv`` (columns ``video_id``, ``category`` = VGGSound name; other
  columns ignored), audio ``vggsound40k/feature/audio/zip/{video_id}.zip`` (T, 128) fitted to 10 rows; label =
  line index of the category in ``VGGSoundsameUCF101.txt``.
* split ``ucf``: every row of ``ucf2vggsound.csv`` (``category`` = UCF name), video
  ``UCF101/feature/video/zip/{video_id}.zip`` (T, 7, 7, 512) fitted to 10 rows (the only released loader that pads
  video); label = line index in ``UCF101sameVGGSound.txt``.

The two 16-line lists are line-aligned (line k names the same concept on both sides), so one label space serves
both splits; ``class_names`` are the split's own names and ``paired_class_names`` the other side's.
"""
from __future__ import annotations

from ..schema import SEGMENTS
from .base import AUDIO_ROW, VIDEO_ROW, OfficialDataset
from .files import column, fit_rows, index_of, read_feature_zip, read_lines, read_table


class UCFVGGSound(OfficialDataset):
    def __init__(self, paths, split: str, modalities=None):
        vgg_names = read_lines(paths["vgg_ucf_categories"], "the 16 VGGSound class names shared with UCF-101")
        ucf_names = read_lines(paths["ucf_categories"], "the 16 UCF-101 class names, line-aligned with VGGSound's")
        if len(vgg_names) != len(ucf_names):
            raise ValueError(f"{paths['vgg_ucf_categories']} has {len(vgg_names)} lines but {paths['ucf_categories']} "
                             f"has {len(ucf_names)}; the two class lists must be line-aligned")
        side = {"vggsound": ("vgg_ucf_csv", vgg_names, ucf_names, "audio", "vggsound_audio"),
                "ucf": ("ucf_csv", ucf_names, vgg_names, "video", "ucf_video")}[split]
        csv_key, names, self.paired_class_names, self.modality, dir_key = side
        if modalities is not None and tuple(modalities) != (self.modality,):
            raise ValueError(f"ucf_vgg/{split}: only modality {self.modality!r} is available, got {list(modalities)}")
        csv = paths[csv_key]
        header, rows = read_table(csv, "a csv with columns video_id, category", ["video_id", "category"])
        self.video_ids = column(header, rows, "video_id", csv)
        self.labels = index_of(names, column(header, rows, "category", csv), csv, "categories")
        self.feature_dir = paths[dir_key]
        row = AUDIO_ROW if self.modality == "audio" else VIDEO_ROW
        super().__init__(name=f"official/ucf_vgg/{split}", modalities=(self.modality,),
                         feature_shapes={self.modality: row}, class_names=names, length=len(self.video_ids))
        self._row = row

    def _read(self, i: int) -> dict:
        path = self.feature_dir / f"{self.video_ids[i]}.zip"
        what = "VGGish audio features (T, 128)" if self.modality == "audio" else "VGG19 pool5 features (T, 7, 7, 512)"
        features = fit_rows(read_feature_zip(path, (None, *self._row), what), SEGMENTS, str(path))
        return {self.modality: features, "label": int(self.labels[i])}
