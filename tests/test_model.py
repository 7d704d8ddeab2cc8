"""UniCode model: every preset builds, the objective has exactly the switched-on terms, inputs are validated, and the
per-modality networks have the released shapes (book/differences.md#architecture)."""
import math

import pytest
import torch

from cmg_lib.config import RECIPES
from cmg_lib.presets import METHODS, preset
import torch.nn.functional as F

import cmg_lib.layers.small_map_conv as small_map_conv
from cmg_lib.layers import SmallMapConv
from cmg_lib.modalities import GridAttentionPool, SpecificEncoder
from cmg_lib.model import UniCode, build_model

RELEASED = sorted(RECIPES["released"].values())



def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", RELEASED)
def test_released_presets_forward_and_backward(name, make_batch):
    torch.manual_seed(0)
    cfg = preset(name)
    model = build_model(cfg)
    out = model(make_batch(cfg, batch=3))
    names = cfg.model.modality_names
    expected = {f"{t}/{m}" for t in ("recon", "commit", "mi") for m in names} | {"cpc", "cmcm"}
    assert set(out.terms) == expected
    assert math.isclose(float(out.loss.detach()), sum(out.values().values()), rel_tol=1e-5)
    assert all(out.indices[m].shape == (3, cfg.model.segments) and out.indices[m].dtype == torch.long for m in names)
    assert set(out.club_inputs) == set(names) and not any(t.requires_grad for pair in out.club_inputs.values()
                                                          for t in pair)
    out.loss.backward()
    grads = [p.grad for p in model.semantic.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_paper_presets_have_the_released_sizes():
    torch.manual_seed(0)
    sizes = {}
    for name in ("paper_at", "paper_avt"):
        model = build_model(preset(name))
        sizes[name] = _n_params(model)
        if name == "paper_avt":
            # counted from the released layer shapes: Psi_v 72.36 M, video decoder 36.77 M, VSE 0.33 M, CPC 3.36 M,
            # BiLSTM 1.31 M
            assert abs(_n_params(model.specific["video"]) / 1e6 - 72.36) < 0.01
            assert abs(_n_params(model.decoders["video"]) / 1e6 - 36.77) < 0.01
            assert abs(_n_params(model.semantic["video"].pool) / 1e6 - 0.33) < 0.005
            assert abs(_n_params(model.cpc) / 1e6 - 3.36) < 0.01
            assert abs(_n_params(model.front_ends["text"]) / 1e6 - 1.31) < 0.01
            # main optimiser: 122.2 M released minus 3 unused duplicate layers (0.79 M each) and 3 unused heads
            assert abs(sum(p.numel() for p in model.main_parameters()) / 1e6 - (122.2 - 3 * 0.7898 - 0.31)) < 0.1
            x = torch.randn(2, 10, 7, 7, 512)
            with torch.no_grad():
                specific, club = model.specific["video"](x)
            assert specific.shape == (2, 10, 3, 3, 2048) and club.shape == (2, 10, 512)   # 7 -> 5 -> 3 as released
    assert sizes["paper_at"] < 10e6 < sizes["paper_avt"]


def test_switches_remove_their_terms_and_parameters(make_batch):
    base = preset("released_av")
    full = build_model(base)
    torch.manual_seed(0)
    for switch, term, module in (("club", "mi/", "club"), ("cross_cpc", "cpc", "cpc"), ("cmcm", "cmcm", None)):
        cfg = base.override(f"model.{switch}=false")
        model = build_model(cfg)
        out = model(make_batch(cfg))
        assert not any(k.startswith(term) for k in out.terms), (switch, out.terms)
        if module is not None:
            assert getattr(model, module) is None
            assert not any(k.startswith(module + ".") for k in model.state_dict())
            removed = _n_params(getattr(full, module))
            if switch == "club":                            # the CLUB-only projection head of Psi_video goes too
                assert model.specific["video"].club_head is None
                removed += _n_params(full.specific["video"].club_head)
            assert _n_params(model) == _n_params(full) - removed
    baseline = build_model(preset("released_av", "baseline"))
    assert set(baseline(make_batch(baseline.config)).terms) == {"recon/audio", "recon/video", "commit/audio",
                                                                 "commit/video"}
    assert baseline.club_parameters() == []
    smit = build_model(preset("released_av", "smit"))
    assert "align" in smit(make_batch(smit.config)).terms


def test_club_loss_trains_only_the_estimators_and_mi_reaches_the_encoder(make_batch):
    """The step's order: the estimators learn from the detached pairs (their objective reaches no main parameter),
    then the mi terms train the main networks only (through the straight-through code and Psi's CLUB head)."""
    torch.manual_seed(0)
    cfg = preset("released_av")
    model = build_model(cfg)
    seen = {}

    def learn_club(club_inputs):
        nll = model.club_loss(club_inputs)
        nll.backward()
        seen["main"] = [p.grad for p in model.main_parameters()]
        seen["club"] = [p.grad.clone() for p in model.club_parameters()]
        return nll.detach()

    out = model(make_batch(cfg), learn_club=learn_club)
    assert all(g is None for g in seen["main"]) and all(g is not None for g in seen["club"])
    assert out.club_nll is not None and set(out.club_inputs) == {"audio", "video"}
    mi = {k: v for k, v in out.terms.items() if k.startswith("mi/")}
    assert set(mi) == {"mi/audio", "mi/video"}
    sum(mi.values()).backward()
    assert model.semantic["audio"].project.weight.grad.abs().sum() > 0      # through the straight-through vq
    assert model.specific["video"].club_head[0].weight.grad.abs().sum() > 0
    assert all(torch.equal(p.grad, g) for p, g in zip(model.club_parameters(), seen["club"]))   # mi: not into CLUB


@pytest.mark.parametrize("bad, message", [
    (lambda b: b.pop("video"), "missing modality 'video'"),
    (lambda b: b.__setitem__("audio", torch.randn(4, 10, 127)), "(B, 10, 128)"),
    (lambda b: b.__setitem__("video", torch.randn(4, 9, 5, 5, 64)), "(B, 10, 5, 5, 64)"),
    (lambda b: b["audio"].__setitem__((0, 0, 0), float("nan")), "NaN"),
    (lambda b: b["video"].__setitem__((1, 9, 4, 4, 63), float("inf")), "'video' contains NaN or infinite"),
    (lambda b: b["audio"].__setitem__((3, 5, 7), float("-inf")), "'audio' contains NaN or infinite"),
    (lambda b: b.__setitem__("audio", torch.ones(4, 10, 128, dtype=torch.long)), "floating point"),
    (lambda b: b.__setitem__("audio", torch.randn(3, 10, 128)), "same batch size"),
    (lambda b: b.__setitem__("speech", torch.randn(4, 10, 128)), "unknown batch key 'speech'"),
])
def test_validation_names_what_was_expected(bad, message, make_batch):
    cfg = preset("released_av")
    model = build_model(cfg)
    batch = make_batch(cfg)
    bad(batch)
    with pytest.raises(ValueError, match=None) as err:
        model(batch)
    assert message in str(err.value)


def test_validation_reports_received_shape_and_ignores_label_keys(make_batch):
    cfg = preset("released_av")
    model = build_model(cfg)
    batch = make_batch(cfg)
    batch["segment_label/audio"] = torch.zeros(4, 10, 3)
    batch["text"] = torch.randn(4, 10, 384)                          # a modality this model does not use
    assert model.validate_batch(batch) == 4
    with pytest.raises(ValueError, match=r"got \(4, 10, 5, 5\)"):
        model.encode(torch.randn(4, 10, 5, 5), "video")
    with pytest.raises(ValueError, match="not in this model"):
        model.encode(torch.randn(4, 10, 384), "text")
    with pytest.raises(ValueError, match="at least 2"):
        model({k: v[:1] for k, v in batch.items()})


def test_encode_and_quantize_return_codebook_rows(make_batch):
    torch.manual_seed(0)
    cfg = preset("released_avt")
    model = build_model(cfg).eval()
    batch = make_batch(cfg, batch=2)
    for m in cfg.model.modality_names:
        z = model.encode(batch[m], m)
        assert z.shape == (2, 10, cfg.model.hidden_dim)
        idx, vec = model.quantize(batch[m], m)
        assert idx.shape == (2, 10) and torch.equal(vec, model.codebook.embedding[idx])
        d = torch.cdist(z.reshape(-1, z.shape[-1]), model.codebook.embedding)
        assert torch.equal(idx.reshape(-1), d.argmin(1))
    before = model.codebook.embedding.clone()
    model(batch)                                                     # eval forward: no EMA update
    assert torch.equal(before, model.codebook.embedding)
    model.train()(batch)
    assert not torch.equal(before, model.codebook.embedding)


def test_grid_pool_known_answers():
    torch.manual_seed(0)
    pool_fixed, pool_quirk = GridAttentionPool(8, released_quirks=False), GridAttentionPool(8, released_quirks=True)
    pool_quirk.load_state_dict(pool_fixed.state_dict())
    u = torch.randn(3, 1, 8)
    same = u.expand(3, 25, 8)                       # every position equal: softmax pooling = that position
    att = torch.sigmoid(pool_fixed.se_up(torch.relu(pool_fixed.se_down(u[:, 0]))))
    v_prime = u[:, 0] * att + u[:, 0]
    assert torch.allclose(pool_fixed(same), v_prime, atol=1e-6)
    assert torch.allclose(pool_quirk(same), 25 * v_prime, atol=1e-5)   # released: sum pooling
    x = torch.randn(2, 25, 8, requires_grad=True)
    pool_quirk(x).sum().backward()
    assert pool_quirk.score.weight.grad.abs().max() == 0          # degenerate softmax: no gradient to the scorer


@pytest.mark.parametrize("side, latent", [(7, 3), (5, 3), (3, 3)])
def test_grid_specific_and_decoder_shapes(side, latent):
    cfg = preset("released_avt").override(f"model.modalities=[{{\"name\": \"audio\", \"kind\": \"vector\", "
                                  f"\"feature_shape\": [16]}}, {{\"name\": \"video\", \"kind\": \"grid\", "
                                  f"\"feature_shape\": [{side}, {side}, 6], \"specific_dim\": 8, \"club_dim\": 4}}]")
    model = build_model(cfg)
    x = torch.randn(2, 10, side, side, 6)
    specific, club = model.specific["video"](x)
    assert specific.shape == (2, 10, latent, latent, 8) and club.shape == (2, 10, 4)
    recon = model.decoders["video"](torch.randn(2, 10, cfg.model.hidden_dim), specific)
    assert recon.shape == x.shape
    assert isinstance(model.specific["video"], SpecificEncoder)


def test_text_reconstruction_target_is_the_bilstm_output(make_batch):
    torch.manual_seed(0)
    cfg = preset("released_at", "baseline")
    model = build_model(cfg)
    batch = make_batch(cfg)
    out = model(batch)
    feats = model.front_ends["text"](batch["text"])
    assert feats.shape == (4, 10, 2 * cfg.model.text_lstm_hidden)
    assert out.terms["recon/text"].item() < 0.1 < out.terms["recon/audio"].item()   # target: LSTM scale, not the input
    torch.autograd.grad(out.loss, model.front_ends["text"].lstm.weight_ih_l0, allow_unused=False)


def test_build_model_rejects_non_config():
    with pytest.raises(ValueError, match="Config"):
        build_model({"model": {}})
    assert isinstance(build_model(preset("released_av")), UniCode)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_main_parameter_gets_a_gradient(method, make_batch):
    """What DDP (find_unused_parameters=False) relies on: no dead parameter in any Table 1 method."""
    torch.manual_seed(0)
    cfg = preset("released_avt", method)
    model = build_model(cfg)
    model(make_batch(cfg)).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None and not n.startswith("club.")] == []


@pytest.mark.parametrize("path", ["gemm", "torch"])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("kernel, padding", [(1, 0), (3, 0), (3, 1), (3, 2)])
@pytest.mark.parametrize("side", [3, 5])
def test_small_map_conv_equals_torch_convolutions(transposed, kernel, padding, side, path, monkeypatch):
    monkeypatch.setattr(small_map_conv, "GEMM_MIN_CHANNEL_PRODUCT", 0 if path == "gemm" else 10 ** 9)
    torch.manual_seed(0)
    conv = SmallMapConv(6, 5, kernel, padding=padding, transposed=transposed)
    x = torch.randn(4, side, side, 6, requires_grad=True)
    nchw = x.detach().permute(0, 3, 1, 2).requires_grad_()
    if transposed:     # stored (Cin, k, k, Cout) -> torch (Cin, Cout, k, k)
        ref = F.conv_transpose2d(nchw, conv.weight.permute(0, 3, 1, 2), conv.bias, padding=padding)
    else:              # stored (k, k, Cin, Cout) -> torch (Cout, Cin, k, k)
        ref = F.conv2d(nchw, conv.weight.permute(3, 2, 0, 1), conv.bias, padding=padding)
    out = conv(x)
    assert out.shape[1:3] == (conv.out_size(side),) * 2 == ref.shape[2:]
    assert torch.allclose(out, ref.permute(0, 2, 3, 1), atol=1e-5)
    grad = torch.randn_like(out)
    x_grad, weight_grad = torch.autograd.grad(out, (x, conv.weight), grad)
    ref_x_grad, ref_weight_grad = torch.autograd.grad(ref, (nchw, conv.weight), grad.permute(0, 3, 1, 2))
    assert torch.allclose(x_grad, ref_x_grad.permute(0, 2, 3, 1), atol=1e-5)
    assert torch.allclose(weight_grad, ref_weight_grad, atol=1e-5)        # the tap-wise backward writes every tap
    with pytest.raises(ValueError, match="6 input channels"):
        conv(torch.randn(1, 5, 5, 7))


@pytest.mark.parametrize("transposed, padding, constant", [(False, 1, False), (True, 0, True), (True, 1, False)])
def test_small_map_conv_tap_backward_under_bf16_autocast(transposed, padding, constant, monkeypatch):
    """The tap-wise paths have their own backward; under bf16 autocast it runs its GEMMs in bf16 and returns
    float32 gradients close to the float32 ones."""
    monkeypatch.setattr(small_map_conv, "GEMM_MIN_CHANNEL_PRODUCT", 0)
    torch.manual_seed(0)
    conv = SmallMapConv(8 + (4 if constant else 0), 6, 3, padding=padding, transposed=transposed)
    x = torch.randn(3, 5, 5, 8, requires_grad=True)
    code = torch.randn(3, 4, requires_grad=True) if constant else None
    inputs = (x, conv.weight) + ((code,) if constant else ())
    ref = torch.autograd.grad(conv(x, constant=code).square().sum(), inputs)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = conv(x, constant=code)
    grads = torch.autograd.grad(out.float().square().sum(), inputs)
    for g, r in zip(grads, ref):
        assert g.dtype == torch.float32 and torch.allclose(g, r, rtol=0.05, atol=0.05 * float(r.abs().max()))


@pytest.mark.parametrize("path", ["gemm", "torch"])
@pytest.mark.parametrize("transposed, padding", [(True, 0), (True, 1), (False, 1)])
def test_small_map_conv_constant_channels_equal_broadcast_concatenation(transposed, padding, path, monkeypatch):
    """The decoder's code enters as constant channels; the GEMM shortcut must equal concatenating it everywhere."""
    monkeypatch.setattr(small_map_conv, "GEMM_MIN_CHANNEL_PRODUCT", 0 if path == "gemm" else 10 ** 9)
    torch.manual_seed(0)
    conv = SmallMapConv(2 + 4, 5, 3, padding=padding, transposed=transposed)
    x = torch.randn(3, 3, 3, 4, requires_grad=True)
    code = torch.randn(3, 2, requires_grad=True)
    out = conv(x, constant=code)
    ref = conv(torch.cat([code[:, None, None].expand(-1, 3, 3, -1), x], dim=-1))
    assert torch.allclose(out, ref, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (x, code, conv.weight))
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, code, conv.weight))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grads, ref_grads))
    with pytest.raises(ValueError, match="6 input channels"):
        conv(x, constant=torch.randn(3, 3))


def test_objective_under_bf16_autocast_keeps_the_codebook_in_float32(make_batch):
    """The bf16 path (CUDA autocast in pretrain) exercised with CPU autocast: every term is finite and close to
    float32, the MM-EMA update and the distance computations stay float32 (the released quantizer crashed on mixed
    dtypes), and gradients reach the encoders. Audio-video: oneDNN has no CPU bf16 LSTM on this AVX2 CPU (cuDNN does)."""
    torch.manual_seed(0)
    cfg = preset("released_av", "unicode", ["model.dropout=0.0"])
    model = build_model(cfg).train()
    batch = make_batch(cfg, batch=6)
    reference = build_model(cfg).train()
    reference.load_state_dict(model.state_dict())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(batch)
    ref = reference(batch)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert model.codebook.embedding.dtype == torch.float32
    assert torch.allclose(model.codebook.embedding, reference.codebook.embedding, atol=5e-2)
    for name, value in ref.values().items():
        assert abs(out.values()[name] - value) <= 0.05 * abs(value) + 0.05, name
    out.loss.backward()
    grads = [p.grad for p in model.semantic.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_conv_impl_torch_computes_the_same_model(make_batch, monkeypatch):
    """``model.conv_impl=torch`` runs every grid conv through torch's convolution: same parameters, same outputs
    and gradients as the GEMM formulation (forced on for the narrow tiny widths here)."""
    monkeypatch.setattr(small_map_conv, "GEMM_MIN_CHANNEL_PRODUCT", 0)
    cfg = preset("released_av", "unicode", ["model.dropout=0.0"])
    torch.manual_seed(0)
    gemm = build_model(cfg).train()
    torch_conv = build_model(cfg.override("model.conv_impl=torch")).train()
    torch_conv.load_state_dict(gemm.state_dict())
    assert all(m.impl == "torch" for m in torch_conv.modules() if isinstance(m, SmallMapConv))
    batch = make_batch(cfg, batch=4)
    outs = []
    for model in (gemm, torch_conv):
        torch.manual_seed(1)
        out = model(batch)
        out.loss.backward()
        outs.append(out)
    assert outs[0].values() == pytest.approx(outs[1].values(), rel=1e-4, abs=1e-6)
    for (name, p), q in zip(gemm.named_parameters(), torch_conv.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5), name
    with pytest.raises(ValueError, match="conv_impl"):
        preset("released_av", "unicode", ["model.conv_impl=winograd"])
