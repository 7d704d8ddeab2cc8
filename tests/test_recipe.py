"""The book recipe's switches (book/differences.md#book-recipe): each does what it says, and each default is the
released behaviour."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmg_lib.config import ModelConfig
from cmg_lib.presets import AVDIGITS_CLASSES, AVDIGITS_MODALITIES, BOOK_RECIPE, book_codebook_size, preset
from cmg_lib.codebook import SharedCodebook
from cmg_lib.model import build_model
from cmg_lib.objectives.cmcm import code_distribution
from cmg_lib.usage import aligned_code_agreement
from cmg_lib.experiments.diagnostics import code_purity


def test_defaults_are_the_released_behaviour_and_the_book_presets_differ_only_by_the_recipe():
    released, book = preset("released_av"), preset("book_av")
    assert (released.model.cmcm_temperature, released.model.club_target, released.model.club_grad,
            released.model.codebook_init, released.model.reset_stats, released.model.club_y_scale,
            released.model.club_weight, released.model.recon_trains_code) == (1.0, "projection", "both", "uniform",
                                                                            "keep", "raw", 1.0, True)
    assert {k: getattr(book.model, k) for k in BOOK_RECIPE} == BOOK_RECIPE
    assert book.model.codebook_size == book_codebook_size() == 80
    assert book.train.max_steps == 6 * 40_000 // 80 == 3000 and book.train.batch_size == 32   # released updates
    assert book.data.pretrain_size == "24k" and preset("book_avt").data.pretrain_size == "40k"
    assert book_codebook_size(141) == 400 and book_codebook_size(28) == 80     # the released ratio


def test_avdigits_class_count_matches_the_data():
    from cmg_lib.data.avdigits.classes import DEFAULT_CLASSES
    assert AVDIGITS_CLASSES == DEFAULT_CLASSES


def test_cmcm_temperature_divides_the_distance():
    z, e = torch.randn(3, 4, 8), torch.randn(5, 8)
    d = torch.cdist(z, e.expand(3, 5, 8))
    torch.testing.assert_close(code_distribution(z, e, 0.5), torch.softmax(-d / 0.5, -1).mean(1), rtol=1e-4,
                               atol=1e-5)


def test_club_on_the_decoder_input_uses_the_pooled_specific_maps(make_batch):
    cfg = preset("released_av", overrides=["model.club_target=decoder_input"])
    model = build_model(cfg)
    assert model.specific["video"].club_head is None
    batch = make_batch(cfg, batch=3)
    maps, club = model.specific["video"](batch["video"])
    torch.testing.assert_close(club, maps.mean(dim=(2, 3)))
    out = model(batch)
    assert out.club_inputs["video"][1].shape[-1] == cfg.model.spec("video").specific_dim


@pytest.mark.parametrize("grad", ["both", "specific"])
def test_club_grad_specific_keeps_the_mi_gradient_out_of_the_semantic_encoder(make_batch, grad):
    cfg = preset("released_av", overrides=[f"model.club_grad={grad}", "model.dropout=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    out = model(make_batch(cfg, batch=4))
    mi = sum(v for k, v in out.terms.items() if k.startswith("mi/"))
    semantic = torch.autograd.grad(mi, list(model.semantic.parameters()), allow_unused=True, retain_graph=True)
    specific = torch.autograd.grad(mi, list(model.specific.parameters()), allow_unused=True)
    norm = {name: sum(float(g.abs().sum()) for g in grads if g is not None)
            for name, grads in (("semantic", semantic), ("specific", specific))}
    assert (norm["semantic"] == 0.0) == (grad == "specific") and norm["specific"] > 0


def _codebook(**kw):
    cfg = ModelConfig(modalities=(AVDIGITS_MODALITIES["audio"], AVDIGITS_MODALITIES["video"]), hidden_dim=4,
                      codebook_size=6, reset_window=2, **kw)
    return SharedCodebook(cfg)


def test_data_initialisation_puts_every_code_on_a_distinct_first_batch_vector():
    torch.manual_seed(0)
    cb = _codebook(codebook_init="data", mm_ema=False)
    z = {m: torch.randn(2, 5, 4) for m in ("audio", "video")}
    cb.eval()(z)                                     # an eval forward does not initialise
    assert bool(cb.pending_init)
    cb._init_from_data(torch.stack([z["audio"], z["video"]]))
    pool = torch.cat([z["audio"].reshape(-1, 4), z["video"].reshape(-1, 4)])
    nearest = torch.cdist(cb.embedding, pool).min(1)
    assert float(nearest.values.max()) < 1e-6 and len(set(nearest.indices.tolist())) == 6
    torch.testing.assert_close(cb.ema_weight, cb.embedding)
    assert cb.ema_count.tolist() == [1.0] * 6 and not bool(cb.pending_init)
    assert "pending_init" not in _codebook().state_dict()      # the released layout keeps its state_dict keys


@pytest.mark.parametrize("stats", ["keep", "reset"])
def test_reset_stats_make_a_reset_stick(stats):
    torch.manual_seed(1)
    cb = _codebook(reset_stats=stats).train()
    used = {m: torch.zeros(1, 3, dtype=torch.long) for m in ("audio", "video")}         # only code 0 is used
    resets = sum(cb._track_usage_and_reset(used) for _ in range(3))
    assert resets == 5                                                                   # codes 1-5 idle > 2
    ema_vector = cb.ema_weight[1:] / cb.ema_count[1:, None]
    assert bool(torch.allclose(ema_vector, cb.embedding[1:])) == (stats == "reset")


def test_code_purity_and_aligned_agreement_on_known_codes():
    codes = np.array([0, 0, 1, 1, 1, 2])
    classes = np.array([3, 3, 4, 4, 3, 5])            # class 5 = background here
    assert code_purity(codes, classes, background=5) == pytest.approx(4 / 5)

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.config = preset("released_av", overrides=["model.codebook_size=4"])

        def quantize(self, x, m):
            return x[..., 0].long(), None

    def item(a, v, la, lv):
        onehot = lambda c: torch.nn.functional.one_hot(torch.tensor(c), 11).float()
        return {"audio": torch.tensor(a, dtype=torch.float)[:, None], "video": torch.tensor(v, dtype=torch.float)[:, None],
                "segment_label/audio": onehot(la), "segment_label/video": onehot(lv)}
    data = [item([1, 2, 3], [1, 0, 3], [4, 4, 10], [4, 4, 10]),          # aligned: t=0 (same code), t=1 (differs)
            item([2, 2, 2], [2, 2, 2], [5, 6, 7], [5, 6, 8])]            # aligned: t=0, t=1 (same codes)
    out = aligned_code_agreement(Fixed(), data, ("audio", "video"))
    assert out["segments"] == 4 and out["same_code"] == pytest.approx(3 / 4)
    assert 0 < out["chance"] < 1 and not math.isnan(out["chance"])
    # the bound: class 4's codes overlap on code 1 only (half of its 2 segments), classes 5 and 6 fully: 3 / 4
    assert out["bound"] == pytest.approx(3 / 4)
    # class 7 twice, audio codes 1, 2 and video codes 2, 1: never the same code, but the same per-class code
    # frequencies, so a better pairing could agree on both: same 3 / 6, bound (3 + 2) / 6
    out = aligned_code_agreement(Fixed(), data + [item([1, 2, 0], [2, 1, 0], [7, 7, 10], [7, 7, 10])])
    assert out["same_code"] == pytest.approx(3 / 6) and out["bound"] == pytest.approx(5 / 6)


def test_the_cli_preset_trains_what_the_default_book_trains():
    """``python -m cmg_lib pretrain --preset book_av --data avdigits --seed S`` (no --steps) and the default book's
    run of book_av differ only in logging and checkpoint cadence, never in what is computed."""
    from cmg_lib.experiments import budget, experiment_config, run_key
    cli = preset("book_av", overrides=["data.source=avdigits", "train.seed=3"])
    book = experiment_config("book_av", scale="default", seed=3, pretrain_size="24k")
    book, _ = run_key(book, "avdigits", budget("default").steps_for("book"))
    bookkeeping = {"log_every", "snapshot_steps", "epoch_ckpts", "ckpt_every"}
    a, b = cli.to_dict(), book.to_dict()
    assert a["model"] == b["model"] and a["data"] == b["data"]
    assert {k: v for k, v in a["train"].items() if k not in bookkeeping} == \
           {k: v for k, v in b["train"].items() if k not in bookkeeping}
