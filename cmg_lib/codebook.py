"""The shared discrete codebook of Uni-Code: nearest code (Eq. 2), straight-through output, commitment with teacher
codes (Eq. 3 / Eq. 8), multi-modal EMA (MM-EMA, Eq. 7) and the reset of inactive codes (Sec. 4.3).

One code path serves any set of 2 or 3 modalities (``cfg.modality_names``, in that order; the released AVT code
updates audio, then video, then text). Paper-vs-released choices follow ``ModelConfig`` (defaults = released
``Cross_VQEmbeddingEMA_AVT``, book/differences.md#ema-teacher, #ema-form, #commit-weights, #reset-rule and
#released-defects):

* ``ema_form``: ``"sequential"`` (released, one EMA sub-update per modality, book/differences.md#ema-form) or
  ``"joint"`` (paper Eq. 7, one update per forward with the counts and volumes of all modalities).
* ``ema_teacher``: ``"paired"`` (released: the other modality's vector at the same (sample, time)) or
  ``"cross_attention"`` (paper: ``r^b = cross-att(z^a; z^b; z^b)``).
* ``commit_weights``: ``"released"`` (self term 2*beta, book/differences.md#commit-weights) or ``"paper"`` (Eq. 8).
* ``reset_rule``: ``"released"`` (reset a code no modality used for more than ``reset_window`` forwards) or
  ``"paper"`` (keep a code only if every modality chose it within the last ``reset_window`` forwards).
* ``released_quirks``: ``ema_count`` starts at zero as released (book/differences.md#ema-counts-at-zero: codes not
  chosen in the first batch jump to huge norms). The corrected default starts it at one, so an unchosen code
  keeps its initial vector (``e = ema_weight / ema_count``).

The codebook never receives a gradient: all state lives in buffers (saved in ``state_dict``) and is changed only
under ``torch.no_grad`` in training mode. Unlike the released code, usage bookkeeping and resets also run only in
training mode (released counts inactivity in eval forwards too, book/differences.md#reset-rule), so evaluation leaves
every buffer untouched.

Distributed data parallel: the per-code counts and vector sums are all-reduced (SUM) before the EMA update and the
per-code usage is all-reduced (MAX) before the reset decision, through ``distributed.all_reduce_``, a no-op without
``torch.distributed``; the random reset choices are broadcast from rank 0 (``distributed.broadcast_``). Every rank thus
holds the codebook that one process would compute on the concatenated batch. ``stats`` describe the local batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed, usage
from .config import ModelConfig

__all__ = ["SharedCodebook", "CodebookOutput"]

RESET_NOISE = 1.0 / 1024          # released re-initialisation noise U(-1/1024, 1/1024) (book/differences.md#reset-rule)
RECENT_FRACTION = 3               # released: a source code must be active within 100 of the 300 window forwards

@dataclass
class CodebookOutput:
    """What one codebook forward returns; every dict is keyed by modality name.

    ``indices`` ``(B, T)`` long and ``codes`` ``(B, T, D)`` (raw code vectors, no gradient) come from the codebook
    *before* this forward's EMA update; ``quantized`` is the straight-through ``z + (e - z).detach()`` (value = code,
    gradient = identity into z); ``commitment`` the scalar commitment loss of each modality (Eq. 3 / 8); ``stats``
    detached floats for logging (:meth:`SharedCodebook.window_usage` and the number of resets); ``usage`` the
    batch's code histograms and mode agreement (``usage.CodeCounts``, whose ``health`` names their measures).
    """

    indices: dict[str, Tensor]
    codes: dict[str, Tensor]
    quantized: dict[str, Tensor]
    commitment: dict[str, Tensor]
    stats: dict[str, float] = field(default_factory=dict)
    usage: usage.CodeCounts | None = None


class SharedCodebook(nn.Module):
    """One codebook of ``L = cfg.codebook_size`` vectors of width ``D = cfg.hidden_dim`` shared by all modalities.

    Buffers: ``embedding (L, D)`` (the codes, initialised U(-1/L, 1/L) as released), ``ema_count (L,)`` (N of
    Eq. 7), ``ema_weight (L, D)`` (o of Eq. 7), ``idle (M, L)`` long (training forwards since modality m last chose
    code k, or since the code was created or reset), ``chosen (M, L)`` bool (whether m chose k since it was created
    or reset). Code k counts as chosen by modality m "within the last window" iff ``chosen[m, k] and idle[m, k] <
    reset_window``. The reset generator's state is saved as the module's extra state (``..._extra_state`` in the
    ``state_dict``), so a resumed run draws the same resets.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        names = tuple(cfg.modality_names)
        if not 2 <= len(names) <= 3:
            raise ValueError(f"SharedCodebook needs 2 or 3 modalities in cfg.modalities, got {names}")
        if cfg.codebook_size < 2 or cfg.hidden_dim < 1:
            raise ValueError(f"codebook_size must be >= 2 and hidden_dim >= 1, got {cfg.codebook_size}, "
                             f"{cfg.hidden_dim}")
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
        if cfg.ema_eps < 0 or cfg.beta < 0:
            raise ValueError(f"ema_eps and beta must be >= 0, got {cfg.ema_eps}, {cfg.beta}")
        if cfg.reset_window < 1:
            raise ValueError(f"reset_window must be >= 1 forward, got {cfg.reset_window}")
        self.modality_names = names
        self.codebook_size = L = int(cfg.codebook_size)
        self.dim = D = int(cfg.hidden_dim)
        self.beta = float(cfg.beta)
        self.decay = float(cfg.ema_decay)
        self.eps = float(cfg.ema_eps)
        self.reset_window = int(cfg.reset_window)
        self.ema_teacher = cfg.ema_teacher
        self.ema_form = cfg.ema_form
        self.commit_weights = cfg.commit_weights
        self.reset_rule = cfg.reset_rule
        self.released_quirks = bool(cfg.released_quirks)
        self.mm_ema = bool(cfg.mm_ema)
        self.reset_code = bool(cfg.reset_code)

        embedding = torch.empty(L, D).uniform_(-1.0 / L, 1.0 / L)
        self.register_buffer("embedding", embedding)
        # Released: ema_count = zeros (book/differences.md#ema-counts-at-zero); corrected: ones, so e = ema_weight /
        # ema_count = init.
        self.register_buffer("ema_count", torch.zeros(L) if self.released_quirks else torch.ones(L))
        self.register_buffer("ema_weight", embedding.clone())
        self.reset_stats = cfg.reset_stats
        if cfg.codebook_init == "data":       # book/differences.md#codebook-init: codes start as the first batch's z
            self.register_buffer("pending_init", torch.ones((), dtype=torch.bool))
        self.register_buffer("idle", torch.zeros(len(names), L, dtype=torch.long))
        self.register_buffer("chosen", torch.zeros(len(names), L, dtype=torch.bool))
        # Reset draws come from an owned generator seeded from the global torch RNG: deterministic for a seed and
        # independent of other consumers of the global RNG during training. Its state rides in the state_dict.
        self._generator = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,)).item()))

    # ------------------------------------------------------------------------------------------------ state
    def get_extra_state(self) -> Tensor:
        return self._generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self._generator.set_state(state)

    def extra_repr(self) -> str:
        return (f"modalities={self.modality_names}, codebook_size={self.codebook_size}, dim={self.dim}, "
                f"mm_ema={self.mm_ema} ({self.ema_form}, {self.ema_teacher}), reset_code={self.reset_code} "
                f"({self.reset_rule}, window={self.reset_window}), commit_weights={self.commit_weights}, "
                f"released_quirks={self.released_quirks}")

    # ------------------------------------------------------------------------------------------------ Eq. 2
    @torch.no_grad()
    def nearest(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest code of each vector (Eq. 2): ``z (..., D)`` -> ``indices (...)`` long and ``codes (..., D)``.

        Squared Euclidean distance ``|e|^2 + |z|^2 - 2 z.e`` through one ``addmm`` as released
        (book/differences.md#ema-form), in float32, without gradient; ties go to the lower index."""
        if not isinstance(z, Tensor) or not z.is_floating_point() or z.dim() < 1 or z.shape[-1] != self.dim:
            raise ValueError(f"nearest expects a float tensor (..., {self.dim}), got "
                             f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.detach().reshape(-1, self.dim).to(self.embedding.dtype)
            codes = self.embedding
            distance = torch.addmm((codes * codes).sum(1)[None, :] + (flat * flat).sum(1, keepdim=True),
                                   flat, codes.t(), beta=1.0, alpha=-2.0)
            indices = distance.argmin(dim=1)
            return indices.view(z.shape[:-1]), codes[indices].view(*z.shape[:-1], self.dim)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, z: dict[str, Tensor]) -> CodebookOutput:
        """Quantise every modality's semantic features ``z[m] (B, T, D)`` (pre-quantisation, with gradient).

        Order as released (book/differences.md#ema-teacher, #ema-form, #commit-weights, #reset-rule): (1) indices and
        codes of all modalities with the pre-update codebook; (2) commitment losses; (3) in training mode only: the EMA
        update, then usage bookkeeping and code reset."""
        self._check_inputs(z)
        names = self.modality_names
        with torch.autocast(device_type=self.embedding.device.type, enabled=False):
            features = {m: z[m].to(self.embedding.dtype) for m in names}
            stacked = torch.stack([features[m] for m in names])                      # (M, B, T, D)
            if self.training and bool(getattr(self, "pending_init", False)):
                self._init_from_data(stacked.detach())
            flat_indices, flat_codes = self.nearest(stacked)
            indices = {m: flat_indices[i] for i, m in enumerate(names)}
            codes = {m: flat_codes[i] for i, m in enumerate(names)}
            quantized = {m: z[m] + (codes[m].to(z[m].dtype) - z[m]).detach() for m in names}
            commitment = self._commitment(features, codes)
            resets = 0
            if self.training:
                with torch.no_grad():
                    detached = {m: features[m].detach() for m in names}
                    self._ema_update(detached, indices)
                    resets = self._track_usage_and_reset(indices)
        counts = usage.CodeCounts.of(flat_indices, self.codebook_size)
        stats = {**self.window_usage(), "resets": float(resets)}
        return CodebookOutput(indices=indices, codes=codes, quantized=quantized, commitment=commitment, stats=stats,
                              usage=counts)

    @torch.no_grad()
    def _init_from_data(self, stacked: Tensor) -> None:
        """``codebook_init="data"``: every code becomes a distinct random vector of the first training batch (all
        modalities pooled; drawn with replacement only if the batch has fewer vectors than codes), its EMA
        statistics that vector with count 1; rank 0's draw is broadcast."""
        flat = stacked.reshape(-1, self.dim)
        n, L = flat.shape[0], self.codebook_size
        order = torch.randperm(n, generator=self._generator)
        pick = order[:L] if n >= L else torch.randint(n, (L,), generator=self._generator)
        new = flat[pick.to(flat.device)].clone()
        distributed.broadcast_(new)
        self.embedding.copy_(new)
        self.ema_weight.copy_(new)
        self.ema_count.fill_(1.0)
        self.pending_init.fill_(False)

    def _check_inputs(self, z: dict[str, Tensor]) -> None:
        if not isinstance(z, dict) or set(z) != set(self.modality_names):
            got = sorted(z) if isinstance(z, dict) else type(z).__name__
            raise ValueError(f"SharedCodebook expects a dict with exactly the modalities {self.modality_names}, "
                             f"got {got}")
        shapes = {m: tuple(t.shape) for m, t in z.items()}
        first = shapes[self.modality_names[0]]
        for m, t in z.items():
            if not t.is_floating_point() or t.dim() != 3 or t.shape[-1] != self.dim:
                raise ValueError(f"z[{m!r}] must be a float tensor (B, T, {self.dim}), got {t.dtype} {shapes[m]}")
        if len(set(shapes.values())) != 1:
            raise ValueError(f"all modalities must share (B, T, D) (teacher codes pair positions), got {shapes} "
                             f"(first: {first})")

    # ------------------------------------------------------------------------------------------------ Eq. 3 / 8
    def commitment_weights(self) -> tuple[float, float]:
        """(self weight, weight of each teacher term) of the commitment loss.

        ``released`` (book/differences.md#commit-weights): self 2*beta; teachers beta/(M-1) each (AV 0.5 + 0.25, AVT 0.5
        + 0.125 + 0.125 for beta = 0.25). ``paper`` (Eq. 8): self beta, teachers beta/2 in total, i.e. beta/(2(M-1))
        each; Eq. 8 is written for two modalities and this is our generalisation to three. Without MM-EMA (baseline and
        DCID rows of Table 2) the teacher terms are absent and the self term keeps its weight."""
        teachers = len(self.modality_names) - 1
        if self.commit_weights == "released":
            self_weight, teacher_total = 2.0 * self.beta, self.beta
        else:
            self_weight, teacher_total = self.beta, self.beta / 2.0
        return self_weight, (teacher_total / teachers if self.mm_ema else 0.0)

    def _commitment(self, z: dict[str, Tensor], codes: dict[str, Tensor]) -> dict[str, Tensor]:
        """Eq. 3 / Eq. 8 with ``F.mse_loss`` means against the (constant) codes; ``codes[n]`` is the code chosen by
        teacher modality n at the same (b, t)."""
        self_weight, teacher_weight = self.commitment_weights()
        losses = {}
        for m in self.modality_names:
            loss = self_weight * F.mse_loss(z[m], codes[m])
            if teacher_weight:
                for n in self.modality_names:
                    if n != m:
                        loss = loss + teacher_weight * F.mse_loss(z[m], codes[n])
            losses[m] = loss
        return losses

    # ------------------------------------------------------------------------------------------------ Eq. 7
    def teacher(self, student: Tensor, other: Tensor) -> Tensor:
        """The teacher vector r that modality ``other`` offers ``student`` at every (b, t), both ``(B, T, D)``.

        ``paired`` (released, book/differences.md#ema-teacher): the other modality's vector at the same position.
        ``cross_attention`` (paper): ``r = softmax(z^a z^b^T / sqrt(D)) z^b`` over the T positions of the same
        sample. It is parameter-free on purpose: no gradient ever reaches the EMA update, so query/key/value
        projections inside it could never be trained (the maintainer dropped the cross-attention for the release,
        issue #24)."""
        if self.ema_teacher == "paired":
            return other
        attention = torch.softmax(student @ other.transpose(1, 2) / math.sqrt(self.dim), dim=-1)   # (B, T, T)
        return attention @ other

    def ema_inputs(self, z: dict[str, Tensor]) -> Tensor:
        """The vector each position contributes to the EMA volume, ``(M, B*T, D)`` in modality order.

        MM-EMA: ``0.5 z^m + 0.5 mean_n r^n`` over the other modalities n (AV 0.5/0.5, AVT 0.5/0.25/0.25 as released,
        book/differences.md#ema-form; for the joint form this is Eq. 7's ``(z + r)/2``, with r averaged over the two
        teachers for three modalities). Plain EMA (``mm_ema=False``): ``z^m`` itself."""
        names = self.modality_names
        rows = []
        for m in names:
            if self.mm_ema:
                teachers = torch.stack([self.teacher(z[m], z[n]) for n in names if n != m]).mean(0)
                rows.append(0.5 * z[m] + 0.5 * teachers)
            else:
                rows.append(z[m])
        return torch.stack(rows).reshape(len(names), -1, self.dim)

    def batch_statistics(self, z: dict[str, Tensor], indices: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-modality code counts ``n^m (M, L)`` and volume sums ``(M, L, D)`` of this batch (scatter-add, no
        loop over codes). Both are additive over batch shards, which is what makes the all-reduce exact."""
        M, L, D = len(self.modality_names), self.codebook_size, self.dim
        mix = self.ema_inputs(z)                                                         # (M, N, D)
        idx = torch.stack([indices[m].reshape(-1) for m in self.modality_names])          # (M, N)
        flat = (idx + L * torch.arange(M, device=idx.device)[:, None]).reshape(-1)
        counts = mix.new_zeros(M * L).index_add_(0, flat, torch.ones_like(flat, dtype=mix.dtype))
        sums = mix.new_zeros(M * L, D).index_add_(0, flat, mix.reshape(-1, D))
        return counts.view(M, L), sums.view(M, L, D)

    def _ema_update(self, z: dict[str, Tensor], indices: dict[str, Tensor]) -> None:
        """Eq. 7 (``joint``) or the released per-modality sub-updates (``sequential``), each step being
        ``N <- g N + (1-g) n``; Laplace smoothing ``N <- (N + eps) / (sum N + L eps) * sum N``;
        ``o <- g o + (1-g) sum``; finally ``e <- o / N`` (the released code recomputes e after every sub-update,
        but only the last value is ever read)."""
        counts, sums = self.batch_statistics(z, indices)
        distributed.all_reduce_(counts, "sum")
        distributed.all_reduce_(sums, "sum")
        if self.ema_form == "joint":
            counts, sums = counts.sum(0, keepdim=True), sums.sum(0, keepdim=True)
        g, L = self.decay, self.codebook_size
        count, weight = self.ema_count, self.ema_weight
        for step_counts, step_sums in zip(counts, sums):
            count = g * count + (1.0 - g) * step_counts
            total = count.sum()
            count = (count + self.eps) / (total + L * self.eps) * total
            weight = g * weight + (1.0 - g) * step_sums
        self.ema_count.copy_(count)
        self.ema_weight.copy_(weight)
        self.embedding.copy_(weight / count[:, None])

    # ------------------------------------------------------------------------------------------------ reset
    def _track_usage_and_reset(self, indices: dict[str, Tensor]) -> int:
        """Update ``idle``/``chosen`` with this forward's (all-reduced) usage, then reset inactive codes.

        ``released`` rule (book/differences.md#reset-rule): reset a code no modality chose for more than
        ``reset_window`` consecutive training forwards; the new vector is a random recently active code (chosen by some
        modality within the last ``reset_window // 3`` forwards, as released uses count < 100 for a window of 300;
        unlike released, a just-reset code does not count as active until it is really chosen) plus U(-1/1024, 1/1024)
        noise; the EMA statistics are left untouched as released, so the next training forward's ``e <- o / N``
        overwrites the new vector unless the code is chosen right away (``reset_stats="reset"``,
        book/differences.md#reset-stats: they are set to the new vector with count 1, so the reset sticks).
        ``paper`` rule (Sec. 4.3): keep a code only if every modality chose it within the last ``reset_window``
        forwards; the others are reset the same way and, our reading of the paper, their EMA statistics too
        (``ema_weight`` = new vector, ``ema_count`` = 1) so that the reset sticks.
        ``idle`` starts at 0 at construction and after a reset, so a new code gets a full window of grace (the
        released counter starts at -1, one forward more). Returns the number of codes reset."""
        M, L = len(self.modality_names), self.codebook_size
        idx = torch.stack([indices[m].reshape(-1) for m in self.modality_names])
        used = torch.zeros(M, L, dtype=torch.long, device=idx.device).scatter_(1, idx, 1)
        distributed.all_reduce_(used, "max")
        used = used.bool()
        self.idle.copy_(torch.where(used, torch.zeros_like(self.idle), self.idle + 1))
        self.chosen |= used
        if not self.reset_code:
            return 0
        window = self.reset_window
        if self.reset_rule == "released":
            reset = self.idle.min(0).values > window
        else:
            reset = (self.idle >= window).any(0)
        recent = (self.chosen & (self.idle < max(1, window // RECENT_FRACTION))).any(0) & ~reset
        n_reset, n_sources = int(reset.sum()), int(recent.sum())
        if n_reset == 0 or n_sources == 0:
            return 0
        sources = recent.nonzero().squeeze(1)
        pick = torch.randint(n_sources, (n_reset,), generator=self._generator).to(self.embedding.device)
        noise = torch.rand(n_reset, self.dim, generator=self._generator).to(self.embedding.device)
        noise = (2.0 * noise - 1.0) * RESET_NOISE
        distributed.broadcast_(pick)
        distributed.broadcast_(noise)
        new = self.embedding[sources[pick]] + noise
        self.embedding[reset] = new
        self.idle[:, reset] = 0
        self.chosen[:, reset] = False
        if self.reset_rule == "paper" or self.reset_stats == "reset":
            self.ema_weight[reset] = new
            self.ema_count[reset] = 1.0
        return n_reset

    # ------------------------------------------------------------------------------------------------ health
    @torch.no_grad()
    def health(self, indices: dict[str, Tensor]) -> dict[str, float]:
        """Codebook health of one batch of indices (each ``(B, T)``, any subset of >= 1 modalities):
        ``usage.CodeCounts.health`` (perplexity and codes used per modality, the shared fraction, the share of
        clips whose mode code over T, lowest index on ties, is the same in every modality: released ``equal_num``,
        book/differences.md#reset-rule). A forward returns the same counts as ``CodebookOutput.usage``."""
        if not indices:
            raise ValueError("health needs at least one modality's indices")
        names = list(indices)
        shapes = {m: tuple(indices[m].shape) for m in names}
        if len(set(shapes.values())) != 1 or len(shapes[names[0]]) != 2:
            raise ValueError(f"health expects (B, T) indices of one shape for every modality, got {shapes}")
        idx = torch.stack([indices[m] for m in names]).long()                              # (M, B, T)
        return usage.CodeCounts.of(idx, self.codebook_size).health(names)

    @torch.no_grad()
    def window_usage(self) -> dict[str, float]:
        """Usage over the last ``reset_window`` training forwards: ``window_active`` (codes chosen by any
        modality), ``window_shared`` (by every modality) and ``window_shared_fraction`` (their ratio)."""
        within = self.chosen & (self.idle < self.reset_window)
        active, shared = within.any(0).sum(), within.all(0).sum()
        values = torch.stack([active.float(), shared.float(), shared / active.clamp_min(1)]).tolist()
        return {"window_active": values[0], "window_shared": values[1], "window_shared_fraction": values[2]}
