"""The Uni-Code model (paper Sec. 4, Fig. 2) for any 2-3 modalities: per-modality Phi / Psi / D networks, the shared
EMA codebook, DCID (CLUB + Cross-CPC), CMCM and, for the compared methods of Table 1, an extra alignment objective.

Main objective (released ``pretrain.py:525``, book/differences.md rows 3, 6 and 7; all weights 1):
    L = sum_m recon_m + sum_m commit_m + sum_m mi_m (CLUB, Eq. 5) + cpc (Eq. 6) + cmcm (+ alignment_weight * align)
where commit_m already carries the released 2*beta / beta/2 factors and cmcm the 0.5 factor (both inside their
modules). Each Table 2/3 switch removes its term and, for ``club`` / ``cross_cpc``, the networks behind it.

The CLUB estimators are trained alternately with their own optimiser (``club_loss``); in the released loop the mi
term entering L is computed AFTER those inner steps, so ``forward(batch, include_mi=False)`` followed by
``mi_terms(output)`` lets the training loop reproduce that order (``cmg_lib.train``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .codebook import SharedCodebook
from .distributed import gather_rows
from .config import KNOWN_MODALITIES, Config
from .modalities import Decoder, build_modality, club_feature_dim
from .objectives import AlignmentContext, ClubEstimator, CrossCPC, build_alignment
from .objectives.club import learning_loss_and_grads, mi_upper_bounds
from .objectives.cmcm import cmcm_loss

LABEL_KEYS = frozenset({"label", "index", "mask", "frames"})


@dataclass
class ModelOutput:
    """One forward pass.

    ``loss``: the main objective (scalar, with graph); ``terms``: every term as a float (``"recon/<m>"``,
    ``"commit/<m>"``, ``"mi/<m>"``, ``"cpc"``, ``"cmcm"``, ``"align"``); ``indices``: code index per modality
    ``(B, T)``; ``stats``: codebook statistics and CPC accuracies; ``club_inputs``: per modality the detached
    ``(quantized (B,T,D), club_feature (B,T,club_dim))`` the CLUB estimators learn from; ``mi_inputs``: the same
    pair with graph, for ``UniCode.mi_terms``.
    """

    loss: Tensor
    terms: dict[str, float]
    indices: dict[str, Tensor]
    stats: dict[str, float]
    club_inputs: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    mi_inputs: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)


class UniCode(nn.Module):
    """Uni-Code for the modalities of ``config.model``; build with ``build_model(config)``."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        cfg = config.model
        if not cfg.modalities:
            raise ValueError("config.model.modalities is empty; use a preset such as preset('tiny')")
        self.modalities = cfg.modality_names
        front_ends, semantic, specific, decoders = {}, {}, {}, {}
        for spec in cfg.modalities:
            parts = build_modality(spec, cfg)
            if parts["front_end"] is not None:
                front_ends[spec.name] = parts["front_end"]
            semantic[spec.name], specific[spec.name] = parts["semantic"], parts["specific"]
            decoders[spec.name] = parts["decoder"]
        self.front_ends = nn.ModuleDict(front_ends)
        self.semantic = nn.ModuleDict(semantic)
        self.specific = nn.ModuleDict(specific)
        self.decoders = nn.ModuleDict(decoders)
        self.codebook = SharedCodebook(cfg)
        self.cpc = (CrossCPC(self.modalities, cfg.hidden_dim, cfg.cpc_context, cfg.cpc_layers, cfg.cpc_steps,
                             cfg.cpc_softmax, cfg.cpc_self_weight) if cfg.cross_cpc else None)
        self.club = (nn.ModuleDict({s.name: ClubEstimator(cfg.hidden_dim, club_feature_dim(s, cfg), cfg.club_hidden)
                                    for s in cfg.modalities}) if cfg.club else None)
        self.alignment = build_alignment(cfg.alignment, cfg)
        self.step = 0
        self.metrics: dict = {}
        # Set by ``pretrain`` under DDP: the in-batch contrastive terms (Cross-CPC, CMCM, CLUB, compared methods)
        # then see the rows of every rank (see ``gather_rows``), so the objective is that of one process on the
        # concatenated batch. Every rank must run ``forward`` in lockstep while it is on.
        self.global_batch = False

    # ------------------------------------------------------------------------------------------------ validation
    def _expected(self, name: str) -> str:
        """The expected shape of one modality as text, e.g. ``(B, 10, 5, 5, 64)``."""
        spec = self.config.model.spec(name)
        return "(" + ", ".join(map(str, ("B", self.config.model.segments, *spec.feature_shape))) + ")"

    def _check_one(self, name: str, x) -> None:
        spec = self.config.model.spec(name)
        want = self._expected(name)
        if not isinstance(x, Tensor):
            raise ValueError(f"modality {name!r} must be a torch.Tensor of shape {want}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"modality {name!r} must be floating point (float32) of shape {want}, got {x.dtype}")
        if x.dim() != 2 + len(spec.feature_shape) or x.shape[0] < 1 or \
                tuple(x.shape[1:]) != (self.config.model.segments, *spec.feature_shape):
            raise ValueError(f"modality {name!r}: expected shape {want} (B, T=segments, *feature_shape), "
                             f"got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"modality {name!r} contains NaN or infinite values")

    def validate_batch(self, batch: dict) -> int:
        """Check every configured modality (shape ``(B, T, *feature_shape)``, T = segments, float, finite, one B
        for all); return B. Keys of unconfigured known modalities and label keys (containing ``/`` or one of
        ``label, index, mask, frames``) are ignored; any other key is an error."""
        if not isinstance(batch, dict):
            raise ValueError(f"a batch must be a dict of tensors keyed by modality, got {type(batch).__name__}")
        for key in batch:
            if key not in self.modalities and key not in KNOWN_MODALITIES and "/" not in key and key not in LABEL_KEYS:
                raise ValueError(f"unknown batch key {key!r}; expected the modalities {self.modalities} and "
                                 f"optionally label keys {sorted(LABEL_KEYS)} or 'segment_label/<modality>'")
        sizes = {}
        for name in self.modalities:
            if name not in batch:
                raise ValueError(f"batch is missing modality {name!r} (expected shape {self._expected(name)}); "
                                 f"it has {sorted(batch)}")
            self._check_one(name, batch[name])
            sizes[name] = batch[name].shape[0]
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all modalities need the same batch size, got {sizes}")
        return next(iter(sizes.values()))

    def _to_model(self, x: Tensor) -> Tensor:
        ref = self.codebook.embedding
        return x.to(device=ref.device, dtype=ref.dtype, non_blocking=True)

    # ------------------------------------------------------------------------------------------------ encoders
    def _features(self, name: str, x: Tensor) -> Tensor:
        """What Phi and Psi see: the raw input, or the BiLSTM output for ``tokens`` modalities."""
        return self.front_ends[name](x) if name in self.front_ends else x

    def encode(self, x: Tensor, modality: str) -> Tensor:
        """Semantic features ``z = Phi(x)`` ``(B, T, D)`` of one modality (Eq. 1); mode (train/eval) is the
        caller's."""
        self.config.model.spec(modality)
        self._check_one(modality, x)
        x = self._to_model(x)
        return self.semantic[modality](self._features(modality, x))

    def quantize(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """Nearest codes of ``encode(x, modality)`` (Eq. 2): ``(indices (B,T) long, vectors (B,T,D))``; no EMA."""
        return self.codebook.nearest(self.encode(x, modality))

    # ------------------------------------------------------------------------------------------------ objective
    def forward(self, batch: dict, include_mi: bool = True) -> ModelOutput:
        """Main objective for one batch (B >= 2). In training mode the codebook's MM-EMA update and code-reset
        bookkeeping happen here (inside ``SharedCodebook.forward``). ``include_mi=False`` leaves the CLUB mi terms
        out of ``loss`` (the training loop adds ``mi_terms`` after the estimators' inner steps)."""
        b = self.validate_batch(batch)
        if b < 2:
            raise ValueError(f"the training objective needs a batch of at least 2 samples (in-batch negatives), "
                             f"got {b}")
        cfg = self.config.model
        inputs = {m: self._to_model(batch[m]) for m in self.modalities}
        feats = {m: self._features(m, inputs[m]) for m in self.modalities}
        z = {m: self.semantic[m](feats[m]) for m in self.modalities}
        specific = {m: self.specific[m](feats[m]) for m in self.modalities}        # (specific, club_feature)
        # The released quantizer computes CMCM with the codebook as it was BEFORE this forward's EMA update
        # (book/differences.md rows 2 and 7): CMCM is evaluated first (cmcm_loss keeps its own copy of the codes), and the
        # compared methods get a snapshot taken before the update.
        gather = gather_rows if self.global_batch else _identity
        z_all = {m: gather(v) for m, v in z.items()}                # all ranks' rows for the contrastive terms
        cmcm = cmcm_loss(z_all, self.codebook.embedding, temperature=cfg.cmcm_temperature) if cfg.cmcm else None
        embedding_before = self.codebook.embedding.detach().clone() if self.alignment is not None else None
        vq = self.codebook(z)

        losses: dict[str, Tensor] = {}
        for m in self.modalities:
            recon = self.decoders[m](vq.quantized[m], specific[m][0])
            losses[f"recon/{m}"] = Decoder.loss(recon, feats[m])  # tokens: target = BiLSTM output (released)
        for m in self.modalities:
            losses[f"commit/{m}"] = vq.commitment[m]
        stats = {k: float(v) for k, v in vq.stats.items()}
        if self.cpc is not None:
            losses["cpc"], cpc_stats = self.cpc(z_all)
            stats.update(cpc_stats)
        if cfg.cmcm:
            losses["cmcm"] = cmcm
        if self.alignment is not None:
            ctx = AlignmentContext(z=z_all, quantized={m: gather(v) for m, v in vq.quantized.items()},
                                   indices={m: gather(v) for m, v in vq.indices.items()}, embedding=embedding_before)
            losses["align"] = cfg.alignment_weight * self.alignment(ctx)
        mi_inputs, club_inputs = {}, {}
        if self.club is not None:
            # club_grad="specific" (book/differences.md row 18): the mi terms train Psi only, the code is a constant
            code = (lambda q: q.detach()) if cfg.club_grad == "specific" else _identity
            mi_inputs = {m: (gather(code(vq.quantized[m])), gather(specific[m][1])) for m in self.modalities}
            dtype = self.codebook.embedding.dtype          # the estimators train outside autocast (model dtype)
            club_inputs = {m: (q.detach().to(dtype), y.detach().to(dtype)) for m, (q, y) in mi_inputs.items()}
        out = ModelOutput(loss=_total(losses), terms={}, indices=vq.indices, stats=stats,
                          club_inputs=club_inputs, mi_inputs=mi_inputs)
        if include_mi and self.club is not None:
            losses.update(self.mi_terms(out))
            out.loss = _total(losses)
        out.terms = {k: float(v.detach()) for k, v in losses.items()}
        return out

    def mi_terms(self, output: ModelOutput) -> dict[str, Tensor]:
        """CLUB upper bounds ``{"mi/<m>": I(quantized^m; club_feature^m)}`` (Eq. 5 / released ``mi_est``) with the
        estimators' current weights, differentiable w.r.t. the main networks; empty when ``club`` is off. All
        estimators run batched (``objectives.club.mi_upper_bounds``; equal to each one's ``mi_upper_bound``)."""
        if self.club is None:
            return {}
        names = list(output.mi_inputs)
        bounds = mi_upper_bounds([self.club[m] for m in names], [output.mi_inputs[m] for m in names],
                                 self.config.model.club_negatives)
        return {f"mi/{m}": bound for m, bound in zip(names, bounds)}

    def club_loss(self, club_inputs: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        """The estimators' own objective: sum over modalities of -log q(y|x) on the (detached) inputs."""
        if self.club is None:
            raise ValueError("club_loss needs a model built with club=True")
        return torch.stack([self.club[m].learning_loss(q.detach(), y.detach())
                            for m, (q, y) in club_inputs.items()]).sum()

    def club_loss_and_grads(self, club_inputs: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        """``club_loss(club_inputs)`` (detached) with its gradient already in the estimators' ``.grad``, as after
        ``zero_grad(); club_loss(...).backward()``, but with all estimators batched and the backward written out
        (``objectives.club.learning_loss_and_grads``); what the training loop runs ``club_steps`` times."""
        if self.club is None:
            raise ValueError("club_loss_and_grads needs a model built with club=True")
        names = list(club_inputs)
        return learning_loss_and_grads([self.club[m] for m in names], [club_inputs[m] for m in names])

    # ------------------------------------------------------------------------------------------------ parameters
    def club_parameters(self) -> list[nn.Parameter]:
        return [] if self.club is None else list(self.club.parameters())

    def main_parameters(self) -> list[nn.Parameter]:
        club = {id(p) for p in self.club_parameters()}
        return [p for p in self.parameters() if id(p) not in club]

    def clip_groups(self) -> dict[str, list[nn.Parameter]]:
        """Main parameters grouped as the released per-module ``clip_grad_norm_`` calls (book/differences.md row 6):
        text BiLSTM, Encoder (all Phi and Psi), Decoder, CPC, and the alignment method's own parameters."""
        groups = {"text_front_end": list(self.front_ends.parameters()),
                  "encoder": list(self.semantic.parameters()) + list(self.specific.parameters()),
                  "decoder": list(self.decoders.parameters()),
                  "cpc": [] if self.cpc is None else list(self.cpc.parameters()),
                  "alignment": [] if self.alignment is None else list(self.alignment.parameters())}
        return {k: v for k, v in groups.items() if v}


def _identity(x: Tensor) -> Tensor:
    return x


def _total(losses: dict[str, Tensor]) -> Tensor:
    """Sum of scalar terms in float32, or float64 for a model run in double (under bf16 autocast some terms come
    back in bf16)."""
    dtype = torch.float64 if any(v.dtype == torch.float64 for v in losses.values()) else torch.float32
    return torch.stack([v.to(dtype) for v in losses.values()]).sum()


def build_model(config: Config) -> UniCode:
    """A fresh ``UniCode`` for ``config`` (float32, on CPU; move it with ``.to(device)``)."""
    if not isinstance(config, Config):
        raise ValueError(f"build_model expects a cmg_lib.config.Config, got {type(config).__name__}")
    return UniCode(config)
