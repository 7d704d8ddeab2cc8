"""FCID and MICU as methods of the one step function: their terms, what the codebook quantises, and the CLI trains
both (the fast path against the reference: tests/test_train.py)."""
from __future__ import annotations

import pytest
import torch

import cmg_lib.cli
from cmg_lib.checkpoint import load_checkpoint
from cmg_lib.presets import preset
from cmg_lib.model import build_model


def test_fcid_step_quantises_one_coarse_vector_per_clip(make_batch):
    torch.manual_seed(0)
    cfg = preset("released_avt", "fcid", overrides=["train.batch_size=4"])
    model = build_model(cfg)
    out = model(make_batch(cfg, 4))
    assert all(tuple(i.shape) == (4, 1) for i in out.indices.values())           # one code per clip
    assert set(model.club) == {"audio", "video", "text", "coarse_av", "coarse_text"}
    names = set(out.terms)
    assert {"recon_coarse/audio", "recon_coarse/video", "recon_coarse/text", "mi/coarse_av", "mi/coarse_text",
            "nce_coarse", "cpc", "cmcm"} <= names and not any(k.startswith(("fcmi", "cujp")) for k in names)
    x = make_batch(cfg, 4)["audio"]
    model.eval()
    with torch.no_grad():
        indices, vectors = model.quantize(x, "audio")
        per_second = model.coarse.per_segment(model.semantic["audio"](x), "audio")
    assert indices.shape == (4, 10) and vectors.shape == (4, 10, cfg.model.hidden_dim)
    torch.testing.assert_close(model.encode(x, "audio"), per_second)               # downstream: each second's code
    torch.testing.assert_close(vectors, model.codebook.embedding[indices])


def test_micu_step_drops_club_cpc_cmcm_and_adds_fcmi_and_cujp(make_batch):
    torch.manual_seed(0)
    cfg = preset("book_av", "micu", overrides=["train.batch_size=4"])
    model = build_model(cfg)
    assert model.club is None and model.cpc is None and model.jigsaw is not None
    out = model(make_batch(cfg, 4))
    assert set(out.terms) == {"recon/audio", "recon/video", "commit/audio", "commit/video", "fcmi/fine",
                              "fcmi/coarse", "cujp"}
    assert 0.0 <= out.stats["cujp_acc"] <= 1.0
    torch.testing.assert_close(out.loss, sum(out.terms.values()))                 # every term at weight 1
    out.loss.backward()
    assert model.jigsaw.classifier[0].weight.grad is not None
    clipped = {id(p) for group in model.clip_groups().values() for p in group}
    assert not any(id(p) in clipped for p in model.jigsaw.parameters())          # not clipped, as released


@pytest.mark.parametrize("method", ["fcid", "micu"])
def test_cli_pretrains_the_successors(method, tmp_path, make_dataset, monkeypatch, capsys):
    monkeypatch.setattr(cmg_lib.cli, "load_dataset", lambda *a, **k: make_dataset(preset("book_av"), n=8))
    rc = cmg_lib.cli.main(["pretrain", "--preset", "book_av", "--method", method, "--out", str(tmp_path),
                           "--steps", "2", "--set", "train.batch_size=4", "train.snapshot_steps=[]"])
    assert rc == 0 and str(tmp_path / "final.pt") in capsys.readouterr().out
    loaded = load_checkpoint(tmp_path / "final.pt")
    assert loaded.config.method == method and loaded.step == 2
    if method == "micu":                   # the fixed piece orders travel with the checkpoint
        assert loaded.jigsaw.orders.shape == (2, 2)
