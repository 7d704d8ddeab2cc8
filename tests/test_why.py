"""The "why" chapter's levers and measures: CLUB's y scale, weight and reconstruction path, the decoder's reliance on
the code, the raw-feature reference, the paper's transfer ratio, the learning curve, and the pool that trains the
book's runs before the notebooks."""
from __future__ import annotations

import math
import os

import pytest
import torch

from cmg_lib.presets import preset
from cmg_lib.experiments import diagnostics, paper, pool, runs
from cmg_lib.model import build_model
from cmg_lib.step import standardized, step_loss


def test_standardized_puts_each_feature_at_mean_0_and_std_1_over_the_rows():
    y = torch.tensor([[[1.0, 10.0], [3.0, 10.0]], [[5.0, 30.0], [7.0, 30.0]]])     # (B=2, T=2, d=2)
    out = standardized(y)
    torch.testing.assert_close(out.reshape(-1, 2).mean(0), torch.zeros(2))
    # feature 0: 1, 3, 5, 7 (mean 4, population std sqrt(5)); feature 1: 10, 10, 30, 30 (mean 20, std 10)
    torch.testing.assert_close(out[..., 0].flatten(), (torch.tensor([1.0, 3, 5, 7]) - 4) / (5 ** 0.5 + 1e-5))
    torch.testing.assert_close(out[..., 1].flatten(), torch.tensor([-1.0, -1, 1, 1]), rtol=1e-5, atol=1e-5)


def _model(*overrides: str):
    torch.manual_seed(0)
    return build_model(preset("released_av", overrides=["model.dropout=0.0", *overrides])).train()


def test_club_y_scale_standardizes_what_the_estimators_see(make_batch):
    model = _model("model.club_y_scale=standardized")
    out = step_loss(model, make_batch(model.config, batch=6))
    for _, y in out.club_inputs.values():
        rows = y.reshape(-1, y.shape[-1])
        torch.testing.assert_close(rows.mean(0), torch.zeros(rows.shape[1]), atol=1e-5, rtol=0)
        # 1 up to eps = 1e-5 against each feature's spread (Psi's ReLU outputs are ~1e-3 at initialisation)
        torch.testing.assert_close(rows.std(0, correction=0), torch.ones(rows.shape[1]), atol=1e-2, rtol=0)
    raw = step_loss(_model(), make_batch(model.config, batch=6))
    assert any(abs(float(y.reshape(-1, y.shape[-1]).std(0).mean()) - 1) > 0.1 for _, y in raw.club_inputs.values())


def test_club_weight_scales_the_mi_terms_exactly(make_batch):
    batch = make_batch(preset("released_av"), batch=6)
    one = step_loss(_model(), batch).terms
    tenth = step_loss(_model("model.club_weight=0.1"), batch).terms
    for name in ("mi/audio", "mi/video"):
        assert float(tenth[name].detach()) == pytest.approx(0.1 * float(one[name].detach()), rel=1e-5)
    assert float(tenth["recon/audio"].detach()) == float(one["recon/audio"].detach())
    with pytest.raises(ValueError, match="club_weight"):
        preset("released_av", overrides=["model.club_weight=-1"])


@pytest.mark.parametrize("trains", [True, False])
def test_recon_trains_code_decides_whether_reconstruction_reaches_phi(make_batch, trains):
    model = _model(f"model.recon_trains_code={str(trains).lower()}")
    out = step_loss(model, make_batch(model.config, batch=4))
    recon = sum(v for k, v in out.terms.items() if k.startswith("recon/"))
    recon.backward()
    phi = [p.grad for p in model.semantic.parameters() if p.grad is not None]
    psi = [p.grad for p in model.specific.parameters() if p.grad is not None]
    assert any(float(g.abs().sum()) > 0 for g in psi)              # the specific encoders always learn from it
    assert any(float(g.abs().sum()) > 0 for g in phi) == trains


def test_code_reliance_is_one_when_the_decoder_ignores_the_code():
    model = _model().eval()
    x = torch.randn(8, 10, *model.config.model.spec("audio").feature_shape, generator=torch.Generator().manual_seed(1))
    assert diagnostics.code_reliance(model, "audio", x)["code_reliance"] != pytest.approx(1.0)
    with torch.no_grad():                      # the code's projection zeroed: the decoder reads Psi(x) alone
        model.decoders["audio"].code_proj.weight.zero_()
        model.decoders["audio"].code_proj.bias.zero_()
    out = diagnostics.code_reliance(model, "audio", x)
    assert out["code_reliance"] == pytest.approx(1.0) and out["recon"] > 0


def test_raw_features_stand_in_for_codes():
    from cmg_lib.downstream import RawFeatures

    raw = RawFeatures("video", (5, 5, 64))
    assert raw.config.model.hidden_dim == 1600 and raw.modalities == ("video",)
    x = torch.randn(2, 10, 5, 5, 64)
    indices, vectors = raw.quantize(x, "video")
    assert indices is None and torch.equal(vectors, x.reshape(2, 10, 1600))
    with pytest.raises(ValueError, match="not 'audio'"):
        raw.quantize(x, "audio")
    with pytest.raises(ValueError, match=r"\(B, T, 5, 5, 64\)"):
        raw.quantize(torch.randn(2, 10, 64), "video")


def test_raw_reference_runs_the_task_head_on_raw_features(avdigits_smoke):
    from cmg_lib.experiments.evals import raw_reference

    first = raw_reference("ave", "audio", [0], scale="smoke", cache_dir=avdigits_smoke, epochs=2)
    again = raw_reference("ave", "audio", [0], scale="smoke", cache_dir=avdigits_smoke, epochs=2)
    assert first[0]["metric"] == again[0]["metric"] and 0 <= first[0]["metric"] <= 100
    assert first[0]["direction"] == "A→A" and first[0]["pretrain"]["preset"] == "raw features (audio)"
    assert len(list((avdigits_smoke / "results").glob("ave-raw-*.json"))) == 1      # computed once, then read


def test_avvp_floor_is_the_background_share_of_the_scored_clips(avdigits_smoke):
    from cmg_lib.data import load_dataset, schema
    from cmg_lib.data.common import split_tensors
    from cmg_lib.experiments.evals import avvp_floor

    for split, protocol in (("test", "heldout"), ("train", "released")):
        labels = split_tensors(load_dataset("avdigits", "avvp", split, scale="smoke", cache_dir=avdigits_smoke))
        share = 100 * float(labels[schema.segment_key("audio")][..., -1].mean())      # one label per segment
        assert 0 < share < 100
        assert avvp_floor("audio", scale="smoke", protocol=protocol, cache_dir=avdigits_smoke) == pytest.approx(share)


def test_paper_transfer_ratio_is_read_from_its_table3():
    assert paper.transfer_ratio() == pytest.approx((54.1 + 55.0) / (64.8 + 65.8))
    assert paper.transfer_ratio("avvp") == pytest.approx((63.4 + 71.0) / (71.0 + 72.9))
    with pytest.raises(ValueError, match="no labelled-modality row"):
        paper.transfer_ratio("ave_avvp")


def test_learning_curve_draws_one_panel_per_measure():
    from cmg_lib.viz import learning_curve

    rows = [{"updates": u, "seed": s, "labelled": 50.0 + s, "cross": 40.0 + u / 1000, "same code": 10.0}
            for u in (250, 1000, 3000) for s in (0, 1, 2)]
    fig = learning_curve(rows)
    assert len(fig.axes) == 3 and [ax.get_ylabel() for ax in fig.axes] == ["labelled (%)", "cross (%)",
                                                                           "same code (%)"]
    mean_line = fig.axes[1].lines[-1]
    assert list(mean_line.get_xdata()) == [250, 1000, 3000]
    assert list(mean_line.get_ydata()) == pytest.approx([40.25, 41.0, 43.0])
    with pytest.raises(ValueError, match="lack"):
        learning_curve([{"updates": 1, "seed": 0}])


def test_run_key_keeps_only_the_snapshots_below_a_runs_length():
    cfg = preset("book_av", overrides=["train.snapshot_steps=[250,500,1000,2000]"])
    short, key = runs.run_key(cfg, "avdigits", 500)
    assert short.train.snapshot_steps == (250,) and short.train.max_steps == 500
    assert runs.run_key(cfg, "avdigits", 3000)[0].train.snapshot_steps == (250, 500, 1000, 2000)
    assert key != runs.run_key(cfg, "avdigits", 3000)[1]


def _job(seed: int, **model):
    cfg = preset("released_av", overrides=["train.batch_size=4", f"train.seed={seed}", "train.epoch_ckpts=false",
                                           "data.scale=smoke", *(f"model.{k}={v}" for k, v in model.items())])
    full, key = runs.run_key(cfg, "avdigits", 2)
    return pool.RunJob(full.to_dict(), 2, key, f"seed {seed}", pool.job_cost(full.to_dict(), 2))


def test_pool_trains_each_pending_run_once_and_names_a_failing_one(avdigits_smoke):
    jobs = [_job(0), _job(1)]
    assert pool.job_cost(jobs[0].config_dict, 2) == 2 * 4 * 2            # updates x batch x modalities
    logged = []
    seconds = pool.train_runs(jobs, cache_dir=avdigits_smoke, workers=2, log=logged.append)
    assert set(seconds) == {j.key for j in jobs}
    assert all((avdigits_smoke / "runs" / j.key / "final.pt").exists() for j in jobs)
    assert pool.pending(jobs, avdigits_smoke) == [] and "2/2" in logged[-1]
    assert pool.train_runs(jobs, cache_dir=avdigits_smoke, log=logged.append) == {}          # all cached
    bad = _job(2, codebook_size=0)                                        # no codes: fails in the worker
    with pytest.raises(RuntimeError, match=f"pre-training run seed 2 \\(cache key {bad.key}\\) failed"):
        pool.train_runs([bad], cache_dir=avdigits_smoke, workers=1, log=logged.append)
    assert not (avdigits_smoke / "runs" / bad.key).exists()             # nothing half-written
    assert not any(p.name.startswith(bad.key + ".") and "tmp" in p.name for p in (avdigits_smoke / "runs").iterdir())
    assert math.isfinite(sum(seconds.values())) and os.cpu_count()


def test_pool_eta_runs_the_remaining_cost_at_the_finished_runs_rate_on_every_worker():
    # 100 of 400 cost units done by runs that took 50 s of their own time: 2 units/s per worker, so the other 300
    # take 75 s on two workers, 150 s on one; nothing finished yet: unknown
    assert pool.eta_seconds(400.0, 100.0, 50.0, 2) == 75.0
    assert pool.eta_seconds(400.0, 100.0, 50.0, 1) == 150.0
    assert pool.eta_seconds(400.0, 400.0, 200.0, 2) == 0.0
    assert math.isnan(pool.eta_seconds(400.0, 0.0, 0.0, 2))


def test_a_scale_without_experiment_steps_leaves_the_shorter_experiments_to_full():
    from cmg_lib.experiments import why
    from cmg_lib.experiments.budgets import budget
    from cmg_lib.experiments.chapters import PlanRecorder

    default = PlanRecorder("default", budget("default"))
    assert not why.trains_experiments(default) and why.lengths(default)["experiment"] is None
    assert why.row_runs(default) == {} and why.club_runs(default) == {} and default.runs == {}
    assert set(why.converged_club_runs(default)) == {why.RECIPE, *why.CONVERGED_CLUB}
    assert {r.steps for r in default.runs.values()} == {3000}
    text = why.left_to_full(default, "these three conditions")
    assert text.startswith("**At this scale, these three conditions are left to scale `full`.**")
    assert "as long as the recipe (3000 updates)" in text and "the other chapters' 250 updates" in text
    smoke = PlanRecorder("smoke", budget("smoke"))               # smoke trains them: every code path in CI
    assert why.trains_experiments(smoke)
    assert set(why.club_runs(smoke)) == {why.RECIPE, why.NO_CLUB, *why.OTHER_CLUB}
    assert set(why.row_runs(smoke)) == set(why.ROWS)


def test_the_plateau_test_doubles_the_recipe_where_the_scale_trains_it():
    from cmg_lib.experiments import why
    from cmg_lib.experiments.budgets import budget
    from cmg_lib.experiments.chapters import PlanRecorder

    default = PlanRecorder("default", budget("default"))
    assert not why.trains_plateau(default) and why.plateau_runs(default) == {} and default.runs == {}
    assert why.lengths(default)["doubled"] == 6000
    assert "trains the recipe for 6000 updates" in why.plateau_left_to_full(default)
    assert "--doubled" in why.plateau_left_to_full(default)
    assert why.doubled_club_runs(default) == {} and "--club-condition" in why.plateau_left_to_full(
        default, "this test", "the recipe and w/o CLUB", '--doubled --club-condition "w/o CLUB"')
    assert set(why.doubled_runs(default, [100])) == {100}               # the tool's runs, at any scale
    assert [r.steps for r in default.runs.values()] == [6000]
    smoke = PlanRecorder("smoke", budget("smoke"))
    runs = why.plateau_runs(smoke)
    assert list(runs) == [6, 12] and all(set(seeds) == {0} for seeds in runs.values())
    assert sorted(r.steps for r in smoke.runs.values()) == [6, 12]
    club = why.doubled_club_runs(smoke)
    assert list(club) == [why.RECIPE, why.NO_CLUB] and club[why.RECIPE] == runs[12]
    assert sorted(r.steps for r in smoke.runs.values()) == [6, 12, 12]


def test_plateau_table_compares_the_doubled_runs_with_the_seed_interval():
    from cmg_lib.experiments import why
    from cmg_lib.experiments.claims import t_interval

    # three seeds; labelled moves by +1 on every seed (interval of 50, 52, 54 at 3000: half-width 4.97): inside;
    # cross by +6, +7, +8 (interval of 40, 41, 45: half-width 6.57): outside; same code by -1, 0, +1: inside
    short = {0: (50, 40, 10), 1: (52, 41, 12), 2: (54, 45, 14)}
    change = {0: (1, 6, -1), 1: (1, 7, 0), 2: (1, 8, 1)}
    curve = [{"updates": 3000, "seed": s, "labelled": v[0], "cross": v[1], "same code": v[2]} for s, v in short.items()]
    curve += [{"updates": 6000, "seed": s, "labelled": short[s][0] + c[0], "cross": short[s][1] + c[1],
               "same code": short[s][2] + c[2]} for s, c in change.items()]
    curve.append({"updates": 6000, "seed": 9, "labelled": 0.0, "cross": 0.0, "same code": 0.0})   # unpaired: left out
    table = why.plateau_table(curve, 3000, 6000)
    assert list(table) == ["labelled", "cross", "same code"]
    assert table["labelled"]["3000 updates"] == 52 and table["labelled"]["6000 updates"] == 53
    assert table["labelled"]["change (paired)"] == 1 and table["labelled"]["change's 95 % half-width"] == 0
    assert math.isclose(table["cross"]["its 95 % half-width"], t_interval([40, 41, 45])[1])
    assert table["cross"]["change (paired)"] == 7 and table["cross"]["moved less than the half-width"] == "no"
    assert table["labelled"]["moved less than the half-width"] == "yes"
    assert table["same code"]["change (paired)"] == 0 and table["same code"]["moved less than the half-width"] == "yes"
    one = why.plateau_table([r for r in curve if r["seed"] == 0], 3000, 6000)
    assert one["cross"]["moved less than the half-width"] == "no interval (one seed)"


def test_delay_claims_pair_each_seeds_lead_of_w_o_club_at_both_lengths():
    from cmg_lib.experiments import why
    from cmg_lib.experiments.claims import FAILS, HOLDS, INCONCLUSIVE

    def diag(recipe, no_club):
        return {why.RECIPE: {s: {"same_code": v / 100} for s, v in enumerate(recipe)},
                why.NO_CLUB: {s: {"same_code": v / 100} for s, v in enumerate(no_club)}}

    # leads 20, 24, 19 at the recipe's length; 4, 6, 3 at twice it (w/o CLUB flat, the recipe catching up)
    full, doubled = diag([16, 16, 15], [36, 40, 34]), diag([30, 30, 30], [34, 36, 33])
    still, fades = why.delay_claims(full, doubled)
    assert still.outcome == HOLDS and fades.outcome == HOLDS            # paired leads 4, 6, 3 > 0; shrinks 16, 18, 16
    # the recipe overtakes w/o CLUB at twice the updates: CLUB no longer lowers it
    still, fades = why.delay_claims(full, diag([40, 42, 41], [34, 36, 33]))
    assert still.outcome == FAILS and fades.outcome == HOLDS
    # the lead stays: it does not fade (the paired change in the lead is -1, +1, 0)
    still, fades = why.delay_claims(full, diag([16, 16, 15], [37, 39, 34]))
    assert still.outcome == HOLDS and fades.outcome == INCONCLUSIVE
