"""cmg_lib.checkpoint: damaged or foreign files give one CheckpointError line naming the file."""
from __future__ import annotations

import collections
import os

import pytest
import torch

from cmg_lib.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from cmg_lib.config import preset
from cmg_lib.train import pretrain

from conftest import FakeDataset


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    cfg = preset("released_av", overrides=["train.batch_size=4"])
    out = tmp_path_factory.mktemp("ckpt")
    pretrain(cfg, FakeDataset(cfg, n=4), out_dir=out, steps=1, progress=False)
    return out / "final.pt"


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_damaged_files_name_themselves(good, tmp_path, damage):
    raw = good.read_bytes()
    path = tmp_path / f"{damage}.pt"
    path.write_bytes({"truncated": raw[: len(raw) // 2], "random": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and "weights_only=False" not in message


def test_a_pickled_global_is_refused_unread(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cmg-checkpoint/1", "x": collections.OrderedDict, "hook": os.getcwd}, path)
    with pytest.raises(CheckpointError, match="refused unread") as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and "weights_only=False" not in str(err.value)


def test_state_of_the_wrong_shape_names_the_tensor(good, tmp_path):
    ckpt = torch.load(good, weights_only=True)
    key = next(k for k in ckpt["model"] if k.endswith("embedding"))
    ckpt["model"][key] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=f"shapes differ for .*{key}"):
        load_checkpoint(tmp_path / "shape.pt")


def test_a_config_field_of_the_wrong_type_names_the_file(good, tmp_path):
    ckpt = torch.load(good, weights_only=True)
    ckpt["config"]["model"]["ema_form"] = "sideways"
    torch.save(ckpt, tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match=r"cfg\.pt has an invalid config: ema_form='sideways'"):
        load_checkpoint(tmp_path / "cfg.pt")
