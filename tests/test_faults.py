"""Faults and bad input (issue 15): each fails before the work, in one line naming what is wrong, and leaves what
was there unchanged."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch

import cmg_lib.cli
import cmg_lib.downstream.common
from cmg_lib import storage
from cmg_lib.checkpoint import load_checkpoint, read_checkpoint
from cmg_lib.config import preset
from cmg_lib.downstream import run_task
from cmg_lib.train import RUN_LOCK, Trainer, pretrain

from conftest import FakeDataset

DEAD_PID = 2 ** 22 + 12345          # above the default pid_max: no such process


def _cfg(*overrides):
    return preset("released_av", overrides=["train.batch_size=4", "train.log_every=2", *overrides])


def _no_step(monkeypatch):
    """Make any training step fail loudly: an error raised instead proves the check came first."""
    def step(self, batch):
        raise AssertionError("a training step ran before the input was checked")
    monkeypatch.setattr(Trainer, "step", step)


def _cli(argv, capsys):
    """Exit status and the ``error:`` lines of stderr (progress bars left out), joined by newlines."""
    rc = cmg_lib.cli.main(argv)
    err = capsys.readouterr().err
    return rc, "\n".join(line for line in err.splitlines() if line.startswith("error:"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run of released_av on FakeDataset carrying an AV-Digits-like identity (smoke, seed 0, hash 'h0')."""
    cfg = _cfg()
    data = FakeDataset(cfg, n=8)
    data.scale, data.seed, data.manifest_hash = "smoke", 0, "h0"
    out = tmp_path_factory.mktemp("run")
    pretrain(cfg, data, out_dir=out, steps=4, progress=False)
    return cfg, data, out / "final.pt"


# ------------------------------------------------------------------------------------------ 1. the out folder
def test_out_folder_that_is_a_file_fails_before_the_first_step(tmp_path, monkeypatch):
    _no_step(monkeypatch)
    cfg = _cfg()
    target = tmp_path / "taken"
    target.write_text("not a folder")
    for out, expected in ((target, "exists and is not a folder"), (target / "sub", "cannot write into folder")):
        with pytest.raises(storage.NotWritableError, match=expected) as err:
            pretrain(cfg, FakeDataset(cfg, n=8), out_dir=out, steps=2, progress=False)
        assert str(out) in str(err.value) and "\n" not in str(err.value)
    assert target.read_text() == "not a folder"


def test_out_folder_where_rename_is_refused_fails_before_the_first_step(tmp_path, monkeypatch):
    _no_step(monkeypatch)
    cfg = _cfg()

    def refuse(src, dst):
        raise PermissionError(1, "Operation not permitted", str(src))
    monkeypatch.setattr(storage.os, "replace", refuse)
    with pytest.raises(storage.NotWritableError, match="Operation not permitted") as err:
        pretrain(cfg, FakeDataset(cfg, n=8), out_dir=tmp_path / "out", steps=2, progress=False)
    assert str(tmp_path / "out") in str(err.value)
    assert os.listdir(tmp_path / "out") == []                      # the probe is gone too


def test_cli_bad_out_is_one_error_line_before_the_data_loads(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(cmg_lib.cli, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    rc, err = _cli(["pretrain", "--preset", "released_av", "--out", str(tmp_path / "file"), "--steps", "2"], capsys)
    assert rc == 2 and err == f"error: {tmp_path / 'file'} exists and is not a folder; expected a folder to write into"


# ------------------------------------------------------------------------------------------ 2. one run per folder
def test_a_live_run_holds_its_out_folder(trained, tmp_path, monkeypatch):
    cfg, data, _ = trained
    _no_step(monkeypatch)
    (tmp_path / RUN_LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(storage.LockHeld) as err:
        pretrain(cfg, data, out_dir=tmp_path, steps=2, progress=False)
    assert str(err.value).startswith(f"out folder {tmp_path} is in use by another run (pid {os.getpid()} on ")
    assert sorted(os.listdir(tmp_path)) == [RUN_LOCK]               # nothing written, the holder's lock kept


def test_a_dead_runs_lock_is_taken_over_and_released(trained, tmp_path):
    cfg, data, _ = trained
    (tmp_path / RUN_LOCK).write_text(json.dumps({"pid": DEAD_PID, "host": socket.gethostname()}))
    pretrain(cfg, data, out_dir=tmp_path, steps=2, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0.pt", "final.pt"]


def test_the_run_cache_renames_a_folder_without_the_run_lock(tmp_path):
    from cmg_lib.experiments.runs import pretrained

    cfg = _cfg("train.epoch_ckpts=false")
    data = FakeDataset(cfg, n=8)
    stale = tmp_path / "runs" / f"abc{storage.TMP_MARK}{DEAD_PID}"
    stale.mkdir(parents=True)
    os.utime(stale, (0, 0))
    final = pretrained(cfg, "fake", steps=2, cache_dir=tmp_path, dataset=data)
    assert sorted(os.listdir(final.parent)) == ["config.json", "final.pt", "history.json"]
    assert not stale.exists()                                       # a killed trainer's leftover is cleaned


# ------------------------------------------------------------------------------------------ 4. data identity
def test_checkpoint_stores_the_data_identity(trained):
    _, _, final = trained
    assert read_checkpoint(final)["data"] == {"source": "avdigits", "pretrain_size": "40k", "name": None,
                                              "scale": "smoke", "seed": 0, "hash": "h0"}
    assert load_checkpoint(final).data_identity["hash"] == "h0"


def _fake_loader(calls, manifest_hash="h0"):
    def load(data, subset, split, scale="default", seed=0, **kwargs):
        calls.append((subset, split, scale, seed))
        cfg = _cfg()
        d = FakeDataset(cfg, n=8)
        d.rows["label"] = torch.arange(8) % 2
        d.manifest_hash, d.num_classes = manifest_hash, 2
        return d
    return load


def test_downstream_defaults_to_the_checkpoints_build(trained, monkeypatch):
    _, _, final = trained
    calls = []
    monkeypatch.setattr(cmg_lib.downstream.common, "load_dataset", _fake_loader(calls))
    record = run_task("ave", epochs=1, ckpt=final, progress=False, code_cache=False)
    assert calls and all(scale == "smoke" and seed == 0 for _, _, scale, seed in calls)
    assert record["scale"] == "smoke" and record["data_seed"] == 0 and record["notes"] == []


def test_downstream_refuses_another_build_unless_asked(trained, monkeypatch):
    _, _, final = trained
    calls = []
    monkeypatch.setattr(cmg_lib.downstream.common, "load_dataset", _fake_loader(calls))
    with pytest.raises(ValueError, match=r"differs from the checkpoint's pre-training data in scale \('smoke' -> "
                                         r"'default'\)"):
        run_task("ave", epochs=1, ckpt=final, scale="default", progress=False)
    with pytest.raises(ValueError, match=r"seed \(0 -> 1\)"):
        run_task("ave", epochs=1, ckpt=final, data_seed=1, progress=False)
    assert calls == []                                              # refused before any data was read
    monkeypatch.setattr(cmg_lib.downstream.common, "load_dataset", _fake_loader(calls, "rebuilt"))
    with pytest.raises(ValueError, match=r"ave/train: .* hash \('h0' -> 'rebuilt'\)"):
        run_task("ave", epochs=1, ckpt=final, progress=False, code_cache=False)
    record = run_task("ave", epochs=1, ckpt=final, progress=False, code_cache=False, allow_data_mismatch=True)
    assert any("hash ('h0' -> 'rebuilt')" in n for n in record["notes"])


def test_old_checkpoints_without_data_identity_still_load(trained, tmp_path, monkeypatch):
    _, _, final = trained
    ckpt = torch.load(final, weights_only=True)
    del ckpt["data"]
    torch.save(ckpt, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").data_identity is None
    calls = []
    monkeypatch.setattr(cmg_lib.downstream.common, "load_dataset", _fake_loader(calls, "anything"))
    record = run_task("ave", epochs=1, ckpt=tmp_path / "old.pt", progress=False, code_cache=False)
    assert record["scale"] == "default" and {c[2] for c in calls} == {"default"}


def test_cli_data_mismatch_is_one_line_and_allowed_with_the_flag(trained, monkeypatch, capsys):
    _, _, final = trained
    monkeypatch.setattr(cmg_lib.downstream.common, "load_dataset", _fake_loader([]))
    rc, err = _cli(["downstream", "ave", "--epochs", "1", "--ckpt", str(final), "--scale", "full", "--no-progress"], capsys)
    assert rc == 2 and err.startswith("error: arguments: downstream data differs") and "\n" not in err
    rc, _ = _cli(["downstream", "ave", "--epochs", "1", "--ckpt", str(final), "--scale", "full", "--no-progress",
                  "--allow-data-mismatch", "--opt", "code_cache=false"], capsys)
    assert rc == 0


# ------------------------------------------------------------------------------------------ 5. step counts
@pytest.mark.parametrize("steps", [0, -5])
def test_step_counts_below_one_are_refused(steps, tmp_path, monkeypatch, capsys):
    _no_step(monkeypatch)
    cfg = _cfg()
    with pytest.raises(ValueError, match=f"steps must be a positive number of optimiser steps, got {steps}"):
        pretrain(cfg, FakeDataset(cfg, n=8), out_dir=tmp_path, steps=steps, progress=False)
    with pytest.raises(ValueError, match="train.max_steps must be a positive"):
        pretrain(_cfg("train.max_steps=0"), FakeDataset(cfg, n=8), progress=False)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(cmg_lib.cli, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    rc, err = _cli(["pretrain", "--preset", "released_av", "--out", str(tmp_path), "--steps", str(steps)], capsys)
    assert rc == 2 and err == f"error: --steps must be a positive number of optimiser steps, got {steps}"


def test_resume_for_no_more_steps_than_the_checkpoint_is_refused(trained, tmp_path, monkeypatch):
    cfg, data, final = trained
    _no_step(monkeypatch)
    for steps in (2, 4):
        with pytest.raises(ValueError, match=r"\(step 4\) for %d steps: .* must exceed 4" % steps) as err:
            pretrain(cfg, data, out_dir=tmp_path, steps=steps, resume=final, progress=False)
        assert str(final) in str(err.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("override, named", [("train.seed=7", "train.seed (43 -> 7)"),
                                             ("train.batch_size=2", "train.batch_size (4 -> 2)"),
                                             ("train.lr=0.01", "train.lr (0.001 -> 0.01)"),
                                             ("data.scale=full", "data.scale ('default' -> 'full')")])
def test_resume_with_changed_settings_names_them(trained, tmp_path, monkeypatch, override, named):
    cfg, data, final = trained
    _no_step(monkeypatch)
    before = final.read_bytes()
    with pytest.raises(ValueError, match="cannot resume") as err:
        pretrain(_cfg(override), data, out_dir=final.parent, steps=6, resume=final, progress=False)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert final.read_bytes() == before                             # the checkpoint is untouched


def test_resume_on_other_data_is_refused_and_allowed_changes_pass(trained, tmp_path):
    cfg, data, final = trained
    other = FakeDataset(cfg, n=8)
    other.scale, other.seed, other.manifest_hash = "smoke", 1, "h1"
    with pytest.raises(ValueError, match=r"data seed \(0 -> 1\), data hash \('h0' -> 'h1'\)"):
        pretrain(cfg, other, out_dir=tmp_path, steps=6, resume=final, progress=False)
    model, _ = pretrain(_cfg("train.log_every=3", "train.epochs=9"), data, out_dir=tmp_path, steps=6, resume=final,
                        progress=False)
    assert model.step == 6


# ------------------------------------------------------------------------------------------ 8. leftovers
def test_clean_stale_removes_only_dead_owners_entries(tmp_path):
    dead_file = tmp_path / f".final.pt{storage.TMP_MARK}{DEAD_PID}-abc"
    dead_dir = tmp_path / f"key{storage.TMP_MARK}{DEAD_PID}"
    live = tmp_path / f".final.pt{storage.TMP_MARK}{os.getpid()}-abc"
    young = tmp_path / f".x{storage.TMP_MARK}{DEAD_PID + 1}-abc"
    plain = tmp_path / "final.pt"
    for p in (dead_file, live, young, plain):
        p.write_text("x")
    dead_dir.mkdir()
    (dead_dir / "final.pt").write_text("x")
    for p in (dead_file, dead_dir, live, plain):
        os.utime(p, (0, 0))
    removed = storage.clean_stale(tmp_path)
    assert sorted(removed) == sorted([dead_file, dead_dir])
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, young.name, plain.name])
    assert storage.clean_stale(tmp_path, min_age=0) == [young]
    assert storage.clean_stale(tmp_path / "missing") == []


def test_atomic_writes_clean_their_folder(tmp_path):
    leftover = tmp_path / f".a.json{storage.TMP_MARK}{DEAD_PID}-zz"
    leftover.write_text("half")
    os.utime(leftover, (0, 0))
    storage.atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert os.listdir(tmp_path) == ["a.json"]
    assert oct((tmp_path / "a.json").stat().st_mode & 0o777) == "0o644"


# ------------------------------------------------------------------------------------------ 9. --results
def test_results_path_is_checked_before_the_task_runs(trained, tmp_path, monkeypatch, capsys):
    _, _, final = trained
    monkeypatch.setattr(cmg_lib.downstream.common, "load_dataset",
                        lambda *a, **k: pytest.fail("the task ran before --results was checked"))
    with pytest.raises(storage.NotWritableError, match=f"{tmp_path} is a folder; expected a file"):
        run_task("ave", epochs=1, ckpt=final, results_path=tmp_path, progress=False)
    (tmp_path / "file").write_text("x")
    rc, err = _cli(["downstream", "ave", "--ckpt", str(final), "--results", str(tmp_path / "file" / "r.jsonl"),
                    "--no-progress"], capsys)
    assert rc == 2 and err == f"error: {tmp_path / 'file'} exists and is not a folder; expected a folder to write into"


# ------------------------------------------------------------------------------------------ 3, 7. one line at the CLI
def test_cli_refused_pickle_and_bad_checkpoint_are_one_error_line(tmp_path, monkeypatch, capsys):
    import pickle

    from cmg_lib.data.official.files import load_numpy_pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    class HostileData(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return load_numpy_pickle(pickle.dumps(Evil()), "feature/x.zip::x.pkl")

    monkeypatch.setattr(cmg_lib.cli, "load_dataset", lambda *a, **k: HostileData())
    rc, err = _cli(["pretrain", "--preset", "released_av", "--out", str(tmp_path / "o"), "--steps", "1",
                    "--set", "train.batch_size=4"], capsys)
    assert rc == 2 and err.startswith("error: feature/x.zip::x.pkl: refusing to unpickle global posix.system")
    assert "\n" not in err
    (tmp_path / "empty.pt").write_bytes(b"")
    rc, err = _cli(["downstream", "ave", "--ckpt", str(tmp_path / "empty.pt"), "--no-progress"], capsys)
    assert rc == 2 and err == (f"error: checkpoint {tmp_path / 'empty.pt'} is empty (0 bytes): a write that never "
                               "finished?")


def test_cli_passes_layout_paths_to_the_loader(trained, monkeypatch, capsys):
    _, _, final = trained
    seen = []

    def load(data, subset, split, **kwargs):
        seen.append(kwargs.get("paths"))
        return _fake_loader([])(data, subset, split)
    monkeypatch.setattr(cmg_lib.downstream.common, "load_dataset", load)
    folder = final.parent
    rc, _ = _cli(["downstream", "ave", "--epochs", "1", "--ckpt", str(final), "--data", str(folder), "--no-progress",
                  "--paths", "ave=/mnt/ave/data", "--paths", "text_embeddings=te", "--opt", "code_cache=false"], capsys)
    assert rc == 0 and seen and all(p == {"ave": "/mnt/ave/data", "text_embeddings": "te"} for p in seen)
