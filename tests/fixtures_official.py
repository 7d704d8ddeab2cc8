"""Writers of tiny files in each officially released format (book/official_data.md), for tests/test_official.py.

Every writer takes a root folder, lays the files out at the released relative paths (``cmg_lib.data.official.
layout.LAYOUT``) and returns what it wrote, so tests compare the readers' output with known arrays.
"""
from __future__ import annotations

import csv
import pickle
import zipfile
from pathlib import Path

import h5py
import numpy as np

VIDEO = (10, 7, 7, 512)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_feature_zip(path: Path, array: np.ndarray, decoys: bool = False, protocol: int = 4) -> np.ndarray:
    """``{id}.zip`` with the pickled array as a ``.pkl`` member; ``decoys`` adds an earlier ``.pkl`` member and a
    non-pickle member (the released loader keeps the last ``.pkl`` member)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        if decoys:
            archive.writestr("old.pkl", pickle.dumps(np.full((3, 128), -1.0)))
            archive.writestr("notes.txt", "not a feature")
        archive.writestr(f"{path.stem}.pkl", pickle.dumps(array, protocol=protocol))
    return array


def write_lines(path: Path, lines) -> list[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return list(lines)


def write_csv(path: Path, header, rows, delimiter: str = ",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def write_h5(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array)
    return array


def write_text_embeddings(root: Path, tokens_per_category: dict[str, int], fmt: str = "npy", dim: int = 768,
                          seed: int = 5) -> dict[str, np.ndarray]:
    """Token arrays ``(n_tokens, dim)`` per category, as ``<stem>.npy`` files or datasets of one ``.h5``."""
    from cmg_lib.data.official import embedding_stem

    g, folder = rng(seed), root / "text_embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {c: g.standard_normal((n, dim)).astype(np.float32) for c, n in tokens_per_category.items()}
    if fmt == "npy":
        for c, a in arrays.items():
            np.save(folder / f"{embedding_stem(c)}.npy", a)
    else:
        with h5py.File(folder / "prompts.h5", "w") as f:
            for c, a in arrays.items():
                f.create_dataset(c, data=a)
    return arrays


# ---------------------------------------------------------------- VGGSound-AVEL pre-training
PRETRAIN_CATEGORIES = ["dog barking", "playing acoustic guitar", "male speech, man speaking"]
# csv order deliberately mixes splits: 24k = train rows, 40k = train, then test, then val rows
PRETRAIN_ROWS = [("vid_val0", "dog barking", "val"), ("vid_tr0", "playing acoustic guitar", "train"),
                 ("vid_te0", "male speech, man speaking", "test"), ("vid_tr1", "dog barking", "train")]
PRETRAIN_AUDIO_ROWS = {"vid_val0": 10, "vid_tr0": 7, "vid_te0": 12, "vid_tr1": 10}


def write_pretrain(root: Path, seed: int = 1) -> dict:
    g = rng(seed)
    write_lines(root / "VggsoundAVEL40kCategories.txt", PRETRAIN_CATEGORIES)
    write_csv(root / "vggsound-avel40k.csv", ["video_id", "category", "split"], PRETRAIN_ROWS)
    write_csv(root / "vggsoundCategories2Prompts.csv", ["label", "prompt"],
              [(c, f"a sound of {c}, heard clearly") for c in PRETRAIN_CATEGORIES])
    audio, video = {}, {}
    for vid, _, _ in PRETRAIN_ROWS:
        audio[vid] = write_feature_zip(root / "vggsound40k/feature/audio/zip" / f"{vid}.zip",
                                       g.standard_normal((PRETRAIN_AUDIO_ROWS[vid], 128)), decoys=vid == "vid_tr0")
        video[vid] = write_feature_zip(root / "vggsound40k/feature/video/zip" / f"{vid}.zip",
                                       g.standard_normal(VIDEO).astype(np.float32))
    ids81 = ["k81_a", "k81_b"]
    write_csv(root / "video_name_vggsound81k_checked.csv", ["id"], [(f"{i}.mp4",) for i in ids81])
    for i in ids81:
        audio[i] = write_feature_zip(root / "audio/zip" / f"{i}.zip", g.standard_normal((10, 128)))
        video[i] = write_feature_zip(root / "video/zip" / f"{i}.zip", g.standard_normal(VIDEO).astype(np.float32))
    return {"audio": audio, "video": video}


# ---------------------------------------------------------------- AVE
AVE_N = 6
AVE_ORDERS = {"train": [0, 2, 3, 5], "val": [1], "test": [4]}
# (class, event segments) per global row; the other segments are background
AVE_EVENTS = [(5, range(2, 8)), (0, range(0, 4)), (27, range(0, 10)), (0, range(3, 10)), (12, range(1, 2)),
              (9, range(6, 10))]


def ave_segment_labels(events, n_classes: int) -> np.ndarray:
    labels = np.zeros((len(events), 10, n_classes + 1))
    labels[..., -1] = 1.0
    for row, (cls, segs) in enumerate(events):
        for s in segs:
            labels[row, s, cls], labels[row, s, -1] = 1.0, 0.0
    return labels


def write_ave(root: Path, seed: int = 2) -> dict:
    g, d = rng(seed), root / "AVE-ECCV18-master/data"
    out = {"video": write_h5(d / "visual_feature.h5", "avadataset", g.standard_normal((AVE_N, *VIDEO))),
           "audio": write_h5(d / "audio_feature.h5", "avadataset", g.standard_normal((AVE_N, 10, 128))),
           "labels": write_h5(d / "labels.h5", "avadataset", ave_segment_labels(AVE_EVENTS, 28))}
    for split, order in AVE_ORDERS.items():
        write_h5(d / f"{split}_order.h5", "order", np.asarray(order, dtype=np.int64))
    return out


# ---------------------------------------------------------------- AVVP
AVVP_CATEGORIES = ["Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce", "Fire_alarm",
                   "Chainsaw", "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle", "Vacuum_cleaner",
                   "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter", "Acoustic_guitar",
                   "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender", "Clapping"]
AVVP_AUDIO_ROWS = [("IgN7v8nWmx8_30_40", "0,5,0,6,9", "1,9,5,8,10",
                    "Speech,Speech,Violin_fiddle,Violin_fiddle,Violin_fiddle"),
                   ("abcdefghijk_0_10", "3", "5", "Dog")]
AVVP_VISUAL_ROWS = [("IgN7v8nWmx8_30_40", "2,2", "4,3", "Violin_fiddle,Violin_fiddle"),
                    ("zzzzzzzzzzz_5_15", "0", "10", "Car")]
AVVP_HEADER = ["filename", "onset", "offset", "event_labels"]


def write_avvp_features(root: Path, filenames, g, audio_rows: int = 10) -> dict:
    out = {}
    for name in filenames:
        vid = name[:11]
        out[vid] = (write_feature_zip(root / "AVVP/feature/audio/zip" / f"{vid}.zip",
                                      g.standard_normal((audio_rows, 128))),
                    write_feature_zip(root / "AVVP/feature/video/zip" / f"{vid}.zip",
                                      g.standard_normal(VIDEO).astype(np.float32)))
    return out


def write_avvp(root: Path, seed: int = 3) -> dict:
    d = root / "AVVP/data"
    write_lines(d / "AVVP_Categories.txt", AVVP_CATEGORIES)
    write_csv(d / "AVVP_eval_audio_checked_combined.csv", AVVP_HEADER, AVVP_AUDIO_ROWS, delimiter="\t")
    write_csv(d / "AVVP_eval_visual_checked_combined.csv", AVVP_HEADER, AVVP_VISUAL_ROWS, delimiter="\t")
    names = [r[0] for r in AVVP_AUDIO_ROWS] + [AVVP_VISUAL_ROWS[1][0]]
    return write_avvp_features(root, names, rng(seed))


# ---------------------------------------------------------------- AVE -> AVVP
AVE_AVVP_CATEGORIES = ["Speech", "Car", "Dog", "Cat", "Frying_(food)", "Chainsaw", "Banjo", "Violin_fiddle",
                       "Accordion", "Motorcycle", "Helicopter", "Acoustic_guitar"]
AVE_AVVP_ORDER = [4, 1]
AVE_AVVP_EVENTS = [(0, range(0, 10)), (7, range(2, 5)), (11, range(0, 3)), (3, range(5, 10)), (9, range(1, 6)),
                   (2, range(0, 1))]


def write_ave_avvp(root: Path, seed: int = 4) -> dict:
    out = write_ave(root)
    d = root / "AVE_AVVP"
    write_lines(d / "AVE_AVVP_Categories.txt", AVE_AVVP_CATEGORIES)
    out["ave_avvp_labels"] = write_h5(d / "ave_avvp_labels.h5", "avadataset", ave_segment_labels(AVE_AVVP_EVENTS, 12))
    write_h5(d / "ave_avvp_order.h5", "order", np.asarray(AVE_AVVP_ORDER, dtype=np.int64))
    write_csv(d / "AVE_AVVP_eval_audio_checked_combined.csv", AVVP_HEADER,
              [("abcdefghijk_0_10", "3,0", "5,2", "Dog,Car")], delimiter="\t")
    write_csv(d / "AVE_AVVP_eval_visual_checked_combined.csv", AVVP_HEADER,
              [("abcdefghijk_0_10", "4", "6", "Dog")], delimiter="\t")
    out["features"] = write_avvp_features(root, ["abcdefghijk_0_10"], rng(seed), audio_rows=12)
    return out


# ---------------------------------------------------------------- UCF-101 <-> VGGSound
UCF_NAMES = [f"UcfClass{k:02d}" for k in range(16)]
VGG_NAMES = [f"vggsound class {k:02d}" for k in range(16)]
UCF_ROWS = [("v_a", 7, 3), ("v_b", 12, 15), ("v_c", 10, 0)]  # (video_id, frames stored, class line)


def write_ucf(root: Path, seed: int = 6) -> dict:
    g = rng(seed)
    write_lines(root / "UCF101sameVGGSound.txt", UCF_NAMES)
    write_lines(root / "VGGSoundsameUCF101.txt", VGG_NAMES)
    videos, audios = {}, {}
    write_csv(root / "ucf2vggsound.csv", ["category", "video_id"],
              [(UCF_NAMES[c], vid) for vid, _, c in UCF_ROWS])
    for vid, t, _ in UCF_ROWS:
        videos[vid] = write_feature_zip(root / "UCF101/feature/video/zip" / f"{vid}.zip",
                                        g.standard_normal((t, 7, 7, 512)).astype(np.float32))
    vgg_rows = [("a_vgg", 5, "train", 10), ("b_vgg", 15, "test", 7)]
    write_csv(root / "vggsound2ucf.csv", ["video_id", "category", "split"],
              [(vid, VGG_NAMES[c], s) for vid, c, s, _ in vgg_rows])
    for vid, _, _, t in vgg_rows:
        audios[vid] = write_feature_zip(root / "vggsound40k/feature/audio/zip" / f"{vid}.zip",
                                        g.standard_normal((t, 128)), protocol=2)
    return {"video": videos, "audio": audios}


# ---------------------------------------------------------------- AVSBench-S4
AVS_ROWS = [("clipA", "u1", "dog", "train"), ("clipB", "u2", "baby_laughter", "train"),
            ("clipC", "u3", "dog", "val"), ("clipD", "u4", "ambulance_siren", "test")]
AVS_SIZE = (16, 16)
AVS_AUDIO_ROWS = {"clipA": 3, "clipB": 5, "clipC": 9, "clipD": 5}


def write_avs(root: Path, seed: int = 7) -> dict:
    from PIL import Image

    g = rng(seed)
    write_csv(root / "AVSBench_data/Single-source/s4_meta_data.csv", ["name", "uid", "category", "split"], AVS_ROWS)
    write_csv(root / "AVSBenchCategories2Prompts.csv", ["label", "prompt"],
              [(c, f"the sound of {c.replace('_', ' ')}") for c in ("dog", "baby_laughter", "ambulance_siren")])
    base = root / "AVSBench_data/Single-source/s4_data"
    frames, masks, audio = {}, {}, {}
    for name, _, cat, split in AVS_ROWS:
        fdir, mdir = base / "visual_frames" / split / cat / name, base / "gt_masks" / split / cat / name
        fdir.mkdir(parents=True)
        mdir.mkdir(parents=True)
        frames[name] = g.integers(0, 256, (5, *AVS_SIZE, 3), dtype=np.uint8)
        masks[name] = (g.random((5, *AVS_SIZE)) > 0.5).astype(np.uint8)
        for k in range(5):
            Image.fromarray(frames[name][k], "RGB").save(fdir / f"{name}_{k + 1}.png")
            if k == 0 or split != "train":  # S4 train annotates only the first frame
                Image.fromarray(masks[name][k] * 255, "L").save(mdir / f"{name}_{k + 1}.png")
        audio[name] = write_feature_zip(root / "AVSBench/feature/audio" / split / "zip" / cat / f"{name}.zip",
                                        g.standard_normal((AVS_AUDIO_ROWS[name], 128)).astype(np.float32))
    return {"frames": frames, "masks": masks, "audio": audio}
