"""Results cache (pretrained / downstream), tables and budgets of cmg_lib.experiments, on toy trainers and records."""
from __future__ import annotations

import json
import math
import os
import threading
import time

import pytest

from cmg_lib.presets import ABLATIONS, ablation_overrides, preset
from cmg_lib.downstream import direction_label
from cmg_lib.experiments import (aggregate, budget, checkpoint_key, downstream, experiment_config, load_results,
                                 paper_table, pretrained, results_table, run_history, run_key, side_by_side,
                                 snapshot, table1_grid)
from cmg_lib.usage import code_usage


class CountingTrainer:
    """Stands in for cmg_lib.train.pretrain: writes final.pt and returns a small history."""

    def __init__(self, fail: bool = False, sleep: float = 0.0):
        self.calls, self.fail, self.sleep = 0, fail, sleep

    def __call__(self, config, dataset, out_dir, steps, progress):
        self.calls += 1
        time.sleep(self.sleep)
        (open(os.path.join(out_dir, "final.pt"), "wb")).write(b"weights")
        if self.fail:
            raise RuntimeError("boom in the middle of training")
        return None, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


@pytest.fixture
def cfg():
    return preset("released_av", "unicode")


def test_pretrained_trains_once_then_reuses(cfg, tmp_path):
    trainer = CountingTrainer()
    first = pretrained(cfg, "avdigits", steps=5, cache_dir=tmp_path, trainer=trainer, dataset=[])
    second = pretrained(cfg, "avdigits", steps=5, cache_dir=tmp_path, trainer=trainer, dataset=[])
    assert first == second and first.read_bytes() == b"weights"
    assert trainer.calls == 1
    assert first.parent.name == run_key(cfg, "avdigits", 5)[1]
    stored = json.loads((first.parent / "config.json").read_text())
    assert stored["train"]["max_steps"] == 5 and stored["data"]["source"] == "avdigits"
    assert [h["loss"] for h in run_history(first)] == [2.0, 1.5]


def test_crash_leaves_no_entry_and_releases_lock(cfg, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        pretrained(cfg, steps=5, cache_dir=tmp_path, trainer=CountingTrainer(fail=True), dataset=[])
    runs = tmp_path / "runs"
    assert list(runs.iterdir()) == []          # no run dir, no temp dir, no lock
    ok = CountingTrainer()
    path = pretrained(cfg, steps=5, cache_dir=tmp_path, trainer=ok, dataset=[])
    assert ok.calls == 1 and path.exists()


def test_trainer_that_writes_no_checkpoint_is_an_error(cfg, tmp_path):
    def lazy(config, dataset, out_dir, steps, progress):
        return None, []
    with pytest.raises(RuntimeError, match="without writing"):
        pretrained(cfg, steps=3, cache_dir=tmp_path, trainer=lazy, dataset=[])
    assert list((tmp_path / "runs").iterdir()) == []


def test_key_changes_with_any_config_field(cfg):
    base = run_key(cfg)[1]
    changed = [cfg.override("model.beta=0.3"), cfg.override("train.seed=1"), cfg.override("data.scale=smoke"),
               cfg.override("model.ema_form=joint"), cfg.override("model.codebook_size=32")]
    keys = {run_key(c)[1] for c in changed}
    assert base not in keys and len(keys) == len(changed)
    assert run_key(cfg, steps=10)[1] != run_key(cfg, steps=11)[1]
    assert run_key(cfg, data="/data/cmg")[1] != base
    assert run_key(cfg)[1] == run_key(preset("released_av", "unicode"))[1]     # deterministic


def test_two_threads_train_the_same_config_once(cfg, tmp_path):
    trainer = CountingTrainer(sleep=0.5)
    paths = []

    def work():
        paths.append(pretrained(cfg, steps=7, cache_dir=tmp_path, trainer=trainer, dataset=[], lock_timeout=30))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trainer.calls == 1 and paths[0] == paths[1]


def test_stale_lock_of_dead_process_is_taken_over(cfg, tmp_path):
    key = run_key(cfg, steps=4)[1]
    runs = tmp_path / "runs"
    runs.mkdir()
    import socket
    (runs / f"{key}.lock").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname()}))
    path = pretrained(cfg, steps=4, cache_dir=tmp_path, trainer=CountingTrainer(), dataset=[], lock_timeout=5)
    assert path.exists() and not (runs / f"{key}.lock").exists()


def test_downstream_caches_by_task_direction_seed_protocol(cfg, tmp_path):
    ckpt = pretrained(cfg, steps=2, cache_dir=tmp_path, trainer=CountingTrainer(), dataset=[])
    calls = []

    def runner(task, ckpt, **kw):
        calls.append((task, kw))
        return {"metric": 10.0 + kw["seed"], "metrics": {"acc": 0.5}}

    r1 = downstream("ave", ckpt, train_modality="video", test_modality="audio", seed=0, cache_dir=tmp_path,
                    runner=runner)
    r2 = downstream("ave", ckpt, train_modality="video", test_modality="audio", seed=0, cache_dir=tmp_path,
                    runner=runner)
    assert r1 == r2 and len(calls) == 1
    assert r1["direction"] == "V→A" and r1["metric"] == 10.0 and r1["pretrain"]["method"] == "unicode"
    downstream("ave", ckpt, train_modality="audio", test_modality="video", seed=0, cache_dir=tmp_path, runner=runner)
    downstream("ave", ckpt, train_modality="video", test_modality="audio", seed=1, cache_dir=tmp_path, runner=runner)
    downstream("ave", ckpt, train_modality="video", test_modality="audio", seed=0, protocol="released",
               cache_dir=tmp_path, runner=runner)
    assert len(calls) == 4 and calls[-1][1]["protocol"] == "released" and "protocol" not in calls[0][1]
    assert len(load_results(tmp_path, task="ave")) == 4


def test_downstream_crash_leaves_no_record(cfg, tmp_path):
    ckpt = pretrained(cfg, steps=2, cache_dir=tmp_path, trainer=CountingTrainer(), dataset=[])

    def broken(task, ckpt, **kw):
        raise ValueError("head diverged")
    with pytest.raises(ValueError):
        downstream("avvp", ckpt, train_modality="audio", test_modality="video", cache_dir=tmp_path, runner=broken)
    assert load_results(tmp_path) == []


def _toy_records():
    recs = []
    for method, vals in {"baseline": [1.0, 2.0, 3.0], "unicode": [10.0, 10.0, 13.0]}.items():
        for seed, v in enumerate(vals):
            recs.append({"method": method, "task": "ave", "direction": "V→A", "seed": seed, "metric": v})
    recs.append({"method": "unicode", "task": "avvp", "direction": "A→V", "seed": 0, "metric": 7.25})
    return recs


def test_results_table_mean_std_over_seeds():
    table = results_table(_toy_records(), rows="method", cols=("task", "direction"), value="metric")
    assert list(table.index) == ["baseline", "unicode"]
    assert table.loc["baseline", ("ave", "V→A")] == "2.0 ± 1.0"           # mean 2, sample std 1
    assert table.loc["unicode", ("ave", "V→A")] == f"11.0 ± {math.sqrt(3):.1f}"
    assert table.loc["unicode", ("avvp", "A→V")] == "7.2"                  # one seed: mean only (7.25 -> 7.2)
    assert table.loc["baseline", ("avvp", "A→V")] == "–"
    agg = aggregate(_toy_records(), "method", "task", "metric")
    row = agg[(agg.method == "unicode") & (agg.task == "ave")].iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(11.0) and row["std"] == pytest.approx(math.sqrt(3))


def test_results_table_nested_fields_and_missing_field():
    recs = [{"pretrain": {"model": {"codebook_size": 16}}, "metric": 0.5, "direction": "V→A"},
            {"pretrain": {"model": {"codebook_size": 16}}, "metric": 0.7, "direction": "V→A"}]
    table = results_table(recs, rows="pretrain.model.codebook_size", cols="direction", scale=100, fmt="{:.0f}")
    assert table.loc[16, "V→A"] == "60 ± 14"
    with pytest.raises(KeyError, match="seed"):
        results_table(recs, rows="seed", cols="direction")


def test_results_table_where_keeps_the_matching_records_only():
    recs = _toy_records() + [{"method": "unicode", "task": "ave", "direction": "V→A", "seed": 0, "metric": 99.0,
                              "metrics": {}}]
    for r in recs:
        r.setdefault("metrics", {"f1": r["metric"] / 2} if r["task"] == "avvp" else {})
    table = results_table(recs, rows="method", cols="direction", value="metrics.f1", where={"task": "avvp"})
    assert table.to_dict() == {"A→V": {"unicode": "3.6"}}               # 7.25 / 2; the AVE records have no f1


def test_paper_tables_and_side_by_side():
    t1 = paper_table("table1")
    assert t1.shape == (12, 12)
    assert t1.loc["unicode", ("24k", "ave", "V→A")] == 44.0 and t1.loc["baseline", ("24k", "ave", "A→V")] == 5.9
    assert t1.loc["unicode", ("40k", "avvp", "A→V")] == 65.6
    assert paper_table("table4").loc["unicode", ("A→T", "miou")] == 78.0
    assert paper_table("table5").loc["baseline", ("V→T", "R@10")] == 1.03
    assert math.isnan(paper_table("table3").loc["labeled modality", ("ave_avvp", "V→A")])
    assert set(paper_table("table2").index) == set(ABLATIONS)
    with pytest.raises(ValueError, match="table1"):
        paper_table("table9")
    recs = [dict(r, pretrain_size="24k") for r in _toy_records()]
    ours = results_table(recs, rows="method", cols=("pretrain_size", "task", "direction"))
    both = side_by_side(ours, t1)
    assert both.loc["unicode", ("24k", "ave", "V→A", "ours")] == "11.0 ± 1.7"
    assert both.loc["unicode", ("24k", "ave", "V→A", "paper")] == "44.0"
    assert both.loc["baseline", ("24k", "avvp", "A→V", "paper")] == "8.4"


def test_budget_and_ablations():
    from cmg_lib.presets import TABLE1_METHODS
    from cmg_lib.data.avdigits.scales import SCALE_NAMES
    from cmg_lib.experiments import BUDGETS

    assert tuple(BUDGETS) == SCALE_NAMES == ("smoke", "default", "full")       # one budget per build scale
    assert budget("full").methods == TABLE1_METHODS
    smoke, default = budget("smoke"), budget("default")
    assert len(smoke.seeds) == 1 and smoke.pretrain_steps < default.pretrain_steps
    assert set(default.methods) >= {"baseline", "cmcm", "unicode"} and len(default.pretrain_seeds) >= 3
    with pytest.raises(ValueError, match="smoke"):
        budget("huge")
    cfg = preset("released_av", "unicode", overrides=ablation_overrides("w/o DCID"))
    assert not cfg.model.club and not cfg.model.cross_cpc and cfg.model.mm_ema
    assert ablation_overrides("full") == []
    assert direction_label("audio", "video") == "A→V"
    grid = table1_grid("default")
    assert [m for size, m in grid if size == "24k"] == list(default.methods)          # every method at the main size
    assert {size for size, _ in grid} == set(default.pretrain_sizes)
    full = table1_grid("full")
    assert sorted(m for size, m in full if size == "40k") == sorted(budget("full").size_sweep_methods)
    assert len(full) == 3 * len(budget("full").methods)
    released = experiment_config("released_av", "unicode", scale="default")
    assert released.train.snapshot_steps == () and not released.train.epoch_ckpts   # no learning curve
    assert released.train.batch_size == 64 and released.train.log_every == 3          # 200 // 60
    book = experiment_config("book_av", "unicode", scale="default")
    assert book.train.snapshot_steps == (250, 500, 1000, 2000) and book.train.batch_size == 32
    assert default.steps_for("book") == 3000 and default.steps_for("released") == 200 and default.short == 250
    assert budget("full").short == 3000 and budget("smoke").steps_for("book") == 6


def test_snapshot_paths_and_their_own_cache_keys(cfg, tmp_path):
    final = pretrained(cfg, "avdigits", steps=5, cache_dir=tmp_path, trainer=CountingTrainer(), dataset=[])
    (final.parent / "step-0000002.pt").write_bytes(b"early weights")
    assert snapshot(final, 2).name == "step-0000002.pt"
    assert snapshot(final, 5) == final                                             # the run's last step
    with pytest.raises(FileNotFoundError, match="step-0000002.pt"):
        snapshot(final, 3)
    assert checkpoint_key(final) == final.parent.name != checkpoint_key(snapshot(final, 2))
    # a snapshot's history stops at its step (diagnostics of an early snapshot must not read the end of training)
    (final.parent / "step-0000001.pt").write_bytes(b"earlier weights")
    assert [h["step"] for h in run_history(snapshot(final, 1))] == [1]
    assert [h["step"] for h in run_history(snapshot(final, 2))] == [1, 2] == [h["step"] for h in run_history(final)]


class FakeModel:
    """quantize picks code = class label for audio and (label + segment) % L for video."""

    def __init__(self, size=8):
        import torch
        from types import SimpleNamespace

        self.config = SimpleNamespace(model=SimpleNamespace(codebook_size=size, modality_names=("audio", "video")))
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.training = False

    def parameters(self):
        return iter([self.p])

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def quantize(self, x, modality):
        import torch

        lab = x[:, :, 0].long()
        if modality == "video":
            lab = (lab + torch.arange(x.shape[1])) % 8
        return lab, x


def test_code_usage_counts_per_class():
    import torch

    items = [{"audio": torch.full((3, 2), float(c)), "video": torch.full((3, 2), float(c)),
              "label": torch.tensor(c)} for c in (0, 1, 1, 2)]
    usage = code_usage(FakeModel(), items, batch_size=3)
    assert usage["all"]["audio"].tolist() == [3, 6, 3, 0, 0, 0, 0, 0]
    assert usage[1]["audio"].tolist() == [0, 6, 0, 0, 0, 0, 0, 0]
    assert usage[2]["video"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert sum(int(v["video"].sum()) for k, v in usage.items() if k != "all") == 12


def test_avs_overlays_share_the_cached_head_run_with_the_table(cfg, tmp_path, monkeypatch):
    import numpy as np

    import cmg_lib.experiments.evals as evals
    calls = []

    def fake_predictions(ckpt=None, count=4, progress=True, **kwargs):
        calls.append(kwargs)
        n = count
        return {"frames": np.zeros((n, 4, 4, 1)), "masks": np.ones((n, 4, 4)), "prob": np.full((n, 4, 4), 0.7),
                "pred": np.ones((n, 4, 4), bool), "index": np.arange(n),
                "result": {"task": "avs", "metrics": {"miou": 50.0, "f_score": 60.0}}}

    monkeypatch.setattr(evals, "avs_predictions", fake_predictions)
    ckpt = pretrained(cfg, "avdigits", steps=5, cache_dir=tmp_path, trainer=CountingTrainer(), dataset=[])
    from cmg_lib.experiments import avs_overlays
    args = dict(train_modality="text", test_modality="audio", seed=0, scale="smoke", cache_dir=tmp_path, count=3)
    first = avs_overlays(ckpt, **args)
    assert len(calls) == 1 and calls[0]["epochs"] == budget("smoke").avs_epochs
    assert first["pred"].shape == (3, 4, 4) and first["result"]["metrics"]["miou"] == 50.0
    again = avs_overlays(ckpt, **args)
    assert len(calls) == 1 and np.array_equal(again["prob"], first["prob"])
    # the table's evaluate() of the same run finds the record: no second head training
    table = downstream("avs", ckpt, train_modality="text", test_modality="audio", seed=0, cache_dir=tmp_path,
                       runner=lambda *a, **k: pytest.fail("trained again"), scale="smoke",
                       epochs=budget("smoke").avs_epochs)
    assert table["cache_key"] == first["result"]["cache_key"]


def test_setup_takes_its_torch_threads_from_the_build(monkeypatch):
    import torch

    from cmg_lib.experiments import setup

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("CMG_TORCH_THREADS", "1")
        setup("default")
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("CMG_TORCH_THREADS", "0")
        with pytest.raises(ValueError, match="CMG_TORCH_THREADS must be a positive integer"):
            setup("default")
    finally:
        torch.set_num_threads(before)


def test_recipe_presets_and_the_codebook_sweep():
    from cmg_lib.config import RECIPES
    from cmg_lib.presets import recipe_preset
    from cmg_lib.experiments import codebook_sweep

    assert recipe_preset("book", "av") == "book_av" and recipe_preset("released", "avt") == "released_avt"
    assert set(RECIPES["book"]) == set(RECIPES["released"]) == {"av", "at", "vt", "avt"}
    with pytest.raises(ValueError, match="unknown recipe 'paper'; expected one of"):
        recipe_preset("paper", "av")
    with pytest.raises(ValueError, match="unknown modalities 'a'"):
        recipe_preset("book", "a")
    b = budget("default")
    assert codebook_sweep(b, "book_av") == [16, 80, 256]          # the budget's sizes and the recipe's own 80
    assert codebook_sweep(b, "released_av") == [16, 64, 256]


def test_notebook_run_names_the_updates_of_the_runs_it_asked_for(tmp_path, monkeypatch):
    from cmg_lib.experiments import notebook

    calls = []
    monkeypatch.setattr(notebook, "pretrained", lambda *a, **k: calls.append((a, k)) or tmp_path / "final.pt")
    monkeypatch.setattr(notebook, "snapshot", lambda ckpt, step: tmp_path / f"step-{step}.pt")
    nb = notebook.NotebookRun("default", "avdigits", "cpu", tmp_path, budget("default"), recipe="book")
    assert nb.steps_text() == "200"                                # nothing asked for yet: the budget's steps
    nb.pretrain(nb.preset("av"), seed=1, pretrain_size="24k")
    nb.pretrain(nb.preset("avt"), seed=1, steps=nb.short())
    nb.pretrain("book_av", seed=2, pretrain_size="24k", steps=50)  # an explicit length
    assert nb.steps_text() == "50, 3000 (book_av, 24K); 250 (book_avt, 40K)"
    assert calls[0][0][0].preset == "book_av" and calls[0][0][0].method == "unicode" and calls[0][1]["steps"] == 3000
    assert calls[1][0][0].data.pretrain_size == "40k"                  # no size given: the preset's own (AVT: 40K)
    scope = nb.scope()
    assert scope.steps == nb.steps_text() and scope.pretrain_seeds == (0, 1, 2) and scope.head_seeds == (0,)
    # a snapshot of the full-length run: trains (or finds) the 3,000 updates, hands out and names the 250
    snap = notebook.NotebookRun("default", "avdigits", "cpu", tmp_path, budget("default"), recipe="book")
    assert snap.pretrain("book_av", seed=1, pretrain_size="24k", at=250) == tmp_path / "step-250.pt"
    assert calls[-1][1]["steps"] == 3000 and snap.steps_text() == "250 (book_av, 24K)"
    assert snap.checkpoint_steps() == [250, 500, 1000, 2000, 3000]
    released = notebook.NotebookRun("default", "avdigits", "cpu", tmp_path, budget("default"), recipe="released")
    released.pretrain(released.preset("av"), pretrain_size="24k", steps=released.short())
    assert released.steps_text() == "200 (released_av, 24K)" and released.checkpoint_steps() == [200]
    with pytest.raises(ValueError, match="unknown recipe"):
        notebook.setup("default", recipe="paper")


@pytest.mark.parametrize("given, expected", [(None, None), ([0, 2], (0, 2)), ((1,), (1,)), (3, (3,)),
                                             ("[0, 1, 2]", (0, 1, 2)), ("0,1", (0, 1)), (" 4 ", (4,))])
def test_notebook_seeds_parameter_as_list_or_papermill_text(given, expected):
    from cmg_lib.experiments.budgets import parse_seeds, with_seeds

    assert parse_seeds(given) == expected
    smoke = budget("smoke")
    assert with_seeds(smoke, given) == (smoke if expected is None else
                                        smoke.__class__(**{**smoke.__dict__, "seeds": expected, "avs_seeds": expected}))


@pytest.mark.parametrize("given", ["[]", [], "[", "a,b", [0.5], [-1], [True], "{}"])
def test_a_bad_seeds_parameter_names_seeds(given):
    """Issue 26 item 8: ``papermill -p seeds '[]'`` said "invalid literal for int() with base 10: '['"."""
    from cmg_lib.experiments import notebook

    with pytest.raises(ValueError) as err:
        notebook.setup("default", seeds=given)
    assert str(err.value) == ("seeds must be None (the scale's head seeds) or a non-empty list of non-negative "
                              f"integers such as [0, 1, 2], got {given!r}")


def test_loaded_keeps_the_last_checkpoints_and_reloads_a_rewritten_one(tmp_path, monkeypatch):
    """One model object per checkpoint file while it is among the last LOADED_MODELS used (so every direction of
    a checkpoint hits the downstream code cache); a file rewritten in place is loaded again."""
    from cmg_lib.experiments import evals

    loads = []
    monkeypatch.setattr(evals, "load_checkpoint", lambda path: loads.append(path) or object())
    monkeypatch.setattr(evals, "_MODELS", type(evals._MODELS)())
    a, b, c = (tmp_path / f"{n}.pt" for n in "abc")
    for path in (a, b, c):
        path.write_bytes(b"w")
    model_a = evals.loaded(a)
    assert evals.loaded(str(a)) is model_a and len(loads) == 1
    evals.loaded(b)
    assert evals.loaded(a) is model_a and len(loads) == 2               # a was used last: b is the oldest
    evals.loaded(c)                                                       # evicts b (LOADED_MODELS = 2)
    evals.loaded(b)
    assert len(loads) == 4 and evals.loaded(c) is not None and len(loads) == 4
    a.write_bytes(b"new weights")                                        # rewritten: another size and time
    assert evals.loaded(a) is not model_a and len(loads) == 5
