"""SharedCodebook: hand-computed EMA / commitment values, reset rules on scripted usage, switches, sharding."""
import copy
import math

import pytest
import torch

from cmg_lib import distributed
from cmg_lib.codebook import SharedCodebook
from cmg_lib.config import ModelConfig
from cmg_lib.presets import AVDIGITS_MODALITIES

torch.set_num_threads(1)


def make(names=("audio", "text"), L=3, D=2, **kw):
    cfg = ModelConfig(modalities=tuple(AVDIGITS_MODALITIES[n] for n in names), hidden_dim=D, codebook_size=L,
                      n_heads=1, **kw)
    return SharedCodebook(cfg)


def set_codes(cb, codes):
    codes = torch.tensor(codes, dtype=torch.float32)
    cb.embedding.copy_(codes)
    cb.ema_weight.copy_(codes)
    cb.ema_count.fill_(1.0)


def t(rows):
    """(T, D) list -> (1, T, D) tensor."""
    return torch.tensor([rows], dtype=torch.float32)


CODES = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
ZA = [[0.1, 0.0], [0.9, 0.1]]        # audio -> codes 0, 1
ZT = [[0.0, 0.8], [1.2, 0.0]]        # text  -> codes 2, 1


def ema_by_hand(form, mm, g, eps):
    """Expected (N, o) after one forward from N = 1, o = CODES, written out as plain arithmetic."""
    if mm:   # paired teacher: 0.5 z^m + 0.5 z^n at the same position
        mix_a = [[0.5 * ZA[j][d] + 0.5 * ZT[j][d] for d in range(2)] for j in range(2)]
        mix_t = mix_a
    else:
        mix_a, mix_t = ZA, ZT
    # per-code counts and sums: audio uses codes (0, 1) at positions (0, 1); text uses codes (2, 1)
    n_a, s_a = [1, 1, 0], [mix_a[0], mix_a[1], [0.0, 0.0]]
    n_t, s_t = [0, 1, 1], [[0.0, 0.0], mix_t[1], mix_t[0]]
    steps = [(n_a, s_a), (n_t, s_t)] if form == "sequential" else \
        [([n_a[k] + n_t[k] for k in range(3)], [[s_a[k][d] + s_t[k][d] for d in range(2)] for k in range(3)])]
    N, o = [1.0, 1.0, 1.0], [list(c) for c in CODES]
    for n, s in steps:
        N = [g * N[k] + (1 - g) * n[k] for k in range(3)]
        total = sum(N)
        N = [(N[k] + eps) / (total + 3 * eps) * total for k in range(3)]
        o = [[g * o[k][d] + (1 - g) * s[k][d] for d in range(2)] for k in range(3)]
    return torch.tensor(N), torch.tensor(o)


@pytest.mark.parametrize("form", ["sequential", "joint"])
@pytest.mark.parametrize("mm", [True, False])
def test_ema_update_matches_hand_computation(form, mm):
    cb = make(ema_form=form, mm_ema=mm, ema_decay=0.5, ema_eps=0.1, reset_code=False)
    set_codes(cb, CODES)
    out = cb({"audio": t(ZA), "text": t(ZT)})
    assert out.indices["audio"].tolist() == [[0, 1]] and out.indices["text"].tolist() == [[2, 1]]
    N, o = ema_by_hand(form, mm, 0.5, 0.1)
    torch.testing.assert_close(cb.ema_count, N)
    torch.testing.assert_close(cb.ema_weight, o)
    torch.testing.assert_close(cb.embedding, o / N[:, None])
    # the returned codes are those of the pre-update codebook
    torch.testing.assert_close(out.codes["text"], t([CODES[2], CODES[1]]))


def test_sequential_mm_ema_literal_numbers_without_smoothing():
    cb = make(ema_decay=0.5, ema_eps=0.0, reset_code=False)
    set_codes(cb, CODES)
    cb({"audio": t(ZA), "text": t(ZT)})
    # worked out on paper: mix at position 0 = (0.05, 0.4), at position 1 = (1.05, 0.05)
    torch.testing.assert_close(cb.ema_count, torch.tensor([0.5, 1.0, 0.75]))
    torch.testing.assert_close(cb.ema_weight, torch.tensor([[0.0125, 0.1], [1.0375, 0.0375], [0.025, 0.45]]))
    torch.testing.assert_close(cb.embedding, torch.tensor([[0.025, 0.2], [1.0375, 0.0375], [0.025 / 0.75, 0.6]]))


def test_cross_attention_teacher():
    cb = make(ema_teacher="cross_attention", reset_code=False)
    a, b = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]]), torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])
    r = cb.teacher(a, b)
    # row 0: scores (3, 0)/sqrt(2); row 1: scores (0, 2)/sqrt(2)
    w0 = torch.softmax(torch.tensor([3.0, 0.0]) / math.sqrt(2), 0)
    w1 = torch.softmax(torch.tensor([0.0, 2.0]) / math.sqrt(2), 0)
    torch.testing.assert_close(r[0], torch.stack([w0 @ b[0], w1 @ b[0]]))
    # with T = 1 the cross-attention teacher is the paired vector
    paired = make(reset_code=False)
    torch.testing.assert_close(cb.teacher(a[:, :1], b[:, :1]), paired.teacher(a[:, :1], b[:, :1]))


def test_corrected_init_keeps_unpicked_codes_and_quirk_blows_them_up():
    torch.manual_seed(0)
    z = {"audio": torch.randn(4, 5, 8) * 0.01, "text": torch.randn(4, 5, 8) * 0.01}
    fixed, quirk = make(L=64, D=8, reset_code=False), make(L=64, D=8, reset_code=False, released_quirks=True)
    quirk.load_state_dict(fixed.state_dict(), strict=False)
    quirk.ema_count.zero_()
    init = fixed.embedding.clone()
    assert torch.equal(quirk.embedding, init) and quirk.ema_count.sum() == 0 and fixed.ema_count.sum() == 64
    used_fixed = torch.cat([i.flatten() for i in fixed(z).indices.values()])
    used_quirk = torch.cat([i.flatten() for i in quirk(z).indices.values()])
    unpicked = torch.ones(64, dtype=torch.bool)
    unpicked[used_fixed] = False
    assert unpicked.sum() > 30
    torch.testing.assert_close(fixed.embedding[unpicked], init[unpicked], rtol=1e-3, atol=1e-6)
    assert torch.equal(used_fixed, used_quirk)
    # released ema_count = 0: unpicked codes get N ~ eps and |e| jumps by orders of magnitude
    # (book/differences.md#ema-counts-at-zero)
    growth = quirk.embedding[unpicked].abs().max(1).values / init[unpicked].abs().max(1).values
    assert growth.min() > 100


def scripted(cb, za, zt, forwards):
    stats = []
    for _ in range(forwards):
        stats.append(cb({"audio": t(za), "text": t(zt)}).stats)
    return stats


RESET_CODES = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]


def test_released_reset_rule_on_scripted_usage():
    torch.manual_seed(0)
    cb = make(L=4, mm_ema=False, ema_eps=0.0, reset_window=3)
    set_codes(cb, RESET_CODES)
    # audio always picks code 0, text picks code 1; codes 2 and 3 are never used
    stats = scripted(cb, [[0.0, 0.0]], [[1.0, 0.0]], 3)
    assert [s["resets"] for s in stats] == [0, 0, 0]
    torch.testing.assert_close(cb.embedding, torch.tensor(RESET_CODES))
    assert cb.idle.tolist() == [[0, 3, 3, 3], [3, 0, 3, 3]]
    stats = scripted(cb, [[0.0, 0.0]], [[1.0, 0.0]], 1)     # 4th forward: unused for more than 3 forwards
    assert stats[0]["resets"] == 2
    new = cb.embedding[2:]
    gap = torch.cdist(new, torch.tensor(RESET_CODES[:2])).min(1).values
    assert (gap <= math.sqrt(2) / 1024).all() and (gap > 0).all()
    assert cb.idle[:, 2:].eq(0).all() and not cb.chosen[:, 2:].any()
    # EMA statistics untouched as released: o / N still holds the old vectors, the next forward brings them back
    torch.testing.assert_close(cb.ema_weight[2:] / cb.ema_count[2:, None], torch.tensor(RESET_CODES[2:]))
    scripted(cb, [[0.0, 0.0]], [[1.0, 0.0]], 1)
    torch.testing.assert_close(cb.embedding[2:], torch.tensor(RESET_CODES[2:]))


def test_paper_reset_rule_on_scripted_usage():
    torch.manual_seed(0)
    cb = make(L=4, mm_ema=False, ema_eps=0.0, reset_window=3, reset_rule="paper")
    set_codes(cb, RESET_CODES)
    za, zt = [[0.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]   # audio: 0, 1; text: 1, 2; code 3 unused
    stats = scripted(cb, za, zt, 2)
    assert [s["resets"] for s in stats] == [0, 0]
    assert stats[-1]["window_shared"] == 1 and stats[-1]["window_active"] == 3
    stats = scripted(cb, za, zt, 1)            # 3rd forward: only code 1 was chosen by both in the window
    assert stats[0]["resets"] == 3
    reset = torch.tensor([True, False, True, True])
    torch.testing.assert_close(cb.embedding[1], torch.tensor(RESET_CODES[1]))
    gap = (cb.embedding[reset] - torch.tensor(RESET_CODES[1])).abs()
    assert (gap <= 1 / 1024).all() and (gap > 0).any()
    # our reading of the paper: the EMA statistics are reset too, so e = o / N is the new vector
    torch.testing.assert_close(cb.ema_weight[reset], cb.embedding[reset])
    assert cb.ema_count[reset].eq(1).all()


def test_released_rule_would_keep_codes_used_by_one_modality():
    cb = make(L=4, mm_ema=False, ema_eps=0.0, reset_window=3)
    set_codes(cb, RESET_CODES)
    stats = scripted(cb, [[0.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], 4)
    assert [s["resets"] for s in stats] == [0, 0, 0, 1]      # only the never-used code 3


def test_reset_choices_are_deterministic_for_a_seed():
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        cb = make(L=4, mm_ema=False, ema_eps=0.0, reset_window=1)
        set_codes(cb, RESET_CODES)
        scripted(cb, [[0.0, 0.0]], [[1.0, 0.0]], 2)
        results.append(cb.embedding.clone())
    assert torch.equal(results[0], results[1])


def test_reset_switch_off_and_eval_mode_leave_buffers_alone():
    cb = make(L=4, mm_ema=False, ema_eps=0.0, reset_window=2, reset_code=False)
    set_codes(cb, RESET_CODES)
    stats = scripted(cb, [[0.0, 0.0]], [[1.0, 0.0]], 6)
    assert all(s["resets"] == 0 for s in stats)
    torch.testing.assert_close(cb.embedding, torch.tensor(RESET_CODES))     # only EMA touched it (a fixed point)
    torch.testing.assert_close(cb.embedding, cb.ema_weight / cb.ema_count[:, None])
    assert cb.idle.tolist() == [[0, 6, 6, 6], [6, 0, 6, 6]]                 # usage is still recorded

    cb = make(L=8, D=4, reset_window=1)
    cb.eval()
    before = {k: v.clone() for k, v in cb.state_dict().items()}
    for _ in range(3):
        out = cb({"audio": torch.randn(2, 3, 4), "text": torch.randn(2, 3, 4)})
    assert out.stats["resets"] == 0
    assert all(torch.equal(before[k], v) for k, v in cb.state_dict().items())


def commitment_case(names, **kw):
    cb = make(names=names, mm_ema=kw.pop("mm_ema", True), beta=0.25, reset_code=False, **kw)
    set_codes(cb, CODES)
    cb.eval()
    # one position; audio -> code 0, video -> code 1, text -> code 2
    z = {"audio": t([[0.2, 0.0]]), "video": t([[0.8, 0.0]]), "text": t([[0.0, 0.6]])}
    return cb, {m: z[m].requires_grad_() for m in names}


# MSE (mean over D = 2) of each modality's z against each code, by hand:
MSE = {("audio", "audio"): 0.04 / 2, ("audio", "video"): 0.64 / 2, ("audio", "text"): (0.04 + 1.0) / 2,
       ("video", "video"): 0.04 / 2, ("video", "audio"): 0.64 / 2, ("video", "text"): (0.64 + 1.0) / 2,
       ("text", "text"): 0.16 / 2, ("text", "audio"): 0.36 / 2, ("text", "video"): (1.0 + 0.36) / 2}


@pytest.mark.parametrize("weights,mm,names,self_w,teacher_w", [
    ("released", True, ("audio", "video"), 0.5, 0.25),
    ("released", True, ("audio", "video", "text"), 0.5, 0.125),
    ("paper", True, ("audio", "video"), 0.25, 0.125),
    ("paper", True, ("audio", "video", "text"), 0.25, 0.0625),
    ("released", False, ("audio", "video", "text"), 0.5, 0.0),
    ("paper", False, ("audio", "video"), 0.25, 0.0),
])
def test_commitment_weights_against_hand_values(weights, mm, names, self_w, teacher_w):
    cb, z = commitment_case(names, commit_weights=weights, mm_ema=mm)
    out = cb(z)
    assert cb.commitment_weights() == (self_w, teacher_w)
    for m in names:
        want = self_w * MSE[(m, m)] + sum(teacher_w * MSE[(m, n)] for n in names if n != m)
        assert out.commitment[m].item() == pytest.approx(want, rel=1e-6)
    # gradient reaches z only; the codebook is a buffer and stays without gradient
    sum(out.commitment.values()).backward()
    for m in names:
        code = {"audio": CODES[0], "video": CODES[1], "text": CODES[2]}
        want = self_w * (z[m][0, 0] - torch.tensor(code[m])) + sum(
            teacher_w * (z[m][0, 0] - torch.tensor(code[n])) for n in names if n != m)   # d/dz mean((z-e)^2) = z-e
        torch.testing.assert_close(z[m].grad[0, 0], want.detach())
    assert not any(b.requires_grad for b in cb.buffers())


def test_straight_through_output():
    cb, z = commitment_case(("audio", "video"))
    out = cb(z)
    torch.testing.assert_close(out.quantized["audio"], t([CODES[0]]))
    torch.testing.assert_close(out.quantized["video"], t([CODES[1]]))
    (out.quantized["audio"] * torch.tensor([3.0, -2.0])).sum().backward()
    torch.testing.assert_close(z["audio"].grad, t([[3.0, -2.0]]))
    assert not out.codes["audio"].requires_grad


def test_nearest_and_health():
    cb = make(L=3)
    set_codes(cb, CODES)
    idx, codes = cb.nearest(torch.tensor([[0.9, 0.2], [0.1, 0.7], [-0.1, 0.0]]))
    assert idx.tolist() == [1, 2, 0] and torch.equal(codes, torch.tensor([CODES[1], CODES[2], CODES[0]]))
    h = cb.health({"audio": torch.tensor([[0, 0, 1, 1], [2, 2, 2, 1]]), "text": torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])})
    # audio histogram (2, 3, 3)/8; text (3, 4, 1)/8
    pa, pt = torch.tensor([2, 3, 3]) / 8, torch.tensor([3, 4, 1]) / 8
    assert h["perplexity/audio"] == pytest.approx(torch.exp(-(pa * pa.log()).sum()).item(), rel=1e-6)
    assert h["perplexity/text"] == pytest.approx(torch.exp(-(pt * pt.log()).sum()).item(), rel=1e-6)
    assert (h["active_codes/audio"], h["active_codes/text"], h["shared_fraction"]) == (3, 3, 1.0)
    # per-sample modes: audio (0 [tie 0/1 -> 0], 2), text (1, 0) -> no sample agrees; then one that does
    assert h["mode_agreement"] == 0
    h = cb.health({"audio": torch.tensor([[1, 1, 0]]), "text": torch.tensor([[1, 2, 2]])})
    assert h["mode_agreement"] == 0 and h["active_codes/text"] == 2 and h["shared_fraction"] == pytest.approx(1 / 3)
    assert cb.health({"audio": torch.tensor([[1, 1, 0]]), "text": torch.tensor([[1, 2, 1]])})["mode_agreement"] == 1
    two = cb.health({"audio": torch.tensor([[1, 1, 0], [2, 2, 2]]), "text": torch.tensor([[1, 2, 1], [0, 0, 1]])})
    assert two["mode_agreement"] == 0.5                                  # a share of the clips, as the monitor logs it


def test_bad_inputs_raise():
    cb = make()
    with pytest.raises(ValueError, match="exactly the modalities"):
        cb({"audio": torch.zeros(1, 2, 2)})
    with pytest.raises(ValueError, match="share"):
        cb({"audio": torch.zeros(1, 2, 2), "text": torch.zeros(1, 3, 2)})
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        cb({"audio": torch.zeros(1, 2, 5), "text": torch.zeros(1, 2, 5)})
    with pytest.raises(ValueError, match="nearest"):
        cb.nearest(torch.zeros(3, 4))


def test_generator_state_round_trips_through_state_dict():
    torch.manual_seed(1)
    a = make(L=4)
    torch.manual_seed(2)
    b = make(L=4)
    b.load_state_dict(a.state_dict())
    assert torch.equal(torch.rand(5, generator=a._generator), torch.rand(5, generator=b._generator))


@pytest.mark.parametrize("form", ["sequential", "joint"])
@pytest.mark.parametrize("teacher", ["paired", "cross_attention"])
def test_two_half_batches_with_all_reduced_statistics_equal_the_full_batch(monkeypatch, form, teacher):
    """Simulate two data-parallel ranks by patching distributed.all_reduce_: pass 1 records each rank's local tensors, pass 2
    replays the reductions. Local statistics depend only on the pre-update codebook, so this is exact."""
    torch.manual_seed(3)
    names = ("audio", "video", "text")
    full = make(names=names, L=16, D=4, ema_form=form, ema_teacher=teacher, reset_window=1000)
    z = {m: torch.randn(6, 5, 4) * 0.3 for m in names}
    ranks = [copy.deepcopy(full), copy.deepcopy(full)]
    halves = [{m: v[:3] for m, v in z.items()}, {m: v[3:] for m, v in z.items()}]
    full(z)

    records = [[], []]
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "all_reduce_",
                            lambda x, op="sum", r=rank: records[r].append((x.clone(), op)) or x)
        copy.deepcopy(ranks[rank])(halves[rank])
    combine = {"sum": torch.add, "max": torch.maximum, "min": torch.minimum}
    for rank in (0, 1):
        calls = iter(range(len(records[0])))

        def replay(x, op="sum"):
            i = next(calls)
            return x.copy_(combine[op](records[0][i][0], records[1][i][0]))
        monkeypatch.setattr(distributed, "all_reduce_", replay)
        ranks[rank](halves[rank])
    assert [op for _, op in records[0]] == ["sum", "sum", "max"]
    for rank in ranks:
        for key in ("embedding", "ema_count", "ema_weight", "idle", "chosen"):
            torch.testing.assert_close(getattr(rank, key), getattr(full, key), rtol=1e-5, atol=1e-6)
