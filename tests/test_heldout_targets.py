"""tools/heldout_targets.py at scale smoke: it trains every run it needs first (the pool), then prints the measures of
the recipe, its learning curve and each CLUB condition asked for, per pre-training seed."""
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def test_plans_the_curve_the_baseline_and_each_condition_once_per_seed():
    import heldout_targets
    from cmg_lib.experiments import why
    from cmg_lib.experiments.budgets import budget
    from cmg_lib.experiments.chapters import PlanRecorder

    recorder = PlanRecorder("smoke", budget("smoke"))
    out = heldout_targets.runs(recorder, [100, 101], [why.TENTH_CLUB, why.NO_RECON_GRADIENT])
    # recipe, baseline and two conditions per seed; the curve's points are snapshots of the recipe's runs
    assert len(recorder.runs) == 2 * 4
    assert sorted(out["curve"]) == [2, 4, 6]
    assert {Path(c).parent.name for c in out["curve"][2].values()} == {Path(c).parent.name
                                                                      for c in out["curve"][6].values()}
    overrides = {r.overrides for r in recorder.runs.values()}
    assert overrides == {(), why.CLUB_CONDITIONS[why.TENTH_CLUB], why.CLUB_CONDITIONS[why.NO_RECON_GRADIENT]}
    assert {r.method for r in recorder.runs.values()} == {"unicode", "baseline"}
    switched = PlanRecorder("smoke", budget("smoke"))
    out = heldout_targets.runs(switched, [100], [], ["CMCM without temperature"])
    assert set(out["conditions"]) == {"CMCM without temperature"} and len(switched.runs) == 3
    assert {r.overrides for r in switched.runs.values()} == {(), ("model.cmcm_temperature=1.0",)}
    assert {r.steps for r in switched.runs.values()} == {6}            # full length, as the recipe
    released = PlanRecorder("smoke", budget("smoke"))
    out = heldout_targets.runs(released, [100], [], [], released=True)
    assert set(out["conditions"]) == {why.RELEASED}
    run = next(r for r in released.runs.values() if r.preset == "released_av")
    assert run.steps == 6 and run.overrides == ("train.batch_size=16",) and run.config.train.batch_size == 16
    doubled = PlanRecorder("smoke", budget("smoke"))
    out = heldout_targets.runs(doubled, [100, 101], [why.NO_CLUB], doubled=True)
    # recipe, baseline and w/o CLUB per seed at full length; the recipe and w/o CLUB per seed twice as long
    assert set(out["doubled"]) == {100, 101} and set(out["doubled conditions"]) == {why.NO_CLUB}
    assert sorted(r.steps for r in doubled.runs.values()) == [6] * 6 + [12] * 4
    assert {r.overrides for r in doubled.runs.values() if r.steps == 12} == {(), why.CLUB_CONDITIONS[why.NO_CLUB]}


def test_trains_first_then_prints_every_condition_per_seed(avdigits_smoke, tmp_path, monkeypatch, capsys):
    import heldout_targets
    from cmg_lib.experiments import why

    cache = tmp_path / "cache"
    shutil.copytree(avdigits_smoke, cache)
    monkeypatch.setenv("CMG_CACHE", str(cache))
    trained = []
    real = heldout_targets.pool.train_runs

    def spy(jobs, *args, **kwargs):
        trained.extend(j.key for j in jobs)
        return real(jobs, *args, workers=1, **kwargs)

    monkeypatch.setattr(heldout_targets.pool, "train_runs", spy)
    before = {p.name for p in (cache / "runs").iterdir()} if (cache / "runs").exists() else set()   # other tests'
    switch = "CMCM without temperature"
    assert heldout_targets.main(["--scale", "smoke", "--seeds", "5", "--club-condition", why.TENTH_CLUB,
                                 "--club-condition", why.NO_CLUB, "--switch", switch, "--released", "--doubled"]) == 0
    text = capsys.readouterr().out
    # recipe, baseline, the two conditions, the switch, the released recipe, and the recipe, the two conditions and
    # the switch twice as long: all before any head
    assert len(trained) == 10
    assert sorted(p.name for p in (cache / "runs").iterdir()
                  if (p / "final.pt").exists() and p.name not in before) == sorted(trained)
    for step in (2, 4, 6):
        assert f"  {step} updates, seed 5: labelled " in text
    assert f"  {why.TENTH_CLUB}, 6 updates, seed 5: labelled " in text and "(recipe " in text
    assert "**inconclusive**" in text                         # one seed: no verdict by rule
    assert f"{why.TENTH_CLUB}: more aligned segments get the same code than with the book recipe: **inconclusive**" \
        in text
    assert f"  {switch}, 6 updates, seed 5: labelled " in text and "CMCM's distance below chance " in text
    assert f"({switch}; measure: CMCM's distance below chance): **inconclusive**" in text
    assert f"the book recipe transfers better across modalities than with {switch} (AVE, mean of V→A and A→V): " \
           "**inconclusive**" in text
    assert f"  {why.RELEASED}, 6 updates, seed 5: labelled " in text
    assert f"the book recipe transfers better across modalities than the {why.RELEASED} (AVE, mean of V→A and A→V): " \
           "**inconclusive**" in text
    assert "  seed 5: labelled " in text and "  cross: 6 updates " in text and "moved less than the half-width: " in text
    assert "cross-modal transfer still rises from 6 to 12 updates (AVE, mean of V→A and A→V): **inconclusive**" in text
    assert f"  {why.TENTH_CLUB}, 12 updates, seed 5: labelled " in text and f"  {switch}, 12 updates, seed 5: " in text
    assert "- at twice the updates, CLUB still lowers the share of aligned segments that get the same code: " \
           "**inconclusive**" in text and "- CLUB's effect fades with training: " in text
