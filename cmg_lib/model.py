"""The Uni-Code model (paper Sec. 4, Fig. 2) for any 2-3 modalities: per-modality Phi / Psi / D networks, the shared
EMA codebook, the DCID networks (CLUB estimators, Cross-CPC) and, for the compared methods of Table 1, an extra
alignment objective.

``UniCode.forward(batch, learn_club=None)`` is the training objective of one batch; its whole loss is written out
in one function, :func:`cmg_lib.step.step_loss` (Eq. 1-8 in order). Each Table 2/3 switch removes its term there
and, for ``club`` / ``cross_cpc``, the networks behind it here. The CLUB estimators have their own objective
(:meth:`UniCode.club_loss`), stepped with their own optimiser inside the step (``learn_club``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .codebook import SharedCodebook
from .config import KNOWN_MODALITIES, Config
from .modalities import build_modality, club_feature_dim
from .objectives import ClubEstimator, CrossCPC, build_alignment
from .objectives.coarse import CoarseLevel
from .objectives.cujp import UnifiedJigsaw
from .objectives.club import learning_loss_and_grads
from .step import LossOutput, step_loss


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite, from one min/max pass (NaN propagates into both, an infinity into
    one): about 10x faster on CPU than ``isfinite(x).all()``, which writes a boolean tensor first; every batch of
    training and encoding is checked."""
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


LABEL_KEYS = frozenset({"label", "index", "mask", "frames"})


class UniCode(nn.Module):
    """Uni-Code for the modalities of ``config.model``; build with ``build_model(config)``."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        cfg = config.model
        if not cfg.modalities:
            raise ValueError("config.model.modalities is empty; use a preset such as preset('released_avt')")
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
        # FCID (book/differences.md#fcid-levels): the coarse networks, and a coarse CLUB estimator per coarse group
        self.coarse = CoarseLevel(self.modalities, cfg.hidden_dim) if cfg.coarse_codes else None
        estimators = {s.name: ClubEstimator(cfg.hidden_dim, club_feature_dim(s, cfg), cfg.club_hidden)
                      for s in cfg.modalities}
        if self.coarse is not None:
            estimators.update({f"coarse_{g}": ClubEstimator(cfg.hidden_dim, cfg.hidden_dim, cfg.club_hidden)
                               for g in self.coarse.groups()})
        self.club = nn.ModuleDict(estimators) if cfg.club else None
        self.alignment = build_alignment(cfg.alignment, cfg)
        # MICU's CUJP (book/differences.md#micu-cujp): the order classifier and its fixed piece orders
        self.jigsaw = (UnifiedJigsaw(cfg.hidden_dim, cfg.jigsaw_chunks, cfg.jigsaw_permutations, cfg.jigsaw_hidden)
                       if cfg.jigsaw else None)
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
        if not all_finite(x):
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

    def training_inputs(self, batch: dict) -> dict[str, Tensor]:
        """The configured modalities of ``batch``, validated (:meth:`validate_batch`, and B >= 2: the contrastive
        terms need in-batch negatives) and moved to the model's device and dtype."""
        b = self.validate_batch(batch)
        if b < 2:
            raise ValueError(f"the training objective needs a batch of at least 2 samples (in-batch negatives), "
                             f"got {b}")
        return {m: self._to_model(batch[m]) for m in self.modalities}

    # ------------------------------------------------------------------------------------------------ encoders
    def features(self, name: str, x: Tensor) -> Tensor:
        """What Phi and Psi see: the raw input, or the BiLSTM output for ``tokens`` modalities."""
        return self.front_ends[name](x) if name in self.front_ends else x

    def encode(self, x: Tensor, modality: str) -> Tensor:
        """What the codebook quantises per segment, ``(B, T, D)``, of one modality: the semantic features ``z =
        Phi(x)`` (Eq. 1); for FCID (``coarse_codes``) each second's coarse general vector
        (``CoarseLevel.per_segment``, released ``*_VQ_Encoder_C_split``). Mode (train/eval) is the caller's."""
        self.config.model.spec(modality)
        self._check_one(modality, x)
        x = self._to_model(x)
        z = self.semantic[modality](self.features(modality, x))
        return z if self.coarse is None else self.coarse.per_segment(z, modality)

    def quantize(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """Nearest codes of ``encode(x, modality)`` (Eq. 2): ``(indices (B,T) long, vectors (B,T,D))``; no EMA."""
        return self.codebook.nearest(self.encode(x, modality))

    # ------------------------------------------------------------------------------------------------ objective
    def forward(self, batch: dict, learn_club=None) -> LossOutput:
        """The training objective of one batch (B >= 2): :func:`cmg_lib.step.step_loss`, where every term is
        written out. In training mode the codebook's MM-EMA update and code-reset bookkeeping happen inside.
        ``learn_club(club_inputs) -> nll``: the CLUB estimators' inner steps, run before the mi terms (the
        training loop's); None: the mi terms use the estimators as they are."""
        return step_loss(self, batch, learn_club)

    def club_loss(self, club_inputs: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        """The estimators' own objective: sum over modalities of -log q(y|x) on the (detached) inputs (Eq. 4's
        variational posterior; released ``learning_loss``)."""
        if self.club is None:
            raise ValueError("club_loss needs a model built with club=True")
        return torch.stack([self.club[m].learning_loss(q.detach(), y.detach())
                            for m, (q, y) in club_inputs.items()]).sum()

    def club_loss_and_grads(self, club_inputs: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        """``club_loss(club_inputs)`` (detached) with its gradient already in the estimators' ``.grad``, as after
        ``zero_grad(); club_loss(...).backward()``, but with all estimators batched and the backward written out
        (``objectives.club.learning_loss_and_grads``): the fast path of the CLUB inner steps (``train.fast``)."""
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
        """Main parameters grouped as the released per-module ``clip_grad_norm_`` calls (``pretrain.py:534-536``):
        text BiLSTM, Encoder (all Phi and Psi; FCID's coarse encoders, part of its released Encoder), Decoder (FCID's
        coarse decoders too), CPC, and the alignment method's own parameters. MICU's order classifier is not
        clipped, as released (``pretrain_micu.py:488``, ``:711-713``)."""
        coarse = self.coarse
        groups = {"text_front_end": list(self.front_ends.parameters()),
                  "encoder": list(self.semantic.parameters()) + list(self.specific.parameters())
                  + ([] if coarse is None else [p for part in (coarse.project, coarse.general, coarse.specific)
                                                for p in part.parameters()]),
                  "decoder": list(self.decoders.parameters())
                  + ([] if coarse is None else list(coarse.decoders.parameters())),
                  "cpc": [] if self.cpc is None else list(self.cpc.parameters()),
                  "alignment": [] if self.alignment is None else list(self.alignment.parameters())}
        return {k: v for k, v in groups.items() if v}


def build_model(config: Config) -> UniCode:
    """A fresh ``UniCode`` for ``config`` (float32, on CPU; move it with ``.to(device)``)."""
    if not isinstance(config, Config):
        raise ValueError(f"build_model expects a cmg_lib.config.Config, got {type(config).__name__}")
    return UniCode(config)
