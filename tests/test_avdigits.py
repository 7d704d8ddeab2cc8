"""AV-Digits: determinism, label consistency, unseen test voices/images, masks, shapes, atomic builds."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

from cmg_lib.data import as_tensors, load_dataset, schema
from cmg_lib.data.avdigits import audio, build, sample, vision
from cmg_lib.data.avdigits.store import Store, one_hot_with_background


def _load(root, subset, split):
    return load_dataset("avdigits", subset, split, scale="smoke", seed=0, cache_dir=root)


def _store(root):
    return Store.open(build.dataset_dir("smoke", 0, root))


def _manifest(root, seed=0):
    return json.loads((build.dataset_dir("smoke", seed, root) / "manifest.json").read_text())


# ------------------------------------------------------------------------------------------------ unit pieces
def test_one_hot_with_background_hand_values():
    got = one_hot_with_background(np.array([[2, -1, 0]]), num_classes=3)
    assert got.tolist() == [[[0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]]
    with pytest.raises(ValueError, match="segment classes"):
        one_hot_with_background(np.array([3]), num_classes=3)


def test_mel_filterbank_and_segment_features_shapes():
    fb = audio.mel_filterbank()
    assert fb.shape == (64, 201) and fb.min() >= 0 and (fb.sum(1) > 0).all()
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)[None]
    feats = audio.segment_features(tone)
    assert feats.shape == (1, 128) and feats.dtype == np.float32
    centres = np.argmax(fb, axis=1) * 8000 / 200                      # Hz of each band's peak
    assert abs(centres[np.argmax(feats[0, :64])] - 1000) < 120        # the loudest band is the 1 kHz one


def test_sequences_layouts_are_consistent():
    from cmg_lib.data.avdigits import sequences

    rng = np.random.default_rng(0)
    ev = sequences.sample_events(rng, 500, "ave")
    for track in (ev["audio"], ev["video"]):
        assert ((track == -1) | (track == ev["label"][:, None])).all()     # one event class per clip
        assert ((track >= 0).sum(1) >= 2).all()
    full = sequences.sample_events(rng, 20, "full")
    assert (full["audio"] == full["label"][:, None]).all()
    with pytest.raises(ValueError, match="layout"):
        sequences.sample_events(rng, 3, "nope")


def test_paste_draws_max_of_layers():
    canvas = np.full((2, 4, 4), 0.1, np.float32)
    sprites = np.array([[[255, 0], [0, 255]]], np.uint8)
    vision.paste(canvas, sprites, np.array([0, -1]), np.array([1, 0]), np.array([2, 0]), np.array([0.5, 1.0]))
    assert canvas[0, 1, 2] == 0.5 and canvas[0, 2, 3] == 0.5 and canvas[0, 1, 3] == pytest.approx(0.1)
    assert np.allclose(canvas[1], 0.1)                                  # index -1 draws nothing


# ------------------------------------------------------------------------------------------------ the build
def test_determinism_same_seed_same_hash_other_seed_differs(avdigits_smoke, tmp_path):
    again = build.ensure_built("smoke", 0, tmp_path)
    assert json.loads((again / "manifest.json").read_text())["hash"] == _manifest(avdigits_smoke)["hash"]
    build.ensure_built("smoke", 1, tmp_path)
    assert _manifest(tmp_path, 1)["hash"] != _manifest(avdigits_smoke)["hash"]


def test_rebuild_with_valid_cache_is_instant(avdigits_smoke):
    t0 = time.perf_counter()
    build.ensure_built("smoke", 0, avdigits_smoke)
    assert time.perf_counter() - t0 < 1.0


def test_crash_mid_build_leaves_nothing_and_next_build_redoes_it(tmp_path, monkeypatch):
    def crashing(folder, *args):
        np.savez(folder / "banks.npz", x=np.zeros(3))
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(build, "_build_into", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build.ensure_built("smoke", 5, tmp_path)
    assert list(tmp_path.iterdir()) == []                               # no folder, no manifest, no temp dir

    calls = []

    def working(folder, *args):
        calls.append(1)
        np.savez(folder / "banks.npz", x=np.zeros(1))
        (folder / "manifest.json").write_text(json.dumps({"format": build.FORMAT, "files": {"banks.npz": "h"}}))

    monkeypatch.setattr(build, "_build_into", working)
    folder = build.ensure_built("smoke", 5, tmp_path)
    assert calls == [1] and build.is_complete(folder)
    build.ensure_built("smoke", 5, tmp_path)
    assert calls == [1]                                                 # complete: not rebuilt
    (folder / "banks.npz").unlink()                                     # a listed file missing -> incomplete
    assert not build.is_complete(folder)


def test_manifest_records_sources_sizes_and_credits(avdigits_smoke):
    m = _manifest(avdigits_smoke)
    assert m["scale"] == "smoke" and m["seed"] == 0 and len(m["hash"]) == 64
    assert m["sizes"]["pretrain/24k"] == 240 and m["sizes"]["pretrain/81k"] == 810
    assert m["sources"]["images"]["main"]["name"] in ("mnist", "sklearn-digits")
    assert "CC BY" in m["sources"]["images"]["main"]["credit"]
    assert set(m["timings"]) >= {"audio_bank_s", "text_bank_s", "total_s"}


@pytest.mark.parametrize("subset", sorted(schema.SUBSETS))
def test_shapes_and_dtypes_of_every_split(avdigits_smoke, subset):
    for split in schema.SUBSETS[subset]:
        ds = _load(avdigits_smoke, subset, split)
        assert len(ds) == build.split_size("smoke", subset, split)
        assert ds.num_classes == 10 and ds.class_names[7] == "seven"
        assert ds.feature_shapes == {"audio": (128,), "video": (5, 5, 64), "text": (384,)}
        item = ds[len(ds) - 1]
        t = 5 if subset == "avs" else 10
        assert item["audio"].shape == (t, 128) and item["video"].shape == (t, 5, 5, 64)
        assert item["text"].shape == (10, 384)
        assert item["label"].dtype == torch.int64 and item["label"].shape == ()
        assert int(item["index"]) == len(ds) - 1
        for key, value in item.items():
            if key not in ("label", "index"):
                assert value.dtype == torch.float32 and torch.isfinite(value).all(), key
        if subset == "avs":
            assert item["frames"].shape == (5, 40, 40, 1) and item["mask"].shape == (5, 40, 40)
            assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
            assert 0 <= item["frames"].min() and item["frames"].max() <= 1
        else:
            for m in ("audio", "video", "text"):
                assert item[schema.segment_key(m)].shape == (10, 11)


def test_unknown_subset_or_split_lists_choices(avdigits_smoke):
    with pytest.raises(ValueError, match="expected one of"):
        _load(avdigits_smoke, "nope", "train")
    with pytest.raises(ValueError, match="'train', 'val', 'test'"):
        _load(avdigits_smoke, "ave", "dev")
    with pytest.raises(ValueError, match="scale"):
        build.ensure_built("huge", 0, avdigits_smoke)


def test_segment_labels_agree_with_clip_label_and_banks(avdigits_smoke):
    st = _store(avdigits_smoke)
    b = st.bank
    for subset, split in (("ave", "train"), ("ave", "test"), ("retrieval", "test"), ("ucf_vgg", "ucf")):
        data = as_tensors(_load(avdigits_smoke, subset, split))
        c = st.clips(subset, split)
        for m in ("audio", "video"):
            seg = data[schema.segment_key(m)]
            assert torch.equal(seg.sum(-1), torch.ones(seg.shape[:2]))           # one-hot per segment
            event = seg[..., :10].sum(-1) > 0
            assert torch.equal(seg[..., 10] == 1, ~event)                          # background exactly elsewhere
            cls = seg[..., :10].argmax(-1)
            assert (cls[event] == data["label"][:, None].expand_as(cls)[event]).all()
            assert event.any(1).all()
        # the banks realise the labels: spoken word, written digit, sentence digit
        a_word = b["audio_word"][c["a_idx"]]
        assert (a_word[c["a_class"] >= 0] == c["a_class"][c["a_class"] >= 0]).all()
        assert ((a_word[c["a_class"] < 0] < 0) | (a_word[c["a_class"] < 0] >= 10)).all()
        shown = c["v_digit"] >= 0
        assert (shown == (c["v_class"] >= 0)).all()
        assert (b["image_label"][c["v_digit"][shown]] == c["v_class"][shown]).all()
        assert (b["text_digits"][c["t_idx"], 0] == c["label"]).all()
        tok = data[schema.segment_key("text")]
        has_digit_token = tok[..., :10].sum((1, 2)) > 0
        assert has_digit_token.all()                                              # the event has its own tokens
        assert (tok[..., :10].argmax(-1)[tok[..., :10].sum(-1) > 0] >= 0).all()


def test_test_splits_use_unseen_voices_and_images(avdigits_smoke):
    st = _store(avdigits_smoke)
    b = st.bank

    def used(subset, split):
        c = st.clips(subset, split)
        a = c["a_idx"].reshape(-1)
        voices = set(b["audio_voice"][a][b["audio_voice"][a] >= 0].tolist())
        img = c["s_image"] if subset == "avs" else c["v_digit"]
        images = set(img[img >= 0].tolist())
        return voices, images

    train_v, train_i = set(), set()
    for subset, split in (("pretrain", "81k"), ("ave", "train"), ("avvp", "train"), ("avs", "train"),
                          ("retrieval", "train"), ("ucf_vgg", "vggsound")):
        v, i = used(subset, split)
        train_v |= v
        train_i |= i
    for subset, split in (("ave", "test"), ("ave", "val"), ("avvp", "test"), ("ave_avvp", "test"), ("avs", "test"),
                          ("retrieval", "test"), ("ucf_vgg", "ucf")):
        v, i = used(subset, split)
        assert v and i
        assert not (v & train_v), f"{subset}/{split} shares voices with training"
        assert not (i & train_i), f"{subset}/{split} shares images with training"
    v, i = used("ucf_vgg", "ucf")
    assert (b["image_pool"][sorted(i)] == build.POOLS.index("b")).all()


def test_avs_masks_cover_exactly_the_sounding_digit(avdigits_smoke):
    st = _store(avdigits_smoke)
    b = st.bank
    c = st.clips("avs", "test")
    ds = _load(avdigits_smoke, "avs", "test")
    for i in range(3):
        item = ds[i]
        s = sample("avs", "test", i, scale="smoke", cache_dir=avdigits_smoke)
        assert int(item["label"]) == s["label"] == s["digit_classes"][0]
        # independent re-derivation with plain slicing: the sounding sprite's ink (> half) at its place
        for f in range(5):
            expect = np.zeros((40, 40), bool)
            q = int(c["s_quadrant"][i, 0])
            y, x = (q // 2) * 20 + int(c["s_y"][i, f, 0]), (q % 2) * 20 + int(c["s_x"][i, f, 0])
            expect[y: y + 18, x: x + 18] = b["image_small"][c["s_image"][i, 0]] > 127.5
            assert np.array_equal(item["mask"][f].numpy().astype(bool), expect)
            others = s["digit_masks"][f, 1:][s["digit_present"][1:]]
            assert not (others & expect).any()                                 # no other digit inside the mask
            assert expect.sum() > 20
            assert (item["frames"][f, ..., 0].numpy()[expect] >= 0.37).all()   # the digit is drawn there


def test_pretrain_sizes_are_nested(avdigits_smoke):
    small = as_tensors(_load(avdigits_smoke, "pretrain", "24k"))
    big = _load(avdigits_smoke, "pretrain", "81k")
    assert len(small["label"]) == 240 and len(big) == 810
    part = big.rows(np.arange(240))
    assert np.array_equal(part["audio"], small["audio"].numpy())
    assert np.allclose(part["video"], small["video"].numpy())


def test_sample_waveform_is_what_was_featurised(avdigits_smoke):
    st = _store(avdigits_smoke)
    s = sample("ave", "train", 4, scale="smoke", cache_dir=avdigits_smoke)
    assert s["waveform"].shape == (160000,) and s["waveform"].dtype == np.float32
    assert s["frames"].shape == (10, 40, 40) and s["frames"].dtype == np.uint8
    assert s["class_name"] in s["sentence"]
    raw = audio.segment_features(s["waveform"].reshape(10, 16000))
    stored = st.bank["audio_feat"][st.clips("ave", "train")["a_idx"][4]].astype(np.float32)
    recomputed = (raw - st.bank["audio_feat_mean"]) / st.bank["audio_feat_std"]
    assert np.abs(recomputed - stored).max() < 0.05                           # float16 storage tolerance
    spoken = [w for w, lab in zip(s["spoken"], s["audio_labels"]) if lab >= 0]
    assert spoken and all(w == s["class_name"] for w in spoken)


def test_raw_audio_is_informative_and_unaligned_transfer_is_not(avdigits_smoke):
    from cmg_lib.data import probes

    train, test = _load(avdigits_smoke, "ave", "train"), _load(avdigits_smoke, "ave", "test")
    within = probes.within_modality(train, test, "audio")
    assert within["accuracy"] > within["majority"] + 0.1
    cross = probes.cross_modality(train, test, "audio", "video")
    assert cross["source_accuracy"] > 0.3
    assert cross["accuracy"] < cross["source_accuracy"] - 0.15


def test_split_video_features_are_saved_once_and_reused_by_a_new_process(avdigits_smoke):
    folder = build.dataset_dir("smoke", 0, avdigits_smoke)
    first = Store(folder)                           # a fresh instance: what a new process would open
    feats = first.split_video_features("ave", "val")
    saved = sorted((folder / "derived").glob("video-ave_val-*.npy"))
    assert [p.name for p in saved] == [f"video-ave_val-{len(feats)}.npy"]
    assert not list((folder / "derived").glob(".*tmp*"))
    second = Store(folder)
    second.video_features = None                    # the second process must not run the CNN again
    again = second.split_video_features("ave", "val")
    assert isinstance(again, np.memmap) or isinstance(again.base, np.memmap)
    np.testing.assert_array_equal(np.asarray(again), feats)
    del again, second                               # (truncating a still-mapped file in place would be SIGBUS)
    # a truncated file is ignored and recomputed, not trusted
    broken = saved[0].with_suffix(".broken")
    broken.write_bytes(saved[0].read_bytes()[:200])
    os.replace(broken, saved[0])
    third = Store(folder)
    np.testing.assert_array_equal(third.split_video_features("ave", "val"), feats)


def test_segment_agreement_matches_the_loaded_segment_labels(avdigits_smoke):
    from cmg_lib.data.avdigits import segment_agreement
    shares = segment_agreement("ave", "val", scale="smoke", cache_dir=avdigits_smoke)
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    data = load_dataset("avdigits", "ave", "val", scale="smoke", cache_dir=avdigits_smoke)
    batch = as_tensors(data)
    a = batch[schema.segment_key("audio")].argmax(-1).numpy()           # background = class 10 (last)
    v = batch[schema.segment_key("video")].argmax(-1).numpy()
    bg = data.num_classes
    assert shares["both, same event"] == pytest.approx(((a < bg) & (a == v)).mean())
    assert shares["audio only"] == pytest.approx(((a < bg) & (v == bg)).mean())
    assert shares["neither"] == pytest.approx(((a == bg) & (v == bg)).mean())
    assert 0 < shares["both, same event"] < 1


def test_linear_probe_separates_gaussian_blobs_with_minibatches():
    from cmg_lib.data.probes import _LinearProbe
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 20)) * 3
    y = rng.integers(0, 3, 6000)
    x = centers[y] + rng.standard_normal((6000, 20))
    probe = _LinearProbe(x[:5000], y[:5000], seed=0, steps=100, batch=512)      # minibatch path: 5000 > 512
    assert (probe.predict(x[5000:]) == y[5000:]).mean() > 0.97
    shuffled = _LinearProbe(x[:5000], rng.permutation(y[:5000]), seed=0, steps=100, batch=512)
    assert (shuffled.predict(x[5000:]) == y[5000:]).mean() < 0.5                 # no signal -> near chance (1/3)
