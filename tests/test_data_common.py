"""Shared data plumbing: array hashing, the array-backed Dataset, collate, dispatch."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from cmg_lib.data import as_tensors, collate, common, load_dataset


def test_hash_arrays_is_content_and_order_sensitive_only_where_it_should_be():
    a = {"x": np.arange(6, dtype=np.int32), "y": np.ones((2, 3), np.float16)}
    h = common.hash_arrays(a).hexdigest()
    assert h == common.hash_arrays({"y": a["y"].copy(), "x": a["x"].copy()}).hexdigest()   # key order irrelevant
    changed = {**a, "x": a["x"].copy()}
    changed["x"][3] += 1
    assert common.hash_arrays(changed).hexdigest() != h
    assert common.hash_arrays({**a, "x": a["x"].astype(np.int64)}).hexdigest() != h      # dtype counts
    assert common.hash_arrays({**a, "y": a["y"].reshape(3, 2)}).hexdigest() != h          # shape counts


def _toy():
    arrays = {"audio": np.arange(5 * 2 * 3, dtype=np.float16).reshape(5, 2, 3), "label": np.arange(5, dtype=np.int8)}
    return common.ArrayDataset.from_arrays(arrays, name="toy", modalities=("audio",), feature_shapes={"audio": (3,)},
                                           num_classes=5, class_names=list("abcde"))


def test_array_dataset_items_follow_the_batch_contract():
    ds = _toy()
    assert len(ds) == 5 and ds.name == "toy" and ds.num_classes == 5 and ds.feature_shapes == {"audio": (3,)}
    item = ds[2]
    assert item["audio"].dtype == torch.float32 and item["label"].dtype == torch.int64
    assert item["audio"].tolist() == [[12, 13, 14], [15, 16, 17]] and int(item["label"]) == 2
    assert int(ds[-1]["label"]) == 4
    with pytest.raises(IndexError):
        ds[5]


def test_from_arrays_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="share their first axis"):
        common.ArrayDataset.from_arrays({"a": np.zeros(3), "b": np.zeros(4)}, name="x", modalities=(),
                                        feature_shapes={}, num_classes=1, class_names=["a"])


def test_collate_and_as_tensors_agree_with_items():
    ds = _toy()
    batch = collate([ds[i] for i in range(5)])
    whole = as_tensors(ds, chunk=2)
    assert set(batch) == set(whole) == {"audio", "label"}
    for k in batch:
        assert torch.equal(batch[k], whole[k])
    assert whole["audio"].shape == (5, 2, 3)
    with pytest.raises(ValueError, match="keys"):
        collate([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_dataloader_uses_batched_fetch():
    loader = torch.utils.data.DataLoader(_toy(), batch_size=2, shuffle=False)
    first = next(iter(loader))
    assert first["label"].tolist() == [0, 1] and first["audio"].shape == (2, 2, 3)


def test_to_tensors_rejects_non_numeric():
    with pytest.raises(ValueError, match="numeric"):
        common.to_tensors({"s": np.array(["a"])})


def test_load_dataset_dispatch(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="avdigits"):
        load_dataset("no-such-thing", "ave", "train")
    calls = []
    fake = types.ModuleType("cmg_lib.data.official")
    fake.load_official = lambda root, subset, split, paths=None: calls.append((root, subset, split, paths)) or "dataset"
    monkeypatch.setitem(sys.modules, "cmg_lib.data.official", fake)
    assert load_dataset(str(tmp_path), "ave", "test") == "dataset"
    assert load_dataset(str(tmp_path), "ave", "test", paths={"ave": "/mnt/ave"}) == "dataset"
    assert calls == [(str(tmp_path), "ave", "test", None), (str(tmp_path), "ave", "test", {"ave": "/mnt/ave"})]
    with pytest.raises(ValueError, match="AV-Digits has none"):
        load_dataset("avdigits", "ave", "test", paths={"ave": "/mnt/ave"})


def test_split_tensors_shares_an_avdigits_split_across_dataset_objects(avdigits_smoke):
    """Two loads of one AV-Digits split materialise it once per process (its build hash names the content); a
    dataset without a content identity keeps its own tables; the tables are the whole split, as as_tensors."""
    first = load_dataset("avdigits", "ave", "test", scale="smoke", cache_dir=avdigits_smoke)
    again = load_dataset("avdigits", "ave", "test", scale="smoke", cache_dir=avdigits_smoke)
    assert first is not again and common.split_tensors(first) is common.split_tensors(again)
    whole = as_tensors(first)
    assert all(torch.equal(whole[k], common.split_tensors(first)[k]) for k in whole)
    other = load_dataset("avdigits", "ave", "val", scale="smoke", cache_dir=avdigits_smoke)
    assert common.split_tensors(other) is not common.split_tensors(first)
    attrs = dict(name="toy", modalities=("audio",), feature_shapes={"audio": (1,)}, num_classes=2,
                 class_names=["a", "b"])
    plain = common.ArrayDataset.from_arrays({"audio": np.arange(6.0)[:, None]}, **attrs)
    twin = common.ArrayDataset.from_arrays({"audio": np.arange(6.0)[:, None]}, **attrs)
    assert common.split_tensors(plain) is common.split_tensors(plain)
    assert common.split_tensors(plain) is not common.split_tensors(twin)
