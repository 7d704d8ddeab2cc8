"""Pre-training loop: one step per preset, exact resume, checkpoint round trip and atomic writes, CLI."""
import os

import pytest
import torch

import cmg_lib.cli
import cmg_lib.precision
from cmg_lib.config import RECIPES
from cmg_lib.presets import preset
from cmg_lib.model import build_model
from cmg_lib.checkpoint import load_checkpoint, read_checkpoint, seal, snapshot_name
from cmg_lib.train import EpochSampler, Trainer, pretrain

RELEASED = sorted(RECIPES["released"].values())



def _small(name="released_avt", *overrides):
    return preset(name, overrides=["train.batch_size=4", "train.log_every=2", "model.reset_window=3", *overrides])


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", RELEASED)
def test_one_training_step_per_preset_changes_the_parameters(name, make_dataset):
    cfg = _small(name)
    torch.manual_seed(cfg.train.seed)
    fresh = build_model(cfg)
    model, history = pretrain(cfg, make_dataset(cfg, n=8), steps=1, progress=False)
    assert model.step == 1 and len(history) == 1
    entry = history[0]
    for m in cfg.model.modality_names:
        assert {f"recon/{m}", f"commit/{m}", f"mi/{m}", f"perplexity/{m}", f"active_codes/{m}"} <= set(entry)
        assert 1.0 <= entry[f"perplexity/{m}"] <= entry[f"active_codes/{m}"] + 1e-6
    assert {"cpc", "cmcm", "loss", "club_nll", "shared_fraction", "mode_agreement", "lr"} <= set(entry)
    assert 0.0 <= entry["shared_fraction"] <= 1.0 and 0.0 <= entry["mode_agreement"] <= 1.0
    changed = [not torch.equal(p, q) for p, q in zip(fresh.main_parameters(), model.main_parameters())]
    assert all(changed[:4]) and sum(changed) > 0.9 * len(changed)
    assert not torch.equal(fresh.codebook.embedding, model.codebook.embedding)      # the EMA ran


def test_resume_continues_exactly(tmp_path, make_dataset):
    cfg = _small("released_avt", "train.ckpt_every=2")
    data = make_dataset(cfg, n=12)                       # 3 batches per epoch: resume mid-epoch, cross epochs
    straight, hist_a = pretrain(cfg, data, out_dir=tmp_path / "a", steps=8, progress=False)
    pretrain(cfg, data, out_dir=tmp_path / "b", steps=4, progress=False)
    assert sorted(os.listdir(tmp_path / "b")) == ["epoch-0.pt", "final.pt", "step-0000002.pt", "step-0000004.pt"]
    resumed, hist_b = pretrain(cfg, data, out_dir=tmp_path / "c", steps=8, resume=tmp_path / "b" / "epoch-0.pt",
                               progress=False)             # step 3: inside a logging window (log_every=2)
    assert _states_equal(straight, resumed)
    assert torch.equal(straight.codebook.embedding, resumed.codebook.embedding)
    assert hist_a == hist_b
    other, _ = pretrain(_small("released_avt", "train.seed=7"), data, steps=2, progress=False)
    assert not torch.equal(other.codebook.embedding, straight.codebook.embedding)


class _Killed(RuntimeError):
    """Stands for a kill -9 between two steps: the run stops, what it wrote stays."""


def _killed_after(monkeypatch, steps: int) -> None:
    """The next run stops before its step ``steps + 1`` (counted from the start of that run)."""
    real, done = Trainer.step, []

    def step(self, batch):
        if len(done) == steps:
            raise _Killed(f"killed after {steps} steps")
        done.append(1)
        return real(self, batch)
    monkeypatch.setattr(Trainer, "step", step)


def test_a_run_killed_and_resumed_twice_writes_the_uninterrupted_runs_bytes(tmp_path, make_dataset, monkeypatch):
    """Issue 26 item 4. 3 batches per epoch, a checkpoint every step, a logging window of 3 steps that straddles
    epochs. Killed after step 2, resumed from step-0000002.pt (mid-epoch) and killed after step 5 (the first
    resume crossed the epoch boundary at step 3), resumed from step-0000005.pt to step 8: every file (each step,
    each epoch and final.pt) equals the uninterrupted run's byte for byte, the loader generator's state included
    (stored as it was when the epoch's data order was drawn)."""
    cfg = _small("released_av", "train.ckpt_every=1", "train.log_every=3")
    data = make_dataset(cfg, n=12)
    pretrain(cfg, data, out_dir=tmp_path / "a", steps=8, progress=False)
    out = tmp_path / "b"
    for resume, stop in ((None, 2), (out / "step-0000002.pt", 3), (out / "step-0000005.pt", None)):
        monkeypatch.undo()
        if stop is not None:
            _killed_after(monkeypatch, stop)
        try:
            pretrain(cfg, data, out_dir=out, steps=8, resume=resume, progress=False)
        except _Killed:
            pass
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(out)) and "epoch-1.pt" in names and "step-0000008.pt" in names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (out / name).read_bytes(), name


def test_checkpoint_round_trip(tmp_path, make_dataset, make_batch):
    cfg = _small("released_vt", "train.milestones=[1]", "train.lr_gamma=0.5")
    model, history = pretrain(cfg, make_dataset(cfg, n=8), out_dir=tmp_path, steps=4, progress=False)
    assert [h["lr"] for h in history] == [cfg.train.lr, cfg.train.lr * 0.5]      # MultiStepLR per epoch
    ckpt = read_checkpoint(tmp_path / "final.pt")
    assert ckpt["format"] == "cmg-checkpoint/1" and ckpt["step"] == 4 and ckpt["epoch"] == 2
    loaded = load_checkpoint(tmp_path / "final.pt")
    assert not loaded.training and loaded.step == 4 and loaded.metrics == history[-1]
    assert loaded.config == cfg and _states_equal(model, loaded)
    batch = make_batch(cfg, batch=2)
    model.eval()
    for m in cfg.model.modality_names:
        assert torch.equal(model.quantize(batch[m], m)[0], loaded.quantize(batch[m], m)[0])


def test_load_checkpoint_errors_name_the_problem(tmp_path, make_dataset):
    cfg = _small("released_av")
    pretrain(cfg, make_dataset(cfg, n=4), out_dir=tmp_path, steps=1, progress=False)
    ckpt = torch.load(tmp_path / "final.pt", weights_only=True)
    broken = dict(ckpt)
    del broken["optimizers"]
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="optimizers"):
        load_checkpoint(tmp_path / "missing.pt")
    unknown = dict(ckpt, config={**ckpt["config"], "model": {**ckpt["config"]["model"], "warp_factor": 9}})
    torch.save(seal(unknown), tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="warp_factor"):
        load_checkpoint(tmp_path / "unknown.pt")
    torch.save(dict(ckpt, format="other/2"), tmp_path / "format.pt")
    with pytest.raises(ValueError, match="cmg-checkpoint/1"):
        load_checkpoint(tmp_path / "format.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_save_leaves_no_partial_file(tmp_path, make_dataset, monkeypatch):
    cfg = _small("released_av")
    data = make_dataset(cfg, n=4)
    pretrain(cfg, data, out_dir=tmp_path, steps=1, progress=False)
    good = (tmp_path / "final.pt").read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        pretrain(cfg, data, out_dir=tmp_path, steps=1, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0.pt", "final.pt"]  # from the first run; no .tmp left behind
    assert (tmp_path / "final.pt").read_bytes() == good                  # the old file is intact


def test_bad_settings_raise(make_dataset, monkeypatch):
    monkeypatch.setattr(cmg_lib.precision, "cpu_has_native_bf16", lambda: False)
    cfg = _small("released_av", "train.precision=bf16")
    with pytest.raises(ValueError, match="native bf16"):
        pretrain(cfg, make_dataset(cfg, n=4), steps=1, progress=False)
    cfg = _small("released_av")
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretrain(cfg, make_dataset(cfg, n=3), steps=1, progress=False)


def test_epoch_sampler_shards_one_permutation():
    full = EpochSampler(10, seed=3)
    full.start(epoch=1)
    order = list(full)
    shards = [EpochSampler(10, seed=3, rank=r, world=2) for r in range(2)]
    for s in shards:
        s.start(epoch=1)
    assert sorted(order) == list(range(10))
    assert list(shards[0]) == order[0::2] and list(shards[1]) == order[1::2]
    shards[1].start(epoch=1, skip=2)
    assert list(shards[1]) == order[1::2][2:] and len(shards[1]) == 3
    full.start(epoch=2)
    assert list(full) != order


def test_cli_pretrain_writes_a_checkpoint(tmp_path, make_dataset, monkeypatch, capsys):
    parser = cmg_lib.cli.build_parser()

    def main(argv):
        args = parser.parse_args(argv)
        return args.func(args)

    calls = {}

    def fake_load(data, subset, split, scale="default", **kwargs):
        calls.update(data=data, subset=subset, split=split, scale=scale)
        return make_dataset(preset("released_av"), n=8)

    monkeypatch.setattr(cmg_lib.cli, "load_dataset", fake_load)
    rc = main(["pretrain", "--preset", "released_av", "--method", "dcid+cmcm", "--out", str(tmp_path), "--steps", "2",
               "--seed", "5", "--set", "train.batch_size=4", "--scale", "smoke", "--pretrain-size", "24k"])
    assert rc == 0
    assert calls == {"data": "avdigits", "subset": "pretrain", "split": "24k", "scale": "smoke"}
    assert str(tmp_path / "final.pt") in capsys.readouterr().out
    loaded = load_checkpoint(tmp_path / "final.pt")
    assert loaded.config.method == "dcid+cmcm" and loaded.config.train.seed == 5 and loaded.step == 2


def test_snapshot_steps_without_epoch_checkpoints_equal_shorter_runs(tmp_path, make_dataset):
    """What the book's explorer relies on: the snapshot at step s of a longer run IS an s-step run."""
    cfg = _small("released_avt", "train.snapshot_steps=[2,3]", "train.epoch_ckpts=false")
    data = make_dataset(cfg, n=12)
    pretrain(cfg, data, out_dir=tmp_path / "long", steps=5, progress=False)
    assert sorted(os.listdir(tmp_path / "long")) == ["final.pt", snapshot_name(2), snapshot_name(3)]
    short, _ = pretrain(cfg, data, steps=3, progress=False)
    assert _states_equal(load_checkpoint(tmp_path / "long" / snapshot_name(3)), short)
    with pytest.raises(ValueError, match="snapshot_steps"):
        _small("released_avt", "train.snapshot_steps=[0]")


def test_bf16_autocast_training_on_cpu(make_dataset, monkeypatch):
    """precision=bf16 trains under autocast on the CPU (forced on here: a CPU without native bf16 emulates it): the
    CLUB estimators, trained between the forward and the mi terms outside autocast, get float32 inputs, every
    logged term is finite and near the float32 run's, and the codebook stays float32."""
    import cmg_lib.train
    monkeypatch.setattr(cmg_lib.precision, "cpu_has_native_bf16", lambda: True)
    cfg = _small("released_av", "model.dropout=0.0")
    data = make_dataset(cfg, n=8)
    ref, ref_history = pretrain(cfg, data, steps=2, progress=False)
    model, history = pretrain(cfg.override("train.precision=bf16"), data, steps=2, progress=False)
    assert model.codebook.embedding.dtype == torch.float32
    for key, value in ref_history[-1].items():
        if key.startswith(("recon/", "commit/", "cpc", "cmcm", "loss")):
            assert abs(history[-1][key] - value) <= 0.05 * abs(value) + 0.05, key


def test_float64_model_trains(make_dataset):
    """The released code runs in float64; a model moved to double trains end to end in double (the released-
    equivalent timing of benchmarks/pretrain_step.py relies on this), and its first loss equals float32's."""
    from cmg_lib.train import make_optimizers, train_step
    cfg = _small("released_avt", "model.dropout=0.0")
    batch = {k: v for k, v in make_dataset(cfg, n=4).rows.items() if k != "label"}
    torch.manual_seed(0)
    single = build_model(cfg)
    double = build_model(cfg)
    double.load_state_dict(single.state_dict())
    double = double.double()
    losses = []
    for model, dtype in ((single, torch.float32), (double, torch.float64)):
        main_opt, club_opt, _ = make_optimizers(model, cfg)
        torch.manual_seed(1)
        losses.append(train_step(model, {k: v.to(dtype) for k, v in batch.items()}, main_opt, club_opt, cfg)["loss"])
        assert model.codebook.embedding.dtype == dtype
        assert all(p.dtype == dtype and torch.isfinite(p).all() for p in model.parameters())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


# FCID's coarse CLUB estimators have the fine ones' layer shapes at the book's widths but other inputs; MICU has none
@pytest.mark.parametrize("name, method, overrides", [
    ("released_avt", "unicode", ()),
    ("released_av", "unicode", ("model.hidden_dim=96", "model.n_heads=4", "model.club_negatives=all")),
    ("book_av", "fcid", ()), ("book_av", "micu", ())])
def test_fast_step_equals_the_reference_step(name, method, overrides, make_batch):
    """The library's two computations of a step (``train.fast``): batched CLUB with its written-out backward,
    batched mi terms and the decoder's constant-code shortcut, against the plain reference (one estimator at a
    time through autograd, the code concatenated at every map position), from the same state and RNG: the first
    step's terms and every gradient (main: the backward; CLUB: the last inner step) up to float tolerance, and the
    terms of two more steps (Adam amplifies float noise in near-zero gradients, so later parameters are compared
    only through the terms)."""
    from cmg_lib.train import make_optimizers, train_step
    base = preset(name, method, overrides=["train.batch_size=8", *overrides])
    assert base.train.fast                                           # the fast path is the default
    batches = [make_batch(base, 8, seed=s) for s in range(3)]
    runs = {}
    for fast in (True, False):
        cfg = base.override(f"train.fast={fast}")
        torch.manual_seed(0)
        model = build_model(cfg)
        main_opt, club_opt, _ = make_optimizers(model, cfg)
        torch.manual_seed(1)
        terms = [train_step(model, batches[0], main_opt, club_opt, cfg)]
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        terms += [train_step(model, b, main_opt, club_opt, cfg) for b in batches[1:]]
        runs[fast] = (terms, grads)
    (fast_terms, fast_grads), (ref_terms, ref_grads) = runs[True], runs[False]
    for i, (a, b) in enumerate(zip(fast_terms, ref_terms)):
        tol = 1e-5 if i == 0 else 1e-3
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol * max(1.0, abs(b[k])) for k in a), (i, a, b)
    assert fast_grads.keys() == ref_grads.keys()
    for k, g in fast_grads.items():
        assert torch.allclose(g, ref_grads[k], rtol=1e-4, atol=1e-7 + 1e-5 * float(ref_grads[k].abs().max())), k
