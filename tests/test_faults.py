"""Faults and bad input (issue 15): each fails before the work, in one line naming what is wrong, and leaves what
was there unchanged."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest
import torch

import cmg_lib.checkpoint
import cmg_lib.cli
import cmg_lib.downstream.common
import cmg_lib.train
from cmg_lib import storage
from cmg_lib.checkpoint import load_checkpoint, read_checkpoint
from cmg_lib.presets import preset
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
@contextlib.contextmanager
def _held_by_another_thread(lock):
    """``lock`` held by a second thread of this process (a nested hold in one thread would pass through)."""
    holding, done = threading.Event(), threading.Event()

    def hold():
        with storage.locked(lock):
            holding.set()
            done.wait(60)
    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(30)
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_live_run_holds_its_out_folder(trained, tmp_path, monkeypatch):
    cfg, data, _ = trained
    _no_step(monkeypatch)
    with _held_by_another_thread(tmp_path / RUN_LOCK):
        with pytest.raises(storage.LockHeld) as err:
            pretrain(cfg, data, out_dir=tmp_path, steps=2, progress=False)
        assert str(err.value).startswith(f"out folder {tmp_path} is in use by another run (pid {os.getpid()} on ")
        assert sorted(os.listdir(tmp_path)) == [RUN_LOCK]           # nothing written, the holder's lock kept


def test_a_dead_runs_lock_file_does_not_hold_the_folder(trained, tmp_path):
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
    del ckpt["data"], ckpt["digest"]                                # as written before either existed
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
    (tmp_path / "t.pt").write_text("hello\n")                      # issue 26 item 2: was a KeyError traceback
    rc, err = _cli(["downstream", "ave", "--ckpt", str(tmp_path / "t.pt"), "--no-progress"], capsys)
    assert rc == 2 and err.startswith(f"error: {tmp_path / 't.pt'} is not a cmg checkpoint: it starts with b'hell'")


def test_cli_a_flipped_byte_is_one_error_line_before_any_data(trained, tmp_path, monkeypatch, capsys):
    """Issue 26 item 1: a checkpoint with one flipped bit in a tensor gave a result; now rc 2 and one line."""
    _, _, final = trained
    raw = bytearray(final.read_bytes())
    raw[len(raw) // 2] ^= 0x01                     # the middle of the file: inside a tensor's bytes
    (tmp_path / "flip.pt").write_bytes(bytes(raw))
    monkeypatch.setattr(cmg_lib.downstream.common, "load_dataset", lambda *a, **k: pytest.fail("data was read"))
    rc, err = _cli(["downstream", "ave", "--ckpt", str(tmp_path / "flip.pt"), "--no-progress"], capsys)
    assert rc == 2 and err.startswith(f"error: checkpoint {tmp_path / 'flip.pt'} is damaged: its content does not "
                                      "match the digest stored in it")


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


# ------------------------------------------------------------------------------------------ issue 26: disk full
def test_too_little_free_space_fails_before_the_first_step(tmp_path, monkeypatch):
    """Item 3: an out folder whose device cannot take the run's checkpoints is refused before any step, in one
    line with the numbers; nothing is written."""
    _no_step(monkeypatch)
    cfg = _cfg("train.ckpt_every=1")
    monkeypatch.setattr(cmg_lib.checkpoint.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(8 << 20, 0, 8 << 20))
    with pytest.raises(storage.NotWritableError) as err:
        pretrain(cfg, FakeDataset(cfg, n=8), out_dir=tmp_path, steps=4, progress=False)
    message = str(err.value)
    assert message.startswith(f"not enough free space in {tmp_path} for this run's checkpoints: 7 files of about ")
    assert message.endswith("8.0 MiB are free; free space, write fewer (train.ckpt_every, train.snapshot_steps, "
                            "train.epoch_ckpts) or choose another --out") and "\n" not in message
    assert os.listdir(tmp_path) == []


def test_planned_checkpoints_and_the_size_estimate(trained):
    cfg, _, final = trained
    tc = _cfg("train.ckpt_every=2", "train.snapshot_steps=5").train
    assert cmg_lib.checkpoint.planned_checkpoints(tc, 1, 7, 3) == [
        "epoch-0.pt", "epoch-1.pt", "final.pt", "step-0000002.pt", "step-0000004.pt", "step-0000005.pt",
        "step-0000006.pt"]
    model = load_checkpoint(final)
    main_opt, club_opt, _ = cmg_lib.train.make_optimizers(model, cfg)
    estimate, real = cmg_lib.checkpoint.checkpoint_bytes(model, main_opt, club_opt), final.stat().st_size
    assert real <= estimate <= 1.1 * real + (1 << 20)


TMPFS_RUN = """
import os, sys
sys.path.insert(0, {tests!r})
import torch
from conftest import FakeDataset
import cmg_lib.train
from cmg_lib import storage
from cmg_lib.checkpoint import read_checkpoint
from cmg_lib.presets import preset
out = sys.argv[1]
cfg = preset("released_av", overrides=["train.batch_size=4", "train.ckpt_every=1"])
data = FakeDataset(cfg, n=8)
for check in (True, False):
    if not check:          # as before the check: the disk fills at the second checkpoint
        cmg_lib.train.check_space = lambda *args: None
    try:
        cmg_lib.train.pretrain(cfg, data, out_dir=out, steps=4, progress=False)
    except storage.NotWritableError as err:
        print("ERROR", err)
    print("FILES", sorted(os.listdir(out)))
print("KEPT step", read_checkpoint(os.path.join(out, "step-0000001.pt"))["step"])
"""


def _tmpfs_available() -> bool:
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d; rmdir $d"
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0


@pytest.mark.skipif(not _tmpfs_available(), reason="needs `unshare -rm` to mount a private tmpfs")
def test_a_real_8_mib_tmpfs_is_refused_before_training_and_enospc_is_one_line(tmp_path):
    """Item 3 on a real device: an 8 MiB tmpfs (private mount namespace) as the out folder with a checkpoint every
    step. The free-space check refuses it before the first step; without the check, the second checkpoint
    (epoch-0.pt at step 2, saved before step-0000002.pt) meets ENOSPC, which is one line saying "no space left"
    (torch's writer turns it into "unexpected pos" unless storage keeps it), and the first checkpoint is intact."""
    script = tmp_path / "run.py"
    script.write_text(TMPFS_RUN.format(tests=os.path.dirname(__file__)))
    mount = tmp_path / "full"
    mount.mkdir()
    shell = f"mount -t tmpfs -o size=8m tmpfs {mount} && {sys.executable} {script} {mount}"
    run = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith(("ERROR", "FILES", "KEPT"))]
    assert run.returncode == 0, run.stderr[-2000:]
    assert lines[0].startswith(f"ERROR not enough free space in {mount} for this run's checkpoints: 7 files of ")
    assert lines[1] == "FILES []"
    assert lines[2].startswith(f"ERROR no space left to write {mount / 'epoch-0.pt'} (No space left on device; ")
    assert lines[3] == "FILES ['step-0000001.pt']" and lines[4] == "KEPT step 1"


# ------------------------------------------------------------------------------------------ issue 26: messages
def test_cli_busy_out_folder_is_refused_before_the_data_loads(tmp_path, monkeypatch, capsys):
    """Item 8: a second run into a busy folder was refused only after its data had loaded (~24 s)."""
    monkeypatch.setattr(cmg_lib.cli, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the lock"))
    with _held_by_another_thread(tmp_path / RUN_LOCK):
        rc, err = _cli(["pretrain", "--preset", "released_av", "--out", str(tmp_path), "--steps", "2"], capsys)
    assert rc == 2 and err.startswith(f"error: out folder {tmp_path} is in use by another run (pid {os.getpid()} on ")


def test_cli_holds_the_lock_while_the_data_loads_and_pretrain_takes_it_again(tmp_path, monkeypatch, capsys):
    seen = []

    def load(*args, **kwargs):
        seen.append(json.loads((tmp_path / RUN_LOCK).read_text())["pid"])     # held while loading
        cfg = _cfg()
        return FakeDataset(cfg, n=8)
    monkeypatch.setattr(cmg_lib.cli, "load_dataset", load)
    rc, _ = _cli(["pretrain", "--preset", "released_av", "--out", str(tmp_path), "--steps", "1",
                  "--set", "train.batch_size=4"], capsys)
    assert rc == 0 and seen == [os.getpid()]
    assert sorted(os.listdir(tmp_path)) == ["final.pt"]                  # the lock released at the end


def test_cli_device_cuda_without_cuda_says_so_before_the_data_loads(tmp_path, monkeypatch, capsys):
    """Item 8: was "Expected a torch.device with a specified index or an integer, but got:cuda"."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cmg_lib.cli, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    rc, err = _cli(["pretrain", "--preset", "released_av", "--out", str(tmp_path), "--device", "cuda"], capsys)
    assert rc == 2 and err.startswith("error: device 'cuda' (--device, train.device) asks for CUDA, which this "
                                      f"machine does not have (torch {torch.__version__}, ")
    assert err.endswith("GPUs visible); expected cpu here")
    rc, err = _cli(["pretrain", "--preset", "released_av", "--out", str(tmp_path), "--device", "gpu"], capsys)
    assert rc == 2 and err == ("error: device 'gpu' (--device, train.device) is not one this library trains on; "
                               "expected cpu, cuda or cuda:N")
    assert os.listdir(tmp_path) == []


def test_device_cuda_without_an_index_trains_on_the_current_gpu(monkeypatch):
    """``--device cuda`` failed on a CUDA machine too: ``torch.cuda.set_device`` needs an index."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    from cmg_lib.distributed import ProcessGroup
    assert cmg_lib.distributed.training_device("cuda", ProcessGroup()) == torch.device("cuda", 1)
    ddp_rank = ProcessGroup(rank=1, world=2, local_rank=3)
    assert cmg_lib.distributed.training_device("cuda", ddp_rank) == torch.device("cuda", 3)
    assert chosen == [torch.device("cuda", 1), torch.device("cuda", 3)]


def test_cli_lr_nan_says_finite_and_positive(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cmg_lib.cli, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    rc, err = _cli(["pretrain", "--preset", "released_av", "--out", str(tmp_path), "--set", "train.lr=nan"], capsys)
    assert rc == 2 and err == "error: train.lr must be finite and positive, got nan"
