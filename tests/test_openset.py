"""The open-set task (oscmg) and TOC as a downstream option, on test_downstream's fake frozen model and synthetic
in-memory data; the open-set metrics on hand-computed cases."""
from __future__ import annotations

import pytest
import torch

from cmg_lib.cli import build_parser, format_metrics
from cmg_lib.downstream import run_task
from cmg_lib.downstream.metrics import best_threshold, open_set_scores, threshold_grid
from cmg_lib.downstream.openset import class_roles, open_set_targets

import test_downstream as td

FAST = {"lr": 1e-2, "batch_size": 16, "epochs": 6}
PROBS = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.8, 0.2]])
TARGETS = torch.tensor([0, 1, 2, 2])                   # two known clips (classes 0, 1), two unknown (2)


def test_open_set_scores_known_answers():
    # at 0.7: clip 0 keeps class 0 (right), clip 1 is called unknown (wrong), clip 2 unknown (right), clip 3
    # class 0 (wrong): known 1/2, unknown 1/2
    assert open_set_scores(PROBS, TARGETS, 0.7) == {"known": 0.5, "unknown": 0.5, "hscore": 0.5}
    assert open_set_scores(PROBS, TARGETS, 0.0)["hscore"] == 0.0                 # nothing unknown
    grid = threshold_grid(PROBS.max(1).values, 5)
    torch.testing.assert_close(grid, torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9], dtype=torch.float64))
    # at 0.9 clips 1, 2, 3 are unknown: known 1/2, unknown 2/2, H = 2/3, the best of the grid
    threshold, scores = best_threshold(PROBS, TARGETS, 5)
    assert threshold == pytest.approx(0.9) and scores["hscore"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="known classes"):
        open_set_scores(PROBS, torch.tensor([2, 2, 2, 2]), 0.5)


def test_class_roles_and_targets():
    assert class_roles(28, 14) == (list(range(14, 21)), list(range(21, 28)))     # AVE-style, 14 of 28
    assert class_roles(28, 21) == ([21, 22, 23], [24, 25, 26, 27])
    assert class_roles(16, 8) == ([8, 9, 10, 11], [12, 13, 14, 15])              # UCF<->VGG-style, 8 of 16
    assert class_roles(16, 12, "shared") == ([12, 13, 14, 15], [12, 13, 14, 15])
    with pytest.raises(ValueError, match="known_classes"):
        class_roles(16, 15)
    rows, targets = open_set_targets(torch.tensor([0, 5, 2, 7, 6]), 4, [6, 7])
    assert rows.tolist() == [0, 2, 3, 4] and targets.tolist() == [0, 2, 4, 4]


@pytest.fixture(scope="module")
def world():
    return td.World()


@pytest.fixture(scope="module")
def data(world):
    return {"ave": {"train": td.clips(world, 96, 1), "val": td.clips(world, 32, 2), "test": td.clips(world, 64, 3)},
            "ucf_vgg": {"vggsound": td.clips(world, 96, 8), "ucf": td.clips(world, 64, 9)}}


def _run(model, data, source="ave", train="video", test="audio", **kw):
    return run_task("oscmg", model=model, data=data.get(source, data["ave"]), train_modality=train, test_modality=test,
                    progress=False, source=source, **{**FAST, **kw})


def test_oscmg_on_the_ave_layout(world, data):
    model = td.FakeUniCode(world, shared=True)
    rec = _run(model, data)
    m, s = rec["metrics"], rec["downstream"]
    # 8 classes, 4 known; unknown 4, 5 validate, 6, 7 test; labels are i % 8
    assert (s["known_classes"], s["val_unknown_classes"], s["test_unknown_classes"]) == (4, [4, 5], [6, 7])
    assert rec["n_train"] == 48 and rec["n_test"] == 48
    assert set(m) == {"known", "unknown", "hscore", "released_known", "released_unknown", "released_hscore"}
    assert m["known"] >= 90.0                                    # shared codes: the known classes transfer
    for prefix in ("", "released_"):
        k, u = m[f"{prefix}known"], m[f"{prefix}unknown"]
        assert m[f"{prefix}hscore"] == pytest.approx(2 * k * u / (k + u) if k + u else 0.0, abs=1e-3)
    # the validation choice: the epoch with the best validation H-score; the released one: the best test H-score
    vals = [h["val"]["hscore"] for h in rec["history"]]
    assert rec["best_epoch"] == vals.index(max(vals)) + 1
    assert m["released_hscore"] == max(h["released"]["hscore"] for h in rec["history"])
    assert 0.0 <= s["threshold"] <= 1.0 and 0.0 <= s["released_threshold"] <= 1.0
    released = _run(model, data, protocol="released")
    assert released["metrics"]["hscore"] == released["metrics"]["released_hscore"]
    shared = _run(model, data, unknown_split="shared")
    assert shared["n_test"] == 64 and shared["downstream"]["val_unknown_classes"] == [4, 5, 6, 7]


def test_oscmg_on_the_ucf_vgg_layout_and_errors(world, data):
    model = td.FakeUniCode(world, shared=True)
    rec = _run(model, data, source="ucf_vgg", train="audio", test="video", known_classes=6)
    # vggsound (audio): 96 clips, 80 % trained; its known classes 0-5 are 3/4 of them; ucf: classes 0-5 and 7
    assert rec["n_train"] == pytest.approx(0.8 * 96 * 6 / 8, abs=3) and rec["n_test"] == 56
    with pytest.raises(ValueError, match="two modalities"):
        _run(model, data, source="ucf_vgg", train="audio", test="audio")
    with pytest.raises(ValueError, match="source"):
        _run(model, data, source="vgg")
    with pytest.raises(ValueError, match="known_classes"):
        _run(model, data, known_classes=7)


def test_toc_option_cuts_the_codes_to_the_kept_dimensions(world, data):
    model = td.FakeUniCode(world, shared=True)
    model.codebook.embedding = model.codebook                         # the fake keeps its codes in a buffer
    rec = run_task("ave", model=model, data=data["ave"], train_modality="video", test_modality="audio",
                   progress=False, toc_dims=5, **FAST)
    assert rec["toc"]["dims"] == 5 and len(rec["toc"]["kept"]) == 5
    assert rec["metrics"]["accuracy"] > 0
    with pytest.raises(ValueError, match="toc_dims"):
        run_task("ave", model=model, data=data["ave"], progress=False, toc_dims=td.D + 1, **FAST)


def test_cli_prints_the_open_set_numbers_and_thresholds(world, data, monkeypatch, capsys):
    model = td.FakeUniCode(world, shared=True)
    monkeypatch.setattr("cmg_lib.downstream.tasks.load_checkpoint", lambda path: model)
    monkeypatch.setattr("cmg_lib.downstream.openset.load_split", lambda ctx, subset, split: data[subset][split])
    args = build_parser().parse_args(["downstream", "oscmg", "--ckpt", "x.pt", "--train-modality", "video",
                                      "--test-modality", "audio", "--epochs", "3", "--opt", "lr=0.01",
                                      "--opt", "batch_size=16", "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for word in ("known", "unknown", "hscore", "released_hscore", "chosen on validation"):
        assert word in out
    record = {"task": "avvp", "direction": "V→A", "protocol": "heldout", "seed": 0, "best_epoch": 1, "n_train": 1,
              "n_test": 1, "metrics": {"f1": 1.0}, "downstream": {"threshold": 0.5}}     # AVVP's sigmoid threshold
    assert "max softmax" not in format_metrics(record)
    record["downstream"]["released_threshold"] = 0.4
    assert "threshold (max softmax): 0.5000 chosen on validation; 0.4000" in format_metrics(record)
