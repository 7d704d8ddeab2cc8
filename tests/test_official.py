"""Readers of the officially released feature formats, on tiny files written by tests/fixtures_official.py."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import fixtures_official as fx
from cmg_lib.data.official import LAYOUT, embedding_stem, load_official
from cmg_lib.data.official.files import load_numpy_pickle
from cmg_lib.data.official.text import fit_tokens


def bg_only(n_classes):
    out = np.zeros((10, n_classes + 1), dtype=np.float32)
    out[:, -1] = 1
    return out


def hot(n_classes, events):
    """(10, C+1) from {class: segments}; background where no event."""
    out = np.zeros((10, n_classes + 1), dtype=np.float32)
    for cls, segs in events.items():
        out[list(segs), cls] = 1
    out[:, -1] = out[:, :-1].max(axis=1) == 0
    return out


@pytest.fixture(scope="module")
def pretrain_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    written = fx.write_pretrain(root)
    tokens = fx.write_text_embeddings(root, {"dog barking": 4, "playing acoustic guitar": 13,
                                             "male speech, man speaking": 10})
    return root, written, tokens


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ave")
    return root, fx.write_ave_avvp(root)


@pytest.fixture(scope="module")
def avvp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("avvp")
    return root, fx.write_avvp(root)


# ------------------------------------------------------------------------------------------- pickles
def test_numpy_pickles_of_every_protocol_load_unchanged():
    a = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    for protocol in (2, 3, 4, 5):
        out = load_numpy_pickle(pickle.dumps(a, protocol=protocol), "mem")
        assert out.dtype == np.float64 and np.array_equal(out, a)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.remove, (str(self.marker),))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "still_here"
    marker.write_text("x")
    with pytest.raises(pickle.UnpicklingError, match="posix.remove|os.remove|refusing"):
        load_numpy_pickle(pickle.dumps(_Evil(marker)), "evil.pkl")
    assert marker.exists()
    # the same payload inside a feature zip, read through a dataset
    fx.write_ucf(tmp_path)
    with zipfile.ZipFile(tmp_path / "UCF101/feature/video/zip/v_a.zip", "w") as z:
        z.writestr("v_a.pkl", pickle.dumps(_Evil(marker)))
    ds = load_official(tmp_path, "ucf_vgg", "ucf")
    with pytest.raises(pickle.UnpicklingError, match="v_a.zip"):
        ds[0]
    assert marker.exists()


def test_non_array_and_object_pickles_are_refused():
    with pytest.raises((pickle.UnpicklingError, ValueError)):
        load_numpy_pickle(pickle.dumps({"a": 1}), "dict.pkl")
    with pytest.raises((pickle.UnpicklingError, ValueError), match="obj.pkl"):
        load_numpy_pickle(pickle.dumps(np.array([1, "a"], dtype=object)), "obj.pkl")


# ------------------------------------------------------------------------------------------- pre-training
def test_pretrain_24k_is_train_rows_and_40k_is_train_test_val(pretrain_root):
    root, written, tokens = pretrain_root
    ds24, ds40 = load_official(root, "pretrain", "24k"), load_official(root, "pretrain", "40k")
    assert ds24.video_ids == ["vid_tr0", "vid_tr1"]
    assert ds40.video_ids == ["vid_tr0", "vid_tr1", "vid_te0", "vid_val0"]
    assert ds40.modalities == ("audio", "video", "text") and ds40.num_classes == 3
    assert ds40.feature_shapes == {"audio": (128,), "video": (7, 7, 512), "text": (768,)}
    assert [int(ds40[i]["label"]) for i in range(4)] == [1, 0, 2, 0]
    item = ds40[2]
    assert item["audio"].shape == (10, 128) and item["audio"].dtype == torch.float32
    assert item["video"].shape == (10, 7, 7, 512) and item["video"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and int(item["index"]) == 2
    # 12 stored rows -> first 10
    np.testing.assert_allclose(item["audio"].numpy(), written["audio"]["vid_te0"][:10], rtol=1e-6)
    np.testing.assert_allclose(item["video"].numpy(), written["video"]["vid_te0"])
    # text: 10 tokens kept as is
    np.testing.assert_allclose(item["text"].numpy(), tokens["male speech, man speaking"])


def test_pretrain_audio_padding_repeats_last_row_and_last_pkl_member_wins(pretrain_root):
    root, written, tokens = pretrain_root
    item = load_official(root, "pretrain", "24k")[0]           # vid_tr0: 7 rows, zip has decoy members
    stored = written["audio"]["vid_tr0"]
    audio = item["audio"].numpy()
    np.testing.assert_allclose(audio[:7], stored, rtol=1e-6)
    np.testing.assert_allclose(audio[7:], np.repeat(stored[-1:], 3, axis=0), rtol=1e-6)
    # text with 13 tokens is truncated to 10; with 4 tokens is zero-padded
    np.testing.assert_allclose(item["text"].numpy(), tokens["playing acoustic guitar"][:10])
    short = load_official(root, "pretrain", "24k")[1]["text"].numpy()
    np.testing.assert_allclose(short[:4], tokens["dog barking"])
    assert np.all(short[4:] == 0)


def test_pretrain_81k_is_audio_visual_without_labels(pretrain_root):
    root, written, _ = pretrain_root
    ds = load_official(root, "pretrain", "81k")
    assert ds.video_ids == ["k81_a", "k81_b"] and ds.modalities == ("audio", "video") and ds.num_classes == 0
    item = ds[1]
    assert set(item) == {"audio", "video", "index"}
    np.testing.assert_allclose(item["audio"].numpy(), written["audio"]["k81_b"], rtol=1e-6)


def test_preload_matches_lazy_reading_and_batches_collate(pretrain_root):
    root, _, _ = pretrain_root
    lazy = load_official(root, "pretrain", "40k", modalities=("audio", "text"))
    eager = load_official(root, "pretrain", "40k", modalities=("audio", "text"), preload=True)
    assert eager.modalities == ("audio", "text")
    for i in range(len(lazy)):
        a, b = lazy[i], eager[i]
        assert set(a) == set(b) == {"audio", "text", "label", "index"}
        assert all(torch.equal(a[k], b[k]) for k in a)
    eager[0]["text"].zero_()                                    # items are copies: the cache stays intact
    assert eager[0]["text"].abs().sum() > 0
    batch = next(iter(DataLoader(lazy, batch_size=4)))
    assert batch["audio"].shape == (4, 10, 128) and batch["text"].shape == (4, 10, 768)
    assert batch["label"].tolist() == [1, 0, 2, 0]


def test_text_is_left_out_by_default_without_embeddings_and_required_when_asked(tmp_path):
    fx.write_pretrain(tmp_path)
    assert load_official(tmp_path, "pretrain", "24k").modalities == ("audio", "video")
    with pytest.raises(FileNotFoundError, match="text_embeddings"):
        load_official(tmp_path, "pretrain", "24k", modalities=("audio", "text"))
    fx.write_text_embeddings(tmp_path, {"dog barking": 3})     # guitar prompt has no embedding
    with pytest.raises(FileNotFoundError, match="playing acoustic guitar"):
        load_official(tmp_path, "pretrain", "24k")


def test_text_embeddings_from_one_h5_and_width_check(tmp_path):
    fx.write_pretrain(tmp_path)
    tokens = fx.write_text_embeddings(tmp_path, {c: 5 for c in fx.PRETRAIN_CATEGORIES}, fmt="h5")
    ds = load_official(tmp_path, "pretrain", "24k", modalities=("text",))
    np.testing.assert_allclose(ds[1]["text"].numpy()[:5], tokens["dog barking"])
    with pytest.raises(ValueError, match=r"prompts.h5.*expected \(\*, 512\)"):
        load_official(tmp_path, "pretrain", "24k", modalities=("text",), text_dim=512)


def test_embedding_stem_and_token_fitting_known_answers():
    assert embedding_stem("male speech, man speaking") == "male_speech_man_speaking"
    assert embedding_stem(" Frying (food) ") == "Frying_food"
    out = fit_tokens(np.ones((3, 2), dtype=np.float64), slots=4)
    assert out.dtype == np.float32 and out.tolist() == [[1, 1], [1, 1], [1, 1], [0, 0]]
    assert fit_tokens(np.zeros((0, 2)), slots=2).tolist() == [[0, 0], [0, 0]]


# ------------------------------------------------------------------------------------------- AVE
def test_ave_splits_features_labels_and_clip_class(ave_root):
    root, written = ave_root
    expected_class = {"train": [5, 27, 0, 9], "val": [0], "test": [12]}
    for split, order in fx.AVE_ORDERS.items():
        ds = load_official(root, "ave", split)
        assert len(ds) == len(order) and ds.num_classes == 28 and ds.modalities == ("audio", "video")
        assert [int(ds[i]["label"]) for i in range(len(ds))] == expected_class[split]
    ds = load_official(root, "ave", "train")
    item = ds[1]                                                 # global row 2: class 27 on every segment
    assert item["video"].dtype == torch.float32 and item["video"].shape == (10, 7, 7, 512)
    np.testing.assert_allclose(item["audio"].numpy(), written["audio"][2].astype(np.float32))
    np.testing.assert_allclose(item["video"].numpy(), written["video"][2].astype(np.float32))
    assert torch.equal(item["segment_label/audio"], item["segment_label/video"])
    np.testing.assert_array_equal(ds[0]["segment_label/video"].numpy(), hot(28, {5: range(2, 8)}))
    np.testing.assert_array_equal(item["segment_label/audio"].numpy(), hot(28, {27: range(10)}))


def test_ave_avvp_train_uses_global_rows_and_12_classes(ave_root):
    root, written = ave_root
    ds = load_official(root, "ave_avvp", "train")
    assert ds.class_names == fx.AVE_AVVP_CATEGORIES and ds.num_classes == 12
    assert [int(ds[i]["label"]) for i in range(2)] == [9, 7]        # rows 4 and 1 of ave_avvp_labels.h5
    np.testing.assert_allclose(ds[0]["audio"].numpy(), written["audio"][4].astype(np.float32))
    np.testing.assert_array_equal(ds[1]["segment_label/audio"].numpy(), hot(12, {7: range(2, 5)}))


def test_ave_avvp_test_reads_avvp_style_files_with_12_classes(ave_root):
    root, written = ave_root
    ds = load_official(root, "ave_avvp", "test")
    assert len(ds) == 1 and ds.num_classes == 12
    item = ds[0]
    np.testing.assert_array_equal(item["segment_label/audio"].numpy(), hot(12, {2: [3, 4], 1: [0, 1]}))
    np.testing.assert_array_equal(item["segment_label/video"].numpy(), hot(12, {2: [4, 5]}))
    stored_audio = written["features"]["abcdefghijk"][0]                 # 12 rows -> 10
    np.testing.assert_allclose(item["audio"].numpy(), stored_audio[:10].astype(np.float32))


# ------------------------------------------------------------------------------------------- AVVP
def test_avvp_multi_event_or_logic_and_background(avvp_root):
    root, written = avvp_root
    for split in ("train", "test"):                                  # the released protocol: same videos
        ds = load_official(root, "avvp", split)
        assert ds.filenames == ["IgN7v8nWmx8_30_40", "abcdefghijk_0_10", "zzzzzzzzzzz_5_15"]
        assert ds.num_classes == 25 and ds.class_names[13] == "Violin_fiddle"
    a0 = ds[0]["segment_label/audio"].numpy()
    assert a0.shape == (10, 26)
    np.testing.assert_array_equal(np.flatnonzero(a0[:, 0]), [0, 5, 6, 7, 8])          # Speech 0-1, 5-9
    np.testing.assert_array_equal(np.flatnonzero(a0[:, 13]), [0, 1, 2, 3, 4, 6, 7, 9])  # Violin 0-5, 6-8, 9-10
    assert a0[:, -1].sum() == 0 and a0.sum() == 13                    # every segment has an event
    np.testing.assert_array_equal(ds[0]["segment_label/video"].numpy(), hot(25, {13: [2, 3]}))  # repeated class
    np.testing.assert_array_equal(ds[1]["segment_label/audio"].numpy(), hot(25, {3: [3, 4]}))
    np.testing.assert_array_equal(ds[1]["segment_label/video"].numpy(), bg_only(25))   # not in the visual file
    np.testing.assert_array_equal(ds[2]["segment_label/audio"].numpy(), bg_only(25))
    np.testing.assert_array_equal(ds[2]["segment_label/video"].numpy(), hot(25, {1: range(10)}))
    np.testing.assert_allclose(ds[1]["video"].numpy(), written["abcdefghijk"][1])        # zip = filename[:11]


def test_avvp_bad_annotations_raise(tmp_path):
    fx.write_avvp(tmp_path)
    path = tmp_path / "AVVP/data/AVVP_eval_visual_checked_combined.csv"
    fx.write_csv(path, fx.AVVP_HEADER, [("IgN7v8nWmx8_30_40", "2,3", "4", "Violin_fiddle")], delimiter="\t")
    with pytest.raises(ValueError, match="2 onsets, 1 offsets and 1 event labels"):
        load_official(tmp_path, "avvp", "test")
    fx.write_csv(path, fx.AVVP_HEADER, [("IgN7v8nWmx8_30_40", "2", "4", "Trumpet")], delimiter="\t")
    with pytest.raises(ValueError, match="Trumpet"):
        load_official(tmp_path, "avvp", "test")
    fx.write_csv(path, ["filename", "onset", "offset", "event_labels"], [("x", "1", "2", "Dog")], delimiter=",")
    with pytest.raises(ValueError, match="tab"):
        load_official(tmp_path, "avvp", "test")


# ------------------------------------------------------------------------------------------- UCF <-> VGGSound
def test_ucf_vgg_labels_follow_line_aligned_lists_and_video_is_fitted(tmp_path):
    written = fx.write_ucf(tmp_path)
    ucf = load_official(tmp_path, "ucf_vgg", "ucf")
    vgg = load_official(tmp_path, "ucf_vgg", "vggsound")
    assert ucf.modalities == ("video",) and vgg.modalities == ("audio",)
    assert ucf.num_classes == vgg.num_classes == 16
    assert ucf.class_names[15] == "UcfClass15" and ucf.paired_class_names[15] == "vggsound class 15"
    assert [int(ucf[i]["label"]) for i in range(3)] == [3, 15, 0]
    assert [int(vgg[i]["label"]) for i in range(2)] == [5, 15]
    v = ucf[0]["video"].numpy()                                       # 7 frames -> last one repeated
    np.testing.assert_allclose(v[:7], written["video"]["v_a"])
    np.testing.assert_allclose(v[7:], np.repeat(written["video"]["v_a"][-1:], 3, axis=0))
    np.testing.assert_allclose(ucf[1]["video"].numpy(), written["video"]["v_b"][:10])
    np.testing.assert_allclose(vgg[1]["audio"].numpy()[7:], np.repeat(written["audio"]["b_vgg"][-1:], 3, 0), rtol=1e-6)
    fx.write_lines(tmp_path / "UCF101sameVGGSound.txt", fx.UCF_NAMES[:15])
    with pytest.raises(ValueError, match="line-aligned"):
        load_official(tmp_path, "ucf_vgg", "ucf")


# ------------------------------------------------------------------------------------------- AVS
def test_avs_frames_masks_audio_and_text(tmp_path):
    written = fx.write_avs(tmp_path)
    tokens = fx.write_text_embeddings(tmp_path, {"dog": 2, "baby_laughter": 11, "ambulance_siren": 6})
    train = load_official(tmp_path, "avs", "train", image_size=(16, 16))
    assert train.class_names == ["ambulance_siren", "baby_laughter", "dog"] and train.modalities == ("audio", "text")
    item = train[0]
    assert item["frames"].shape == (5, 16, 16, 3) and item["frames"].dtype == torch.float32
    np.testing.assert_allclose(item["frames"].numpy(), written["frames"]["clipA"] / 255.0, rtol=1e-6)
    assert 0.0 <= item["frames"].min() and item["frames"].max() <= 1.0
    assert item["mask"].shape == (1, 16, 16)                             # train: first frame only
    np.testing.assert_array_equal(item["mask"].numpy(), written["masks"]["clipA"][:1])
    assert item["audio"].shape == (5, 128)                               # 3 rows -> 5
    np.testing.assert_allclose(item["audio"].numpy()[3:], np.repeat(written["audio"]["clipA"][-1:], 2, 0))
    assert int(item["label"]) == 2 and int(train[1]["label"]) == 1
    np.testing.assert_allclose(train[1]["text"].numpy(), tokens["baby_laughter"][:10])
    val = load_official(tmp_path, "avs", "val", image_size=(16, 16))[0]
    assert val["mask"].shape == (5, 16, 16) and val["audio"].shape == (5, 128)   # 9 rows -> 5
    np.testing.assert_array_equal(val["mask"].numpy(), written["masks"]["clipC"])
    np.testing.assert_allclose(val["audio"].numpy(), written["audio"]["clipC"][:5])
    assert int(val["label"]) == 2
    with pytest.raises(ValueError, match=r"clipA.*\(5, 224, 224, 3\)"):
        load_official(tmp_path, "avs", "train")[0]                       # default expects 224 x 224
    os.remove(tmp_path / "AVSBench_data/Single-source/s4_data/gt_masks/test/ambulance_siren/clipD/clipD_4.png")
    with pytest.raises(FileNotFoundError, match="clipD_4.png.*mask"):
        load_official(tmp_path, "avs", "test", image_size=(16, 16))[0]


# ------------------------------------------------------------------------------------------- errors
def test_unknown_subset_split_and_path_names_list_the_choices(tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        load_official(tmp_path, "avvp", "val")
    with pytest.raises(ValueError, match="unknown subset"):
        load_official(tmp_path, "kinetics", "train")
    with pytest.raises(ValueError, match="no official release"):
        load_official(tmp_path, "retrieval", "test")
    with pytest.raises(ValueError, match="unknown path name"):
        load_official(tmp_path, "ave", "train", paths={"ave_dir": "x"})
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_official(tmp_path / "nope", "ave", "train")
    assert "ave" in LAYOUT


def test_missing_files_name_the_file_and_its_content(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vggsound-avel40k\.csv.*category, video_id, split"):
        load_official(tmp_path, "pretrain", "40k")
    with pytest.raises(FileNotFoundError, match=r"train_order\.h5|visual_feature\.h5"):
        load_official(tmp_path, "ave", "train")
    fx.write_ucf(tmp_path)
    os.remove(tmp_path / "UCF101/feature/video/zip/v_b.zip")
    ds = load_official(tmp_path, "ucf_vgg", "ucf")                     # lazy: construction still works
    assert ds[0]["video"].shape == (10, 7, 7, 512)
    with pytest.raises(FileNotFoundError, match=r"v_b\.zip.*pickled numpy array"):
        ds[1]
    with pytest.raises(FileNotFoundError, match=r"v_b\.zip"):
        load_official(tmp_path, "ucf_vgg", "ucf", preload=True)       # eager: fails up front


def test_wrong_array_shape_in_a_zip_names_file_and_shapes(tmp_path):
    fx.write_ucf(tmp_path)
    fx.write_feature_zip(tmp_path / "UCF101/feature/video/zip/v_c.zip", np.zeros((10, 7, 7, 256), np.float32))
    with pytest.raises(ValueError, match=r"v_c\.zip::v_c\.pkl.*\(10, 7, 7, 256\), expected \(\*, 7, 7, 512\)"):
        load_official(tmp_path, "ucf_vgg", "ucf")[2]
    fx.write_feature_zip(tmp_path / "vggsound40k/feature/audio/zip/a_vgg.zip", np.zeros((0, 128)))
    with pytest.raises(ValueError, match="0 rows"):
        load_official(tmp_path, "ucf_vgg", "vggsound")[0]
    with zipfile.ZipFile(tmp_path / "vggsound40k/feature/audio/zip/b_vgg.zip", "w") as z:
        z.writestr("b_vgg.npy", b"")
    with pytest.raises(ValueError, match=r"b_vgg\.zip: no member whose name contains '\.pkl'"):
        load_official(tmp_path, "ucf_vgg", "vggsound")[1]


def test_wrong_h5_key_shape_and_order_are_reported(tmp_path):
    written = fx.write_ave(tmp_path)
    d = tmp_path / "AVE-ECCV18-master/data"
    fx.write_h5(d / "labels.h5", "labels", written["labels"])
    with pytest.raises(ValueError, match=r"labels\.h5: no dataset 'avadataset'.*\['labels'\]"):
        load_official(tmp_path, "ave", "train")
    fx.write_h5(d / "labels.h5", "avadataset", written["labels"])
    fx.write_h5(d / "audio_feature.h5", "avadataset", np.zeros((fx.AVE_N, 10, 64)))
    with pytest.raises(ValueError, match=r"audio_feature\.h5.*\(6, 10, 64\), expected \(\*, 10, 128\)"):
        load_official(tmp_path, "ave", "train")
    fx.write_h5(d / "audio_feature.h5", "avadataset", written["audio"])
    fx.write_h5(d / "val_order.h5", "order", np.asarray([6]))
    with pytest.raises(ValueError, match=r"val_order\.h5.*\[0, 5\]"):
        load_official(tmp_path, "ave", "val")
    assert len(load_official(tmp_path, "ave", "test")) == 1


def test_ave_dataset_pickles_works_in_worker_processes_and_stacks_whole(ave_root):
    from cmg_lib.data import as_tensors, load_dataset

    root, _ = ave_root
    ds = load_official(root, "ave", "train")
    first = ds[0]                                                        # opens the h5 handles in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0]["audio"], first["audio"])
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=1)))
    assert torch.equal(batch["video"][0], first["video"]) and batch["index"].tolist() == [0, 1, 2, 3]
    whole = as_tensors(ds)
    assert whole["label"].tolist() == [5, 27, 0, 9] and whole["segment_label/audio"].shape == (4, 10, 29)
    assert len(load_dataset(str(root), "ave", "train")) == 4


# ---------------------------------------------------------------- damaged files name themselves (issue 15, item 6)
def test_corrupt_zip_and_non_hdf5_files_name_themselves(tmp_path):
    fx.write_ucf(tmp_path)
    bad_zip = tmp_path / "UCF101/feature/video/zip/v_c.zip"
    bad_zip.write_bytes(bad_zip.read_bytes()[:40])                  # truncated download
    with pytest.raises(ValueError, match=r"v_c\.zip: not a readable zip archive") as err:
        load_official(tmp_path, "ucf_vgg", "ucf")[2]
    assert "\n" not in str(err.value)
    fx.write_ave(tmp_path)
    h5 = tmp_path / "AVE-ECCV18-master/data/audio_feature.h5"
    h5.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match=r"audio_feature\.h5: not a readable HDF5 file \(.*\); expected an HDF5"):
        load_official(tmp_path, "ave", "train")


def test_nan_features_name_file_and_row(tmp_path):
    written = fx.write_ave(tmp_path)
    video = written["video"].copy()
    video[3, 3, 0, 0, 7] = np.nan
    fx.write_h5(tmp_path / "AVE-ECCV18-master/data/visual_feature.h5", "avadataset", video)
    ds = load_official(tmp_path, "ave", "train")
    row = list(fx.AVE_ORDERS["train"]).index(3)
    with pytest.raises(ValueError, match=r"visual_feature\.h5: dataset 'avadataset': NaN or infinite values in row 3 "
                                         r"\(1 of 1 rows"):
        ds[row]
    fx.write_ucf(tmp_path)
    audio = np.ones((7, 128), np.float32)
    audio[5, 0] = np.inf
    fx.write_feature_zip(tmp_path / "vggsound40k/feature/audio/zip/a_vgg.zip", audio)
    with pytest.raises(ValueError, match=r"a_vgg\.zip::.*NaN or infinite values in row 5 \(1 of 7 rows"):
        load_official(tmp_path, "ucf_vgg", "vggsound")[0]


def test_all_background_ave_clips_are_refused_not_class_0(tmp_path):
    written = fx.write_ave(tmp_path)
    labels = written["labels"].copy()
    victim = int(fx.AVE_ORDERS["test"][0])
    labels[victim] = 0.0
    labels[victim, :, -1] = 1.0                                     # every segment background
    fx.write_h5(tmp_path / "AVE-ECCV18-master/data/labels.h5", "avadataset", labels)
    with pytest.raises(ValueError, match=rf"labels\.h5: 1 of {len(fx.AVE_ORDERS['test'])} clips of the split have "
                                         rf"only background segments \(first: row {victim}\)"):
        load_official(tmp_path, "ave", "test")


# ------------------------------------------------------------------------------------------- content hash
def _official_folder(root):
    fx.write_pretrain(root)
    fx.write_ave(root)
    return root


def test_content_hash_follows_the_files_not_the_folder(tmp_path, monkeypatch):
    """Issue 26 left-over: an official folder had no content hash. A copy elsewhere hashes the same; one changed
    byte, an added or a removed layout file changes it; a file outside the layout does not; digests of unchanged
    files come from the cache, a touched file is read again."""
    from cmg_lib.data.official import content
    from cmg_lib.data.official.layout import Paths

    monkeypatch.setenv("CMG_CACHE", str(tmp_path / "cache"))
    a = _official_folder(tmp_path / "a")
    first = content.content_hash(Paths(a), progress=False)
    labels = [label for label, _ in content.layout_files(Paths(a))]
    assert "ave/labels.h5" in labels and "vggsound_csv" in labels and len(labels) == len(set(labels)) >= 20
    import shutil
    shutil.copytree(a, tmp_path / "b")
    assert content.content_hash(Paths(tmp_path / "b"), progress=False) == first
    (a / "notes.txt").write_text("not part of the release")
    read = []
    monkeypatch.setattr(content, "file_digest", lambda path: read.append(path.name) or "x")
    assert content.content_hash(Paths(a), progress=False) == first and read == []      # all from the cache
    monkeypatch.undo()
    monkeypatch.setenv("CMG_CACHE", str(tmp_path / "cache"))
    zip_path = a / "vggsound40k/feature/video/zip/vid_tr0.zip"
    raw = bytearray(zip_path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    zip_path.write_bytes(bytes(raw))
    flipped = content.content_hash(Paths(a), progress=False)
    assert flipped != first
    (a / "AVE-ECCV18-master/data/extra.h5").write_bytes(b"x")
    added = content.content_hash(Paths(a), progress=False)
    assert added not in (first, flipped)
    (a / "AVE-ECCV18-master/data/extra.h5").unlink()
    assert content.content_hash(Paths(a), progress=False) == flipped


def test_official_data_identity_is_stored_and_checked_downstream(tmp_path, monkeypatch):
    """A pre-training split of an official folder carries the folder's content hash into the checkpoint's data
    identity; a downstream split of a copy passes the check, of a changed folder is refused naming the hash
    (or noted with allow_data_mismatch)."""
    import shutil

    from cmg_lib.checkpoint import data_identity
    from cmg_lib.presets import preset
    from cmg_lib.data.official import content
    from cmg_lib.data.official.layout import Paths
    from cmg_lib.downstream.common import Context, load_split

    monkeypatch.setenv("CMG_CACHE", str(tmp_path / "cache"))
    a = _official_folder(tmp_path / "a")
    cfg = preset("paper_av", overrides=[f"data.source={a}", "data.pretrain_size=24k"])
    identity = data_identity(cfg, load_official(a, "pretrain", "24k"))
    assert identity["hash"] == content.content_hash(Paths(a)) and identity["source"] == str(a)
    shutil.copytree(a, tmp_path / "copy")
    ctx = Context(model=None, data=str(tmp_path / "copy"), trained_on=identity)
    assert len(load_split(ctx, "ave", "train")) == 4
    with open(tmp_path / "copy" / "vggsound-avel40k.csv", "a") as f:       # another release: one more row
        f.write("vid_new,dog barking,train\n")
    changed = content.content_hash(Paths(tmp_path / "copy"))
    with pytest.raises(ValueError) as err:
        load_split(ctx, "ave", "test")
    assert str(err.value).startswith(f"ave/test: downstream data differs from the checkpoint's pre-training data "
                                     f"in hash ({identity['hash']!r} -> {changed!r})")
    ctx.allow_data_mismatch = True
    ctx.data = str(a)
    shutil.rmtree(a / "vggsound40k")                    # also a change: noted, not refused
    load_split(ctx, "ave", "test")
    assert len(ctx.notes) == 1 and "hash" in ctx.notes[0]
