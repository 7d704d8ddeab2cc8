"""Where each official file lives under the data root: the released scripts' relative paths (their working folder
``code/src`` for VGGSound / AVE / AVVP / UCF, ``avs_s4`` for AVSBench), plus our ``text_embeddings/`` folder.

Every entry can be overridden with ``load_official(..., paths={"name": "relative/or/absolute/path"})``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

LAYOUT: dict[str, str] = {
    # VGGSound-AVEL pre-training (pretrain.py:187-268, dataset/VGGSOUND_dataset.py, VGGSOUND_dataset179k.py)
    "vggsound_csv": "vggsound-avel40k.csv",
    "vggsound_categories": "VggsoundAVEL40kCategories.txt",
    "vggsound_prompts": "vggsoundCategories2Prompts.csv",
    "vggsound_audio": "vggsound40k/feature/audio/zip",
    "vggsound_video": "vggsound40k/feature/video/zip",
    "vggsound81k_csv": "video_name_vggsound81k_checked.csv",
    "vggsound81k_audio": "audio/zip",
    "vggsound81k_video": "video/zip",
    # AVE (dataset/AVE_dataset.py): visual_feature.h5, audio_feature.h5, labels.h5, {split}_order.h5
    "ave": "AVE-ECCV18-master/data",
    # AVVP (dataset/AVVP_dataset.py, avvp.py:83-120)
    "avvp_categories": "AVVP/data/AVVP_Categories.txt",
    "avvp_audio_csv": "AVVP/data/AVVP_eval_audio_checked_combined.csv",
    "avvp_visual_csv": "AVVP/data/AVVP_eval_visual_checked_combined.csv",
    "avvp_audio": "AVVP/feature/audio/zip",
    "avvp_video": "AVVP/feature/video/zip",
    # AVE -> AVVP (dataset/AVE_AVVP_dataset.py, ave_avvp.py:79-116)
    "ave_avvp_labels": "AVE_AVVP/ave_avvp_labels.h5",
    "ave_avvp_order": "AVE_AVVP/ave_avvp_order.h5",
    "ave_avvp_categories": "AVE_AVVP/AVE_AVVP_Categories.txt",
    "ave_avvp_audio_csv": "AVE_AVVP/AVE_AVVP_eval_audio_checked_combined.csv",
    "ave_avvp_visual_csv": "AVE_AVVP/AVE_AVVP_eval_visual_checked_combined.csv",
    # UCF-101 <-> VGGSound (dataset/UCF_VGGSOUND_datasets.py, ucf_vggsound.py:77-115)
    "ucf_csv": "ucf2vggsound.csv",
    "vgg_ucf_csv": "vggsound2ucf.csv",
    "ucf_categories": "UCF101sameVGGSound.txt",
    "vgg_ucf_categories": "VGGSoundsameUCF101.txt",
    "ucf_video": "UCF101/feature/video/zip",
    # AVSBench-S4 (avs_s4/config.py:28-33, avs_s4/dataloader.py)
    "avs_meta": "AVSBench_data/Single-source/s4_meta_data.csv",
    "avs_frames": "AVSBench_data/Single-source/s4_data/visual_frames",
    "avs_masks": "AVSBench_data/Single-source/s4_data/gt_masks",
    "avs_audio": "AVSBench/feature/audio",
    "avs_prompts": "AVSBenchCategories2Prompts.csv",
    # ours: precomputed prompt token embeddings (see text.py)
    "text_embeddings": "text_embeddings",
}


class Paths:
    """Resolves layout names against a root, with user overrides."""

    def __init__(self, root: str | Path, overrides: Mapping[str, str | Path] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"official data root {self.root} is not a folder; expected the released data "
                                    "laid out as in book/official_data.md")
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(LAYOUT))
        if unknown:
            raise ValueError(f"unknown path name(s) {unknown}; expected some of {sorted(LAYOUT)}")
        self._rel = {**LAYOUT, **{k: str(v) for k, v in overrides.items()}}

    def __getitem__(self, name: str) -> Path:
        return self.root / self._rel[name]  # an absolute override replaces the root
