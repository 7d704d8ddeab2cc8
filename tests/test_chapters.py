"""experiments.chapters: the notebooks' run lists, and the plan that replays them without training."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cmg_lib.checkpoint import snapshot_name
from cmg_lib.experiments import chapters, notebook, runs
from cmg_lib.experiments.budgets import budget
from cmg_lib.storage import atomic_write_json

CHAPTERS = [chapters.pretraining, chapters.table1, chapters.table2, chapters.table3, chapters.figure3,
            chapters.figure4, chapters.table4, chapters.table5, chapters.after_unicode, chapters.why_released_recipe]


def _heads(plan) -> Counter:
    return Counter(task for run in plan.runs.values() for task, *_ in run.heads)


def test_plan_counts_the_smoke_and_default_books():
    # Known answers, counted by hand from the chapters: smoke has 24 distinct runs (Table 1 three, Table 2 one, the
    # pre-training chapter, Table 3, Table 4 one AVT run each, Fig. 3 two, Table 5 two, the after-Uni-Code chapter
    # three (FCID, FCID with CLUB on unscaled features, MICU; its Uni-Code is Table 1's run at a snapshot), the why
    # chapter twelve: four switches, the released recipe, w/o CLUB and four CLUB conditions, and the recipe and w/o
    # CLUB trained twice as long (the plateau test); its recipe and baseline are Table 1's; w/o CLUB and the cut of
    # the reconstruction's gradient train as long as the recipe, the other three conditions the experiments' length
    # beside w/o CLUB's snapshot). The why chapter asks for 3 checkpoints of its curve (2 snapshots and the end), 2
    # for the plateau test (the recipe's end and the doubled run), 2 for the doubled CLUB rows, 6 for the switches'
    # rows, 5 for CLUB's other conditions, 3 at full length and the baseline: 22 calls; the two doubled runs add 4
    # AVE heads each. The after-Uni-Code chapter asks for 4 checkpoints per pre-training seed and trains per
    # seed and direction: AVE on the two FCID rows and MICU (Uni-Code's at the snapshot is the why chapter's
    # learning-curve head), AVVP on all four and on FCID with TOC, the open-set task on all four.
    smoke = chapters.plan("smoke")
    assert (smoke.calls, len(smoke.runs)) == (23 + 22, 14 + 12)
    assert Counter(r.steps for r in smoke.runs.values() if r.chapter == "01") == {4: 8, 6: 2, 12: 2}
    assert _heads(smoke) == {"ave": 80 + 3 * 2, "avvp": 14 + 5 * 2, "ucf_vgg": 6, "ave_avvp": 4, "avs": 4,
                             "retrieval": 4, "oscmg": 4 * 2}
    # default: 18 runs of the released recipe's 3,000 updates (Table 1: 3 methods, Table 2: 2 rows, the why
    # chapter's cut of the reconstruction's gradient, x 3 seeds) and 9 of 250 (the pre-training chapter, Tables 3
    # and 4: 3 runs); the why chapter's 24 shorter runs are left to scale full (experiment_steps=None: its 36 calls
    # for the switches' rows and CLUB's other conditions and their 120 AVE heads are not planned), and so are Fig.
    # 3, Table 5 and the after-Uni-Code chapter (their 21 runs, 27 pretrain calls, 12 + 18 AVE, 12 retrieval, 30
    # AVVP and 24 open-set heads), and the plateau test (plateau_test=False); the why chapter asks for its curve's
    # 5 x 3 checkpoints, the full-length CLUB conditions' 3 x 3 and the baseline's 3
    default = chapters.plan("default")
    assert set(default.budget.full_only) == {"06", "09", "10"} and default.budget.experiment_steps is None
    assert not default.budget.plateau_test
    assert (default.calls, len(default.runs)) == (3 + 9 + 3 * 3 + 9 + 9 + 6 + 5 * 3 + 3 * 3 + 3, 18 + 9)
    assert Counter(r.steps for r in default.runs.values()) == {3000: 18, 250: 9}
    assert _heads(default) == {"ave": 258 - 18 - 120, "avvp": 48, "ucf_vgg": 18, "ave_avvp": 12, "avs": 12}
    assert Counter(r.chapter for r in default.runs.values()) == {"02": 3, "03": 9, "04": 6, "05": 3, "08": 3,
                                                                 "01": 3}
    # TOC's heads are distinct head trainings of FCID's final checkpoint (the option is part of a planned head)
    toc = [h for r in chapters.plan("full").runs.values() for h in r.heads if h[-1]]
    assert len(toc) == 2 * 3 * 5 and {h[0] for h in toc} == {"avvp"} and {h[-1] for h in toc} == {(("toc_dims", 49),)}
    # Table 1's Uni-Code runs carry the learning curve: heads on every snapshot and on final.pt
    unicode = [r for r in default.runs.values() if r.steps == 3000 and r.method == "unicode" and not r.overrides]
    assert len(unicode) == 3 and all({c for _, c, *_ in r.heads} == {"final.pt", *map(snapshot_name, (250, 500, 1000,
                                                                                                    2000))}
                                     for r in unicode)


def test_plan_follows_the_budget_and_the_seeds_parameter():
    b = budget("smoke")
    fewer = chapters.plan("smoke", b=b.__class__(**{**b.__dict__, "ablations": ("full",)}))
    assert len(fewer.runs) == 26 - 1                   # the "w/o DCID" row's run is gone, "full" is shared
    seeds = chapters.plan("smoke", seeds=[0, 1])
    # AVE: the tables' 20 heads and the after-Uni-Code chapter's 6 per head seed; the why chapter's 60 others on
    # the first seed only
    assert _heads(seeds)["ave"] == 2 * (20 + 6) + 60 and _heads(seeds)["avs"] == 2 * 4
    released = chapters.plan("smoke", recipe="released")
    assert {r.preset for r in released.runs.values() if r.chapter != "01"} == {"released_avt", "released_av",
                                                                               "released_vt"}


def test_plan_is_what_the_notebooks_train(tmp_path, monkeypatch):
    """The chapters on a real NotebookRun, with the trainer and the heads replaced by recorders, ask for exactly the
    plan's runs (same cache keys) and head trainings."""
    trained, heads = set(), set()

    def fake_pretrained(config, data=None, *, steps=None, cache_dir=None, **_):
        full, key = runs.run_key(config, data, steps)
        folder = tmp_path / "runs" / key
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "config.json", full.to_dict())
        for step in full.train.snapshot_steps:               # what the trainer would leave beside final.pt
            (folder / snapshot_name(step)).touch()
        (folder / "final.pt").touch()
        trained.add(key)
        return folder / "final.pt"

    def fake_evaluate(ckpt, task, directions, seeds, *, scale, data, cache_dir, epochs=None, **options):
        ckpt = Path(ckpt)
        epochs = budget(scale).downstream_epochs if epochs is None else epochs
        extra = chapters.head_options(options)
        heads.update((ckpt.parent.name, task, ckpt.name, tuple(d), int(s), epochs, extra)
                     for d in directions for s in seeds)
        return []

    monkeypatch.setattr(notebook, "pretrained", fake_pretrained)
    monkeypatch.setattr(notebook, "evaluate", fake_evaluate)
    monkeypatch.setattr(notebook, "avs_overlays", lambda *a, **k: {})
    nb = notebook.NotebookRun("smoke", "avdigits", "cpu", tmp_path, budget("smoke"))
    for chapter in CHAPTERS:
        chapter(nb)
    plan = chapters.plan("smoke")
    assert trained == set(plan.runs)
    assert heads == {(key, *h) for key, run in plan.runs.items() for h in run.heads}


@pytest.mark.parametrize("name", ["table2", "table3"])
def test_chapter_records_carry_their_tags(name, tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "pretrained", lambda config, data=None, **k: tmp_path / runs.run_key(config)[1])
    monkeypatch.setattr(notebook, "evaluate", lambda ckpt, task, directions, seeds, tags=None, **k:
                        [{"task": task, "direction": d, **(tags or {})} for d in directions])
    nb = notebook.NotebookRun("smoke", "avdigits", "cpu", tmp_path, budget("smoke"))
    records = getattr(chapters, name)(nb)
    rows = Counter(r["row"] for r in records)
    if name == "table2":        # 2 rows x 1 seed x 2 tasks x 2 directions
        assert rows == {"w/o DCID": 4, "full": 4}
    else:                       # 2 rows x 4 tasks x 2 directions; the labelled row: 3 tasks x 2 one-modality heads
        assert rows == {"w/o CLUB": 8, "full": 8, "labeled modality": 6}
        assert {r["direction"] for r in records if r["row"] == "labeled modality"} == {"V→A", "A→V"}


def test_the_budget_benchmark_knows_every_planned_task():
    """benchmarks/book_budget.py times one head per task the plan trains: it must know each of them."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from book_budget import HEAD_SHAPES

    assert _heads(chapters.plan("default")).keys() <= HEAD_SHAPES.keys()
