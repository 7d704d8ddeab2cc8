"""cmg_lib.checkpoint: damaged or foreign files give one CheckpointError line naming the file; the stored content
digest catches a flipped byte anywhere in the tensors."""
from __future__ import annotations

import collections
import os
import struct
import zipfile

import pytest
import torch

from cmg_lib.checkpoint import CheckpointError, content_digest, load_checkpoint, read_checkpoint, seal
from cmg_lib.presets import preset
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
    torch.save(seal(ckpt), tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=f"shapes differ for .*{key}"):
        load_checkpoint(tmp_path / "shape.pt")


def test_a_config_field_of_the_wrong_type_names_the_file(good, tmp_path):
    ckpt = torch.load(good, weights_only=True)
    ckpt["config"]["model"]["ema_form"] = "sideways"
    torch.save(seal(ckpt), tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match=r"cfg\.pt has an invalid config: ema_form='sideways'"):
        load_checkpoint(tmp_path / "cfg.pt")


def _tensor_records(path):
    """``(name, offset of the middle byte)`` of every tensor record (``archive/data/<n>``) of a torch.save file."""
    raw = path.read_bytes()
    out = []
    for info in zipfile.ZipFile(path).infolist():
        if "/data/" in info.filename and "/.data/" not in info.filename and info.file_size:
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
            out.append((info.filename, info.header_offset + 30 + name_len + extra_len + info.file_size // 2))
    return out


def test_a_flipped_byte_in_a_tensor_is_refused_naming_the_file(good, tmp_path):
    """One bit flipped in the middle of a tensor record (19 records spread over the ~475 of the file: model,
    optimiser moments, RNG states) loads without any torch error, so only the digest can see it."""
    raw = good.read_bytes()
    records = _tensor_records(good)
    assert len(records) > 100
    path = tmp_path / "flipped.pt"
    for name, offset in records[:: len(records) // 19]:
        damaged = bytearray(raw)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(err.value).startswith(f"checkpoint {path} is damaged: its content does not match the digest "
                                         "stored in it (sha256:"), name
        assert "\n" not in str(err.value)
    path.write_bytes(raw)
    assert load_checkpoint(path).step == 1                      # the same bytes unflipped load


def test_the_digest_covers_values_and_survives_a_round_trip(good):
    ckpt = read_checkpoint(good)
    assert ckpt["digest"] == content_digest(ckpt)                # equal after torch.save / torch.load
    assert content_digest({**ckpt, "step": 2}) != ckpt["digest"]
    model = dict(ckpt["model"])
    key = next(iter(model))
    model[key] = model[key].clone().reshape(-1)                 # same bytes, another shape
    assert content_digest({**ckpt, "model": model}) != ckpt["digest"]


@pytest.mark.parametrize("content", [b"hello\n", b"PK\x03\x04 not really a zip"])
def test_a_file_that_is_not_a_torch_archive_is_one_line(tmp_path, content):
    path = tmp_path / "t.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    if content.startswith(b"hello"):
        assert str(err.value) == (f"{path} is not a cmg checkpoint: it starts with b'hell', expected a torch.save "
                                  "archive (a zip file, b'PK\\x03\\x04')")
