"""The whole loss of one Uni-Code training step, in one function: :func:`step_loss` (paper Sec. 4, Eq. 1-8).

    L = sum_m recon_m (Eq. 3) + sum_m commit_m (Eq. 3 / 8) + w sum_m mi_m (CLUB, Eq. 4-5) + cpc (Eq. 6) + cmcm
        (+ alignment_weight * align, the compared methods of Table 1)
        (+ the successors' terms, weight 1: FCID's coarse reconstruction and coarse InfoNCE, MICU's FCMI and CUJP)

summed in that order, as the released ``pretrain.py:525`` sums it, all weights 1 (the mi weight w is ``club_weight``,
released 1; commit_m carries the released 2*beta / beta/2 factors and cmcm the 0.5 factor inside their modules;
book/differences.md#commit-weights, #cmcm-form). A Table 2/3 switch removes its term. Adding a term means adding it
here.

Uni-Code's successors are switches of the same function (``METHODS["fcid"]``, ``["micu"]``): FCID
(``coarse_codes``, book/differences.md#fcid-levels) moves the codebook to one coarse vector per clip, so the
commitment, MM-EMA, reset and CMCM act on it, while the decoder and CLUB of each second read the continuous z; it
adds a coarse reconstruction (``recon_coarse/<m>``), a coarse CLUB per coarse group (``mi/coarse_<group>``) and the
coarse InfoNCE (``nce_coarse``). MICU keeps Uni-Code's codebook, drops CLUB, Cross-CPC and CMCM (its switches) and
adds FCMI on z (``fcmi/fine``, ``fcmi/coarse``) and CUJP on the codes (``cujp``).

Order of computation (what the random draws and the codebook's in-place EMA update need): the encoders; CMCM on the
codebook as it was *before* this batch's MM-EMA update (released); the codebook (nearest codes, commitment, MM-EMA
update, code reset); reconstruction; Cross-CPC; the alignment term; then the CLUB estimators' own inner steps on the
detached pairs (``learn_club``) and the mi terms with the *updated* estimators (released order,
book/differences.md#club-negatives). The released loop computes Cross-CPC and reconstruction after the inner steps; they
do not depend on the estimators, so only the order of the random draws differs.

``config.train.fast`` (default True) is the one switch between two computations of the same function: the fast
path runs every CLUB estimator batched (``objectives.club.mi_upper_bounds``; the inner steps' backward written out
in ``UniCode.club_loss_and_grads``) and lets the grid decoder multiply its constant code once per map
(``SmallMapConv(constant=...)``); ``fast=False`` is the plain reference: one estimator at a time through autograd
and the code concatenated at every map position (tests/test_train.py checks that both give the same step).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .distributed import gather_rows
from .modalities import Decoder
from .objectives import AlignmentContext
from .objectives.club import mi_upper_bounds
from .objectives.cmcm import cmcm_loss
from .objectives.coarse import coarse_infonce
from .objectives.fcmi import fcmi_losses, time_mask
from .usage import CodeCounts

Pair = tuple[Tensor, Tensor]


@dataclass
class LossOutput:
    """One step's loss. ``loss``: the total (scalar, with graph); ``terms``: every term with its graph, in the
    order of the sum (``"recon/<m>"``, ``"commit/<m>"``, ``"mi/<m>"``, ``"cpc"``, ``"cmcm"``, ``"align"``; the
    successors' ``"recon_coarse/<m>"`` after the recon terms, ``"mi/coarse_<group>"``, then ``"nce_coarse"``,
    ``"fcmi/fine"``, ``"fcmi/coarse"``, ``"cujp"``);
    ``indices``: code index per modality ``(B, T)``; ``stats``: codebook statistics and Cross-CPC accuracies
    (floats); ``club_inputs``: per modality the detached ``(quantized (B,T,D), club_feature (B,T,club_dim))`` the
    CLUB estimators learn from; ``club_nll``: their objective at the last inner step (None without one);
    ``code_counts``: the batch's code histograms and mode agreement (``usage.CodeCounts``, from the codebook)."""

    loss: Tensor
    terms: dict[str, Tensor]
    indices: dict[str, Tensor]
    stats: dict[str, float]
    club_inputs: dict[str, Pair] = field(default_factory=dict)
    club_nll: Tensor | None = None
    code_counts: CodeCounts | None = None

    def values(self) -> dict[str, float]:
        """The terms as floats (for logging)."""
        return {k: float(v.detach()) for k, v in self.terms.items()}


def step_loss(model: nn.Module, batch: dict, learn_club: Callable[[dict[str, Pair]], Tensor] | None = None
              ) -> LossOutput:
    """The loss of one training step of ``model`` (a ``UniCode``) on ``batch`` (see the module docstring).

    In training mode the codebook's MM-EMA update and code reset happen here (inside ``SharedCodebook.forward``).
    ``learn_club(club_inputs) -> nll`` runs the CLUB estimators' inner steps (``train.Trainer.learn_club``) before
    the mi terms; None leaves the estimators as they are. The mi terms train the main networks only.
    """
    cfg, fast = model.config.model, model.config.train.fast
    x = model.training_inputs(batch)
    feats = {m: model.features(m, x[m]) for m in model.modalities}              # text: the BiLSTM front-end
    z = {m: model.semantic[m](feats[m]) for m in model.modalities}              # Eq. 1: semantic z = Phi(x)
    specific = {m: model.specific[m](feats[m]) for m in model.modalities}       # Eq. 1: (Psi(x), CLUB feature)
    # under DDP the contrastive terms see every rank's rows (UniCode.global_batch; cmg_lib.distributed)
    gather = gather_rows if model.global_batch else _identity
    z_all = {m: gather(v) for m, v in z.items()}
    # FCID (book/differences.md#fcid-levels): the codebook quantises one coarse vector per clip ((B, 1, D)); the
    # per-second z stays continuous and is what the fine level's decoder and CLUB read
    coarse = model.coarse(z) if model.coarse is not None else None
    to_quantize = z if coarse is None else {m: c.general.unsqueeze(1) for m, c in coarse.items()}
    # CMCM and the compared methods read the codebook as it was BEFORE this batch's EMA update (released;
    # book/differences.md#ema-form, #cmcm-form): CMCM first (cmcm_loss copies the codes), the methods get a snapshot
    cmcm = (cmcm_loss({m: gather(v) for m, v in to_quantize.items()}, model.codebook.embedding,
                      temperature=cfg.cmcm_temperature) if cfg.cmcm else None)
    embedding_before = model.codebook.embedding.detach().clone() if model.alignment is not None else None
    vq = model.codebook(to_quantize)             # Eq. 2 nearest codes, Eq. 3/8 commitment, Eq. 7 MM-EMA, code reset
    fine = vq.quantized if coarse is None else z                # what the fine level's decoder and CLUB read

    # Eq. 3 (text: target = the BiLSTM output); recon_trains_code=False: the code enters as a constant, so the
    # reconstruction trains the decoder and Psi but not Phi (the "why" chapter's CLUB experiment)
    code_in = _identity if cfg.recon_trains_code else (lambda q: q.detach())
    recon = {f"recon/{m}": Decoder.loss(model.decoders[m](code_in(fine[m]), specific[m][0], fast=fast),
                                        feats[m]) for m in model.modalities}
    if coarse is not None:                                       # FCID's coarse reconstruction of each clip vector
        recon.update({f"recon_coarse/{m}": model.coarse.reconstruction(m, code_in(vq.quantized[m][:, 0]), coarse[m])
                      for m in model.modalities})
    commit = {f"commit/{m}": vq.commitment[m] for m in model.modalities}         # Eq. 3 / 8
    stats = {k: float(v) for k, v in vq.stats.items()}
    cpc = None
    if model.cpc is not None:
        cpc, cpc_stats = model.cpc(z_all)                                        # Eq. 6
        stats.update(cpc_stats)
    align = None
    if model.alignment is not None:                                              # Table 1's compared methods
        ctx = AlignmentContext(z=z_all, quantized={m: gather(v) for m, v in vq.quantized.items()},
                               indices={m: gather(v) for m, v in vq.indices.items()}, embedding=embedding_before)
        align = cfg.alignment_weight * model.alignment(ctx)
    mi, club_inputs, club_nll = {}, {}, None
    if model.club is not None:
        # CLUB's pairs (quantized code, CLUB feature); club_grad="specific" (book/differences.md#club-grad): the mi
        # terms train Psi only, the code is a constant
        code = (lambda q: q.detach()) if cfg.club_grad == "specific" else _identity
        # club_y_scale="standardized" (book/differences.md#club-y-scale): y per feature over the batch's rows
        scale = standardized if cfg.club_y_scale == "standardized" else _identity
        pairs = {m: (gather(code(fine[m])), scale(gather(specific[m][1]))) for m in model.modalities}
        if coarse is not None:                          # FCID's coarse CLUB per coarse group (general vs specific)
            pairs.update(model.coarse.club_pairs(coarse, lambda x: gather(code(x)), lambda y: scale(gather(y))))
        dtype = model.codebook.embedding.dtype          # the estimators train outside autocast (model dtype)
        club_inputs = {m: (q.detach().to(dtype), y.detach().to(dtype)) for m, (q, y) in pairs.items()}
        if learn_club is not None:                      # Eq. 4: the estimators' own steps on the detached pairs
            with torch.autocast(model.codebook.embedding.device.type, enabled=False):
                club_nll = learn_club(club_inputs)
        with frozen(model.club.parameters()):           # Eq. 5 with the updated estimators, into the main networks
            mi = mi_terms(model.club, pairs, cfg.club_negatives, fast)
        if cfg.club_weight != 1.0:                      # released weight 1 (the "why" chapter varies it)
            mi = {k: cfg.club_weight * v for k, v in mi.items()}

    # the successors' own terms (book/differences.md#fcid-coarse-infonce, #micu-fcmi, #micu-cujp), weight 1 as released
    successors = {}
    if cfg.coarse_infonce:
        successors["nce_coarse"] = coarse_infonce({m: gather(c.general) for m, c in coarse.items()},
                                                  cfg.infonce_temperature)
    if cfg.masked_infonce:
        b, t = next(iter(z_all.values())).shape[:2]
        keep = time_mask(b, t, cfg.mask_ratio, device=model.codebook.embedding.device)
        successors["fcmi/fine"], successors["fcmi/coarse"] = fcmi_losses(z_all, keep, cfg.infonce_temperature)
    if model.jigsaw is not None:
        successors["cujp"], stats["cujp_acc"] = model.jigsaw({m: gather(q) for m, q in vq.quantized.items()})

    terms = {**recon, **commit, **mi}
    terms.update({name: t for name, t in (("cpc", cpc), ("cmcm", cmcm), ("align", align)) if t is not None})
    terms.update(successors)
    return LossOutput(loss=total(terms), terms=terms, indices=vq.indices, stats=stats, club_inputs=club_inputs,
                      club_nll=club_nll, code_counts=vq.usage)


def standardized(y: Tensor, eps: float = 1e-5) -> Tensor:
    """``y (B, T, d)`` with each feature at mean 0 and standard deviation 1 over the batch's B*T rows (the gradient
    flows through the statistics): CLUB's Gaussian has a bounded log-variance, so y must live on a unit scale
    (book/differences.md#club-y-scale)."""
    rows = y.reshape(-1, y.shape[-1])
    return (y - rows.mean(0)) / (rows.std(0, correction=0) + eps)


def mi_terms(estimators: Mapping[str, nn.Module], pairs: Mapping[str, Pair], negatives: str,
             fast: bool = True) -> dict[str, Tensor]:
    """CLUB upper bounds ``{"mi/<m>": I(pairs[m])}`` (Eq. 5 / released ``mi_est``): each estimator's
    ``mi_upper_bound`` in turn (reference), or all of them batched (``fast``: ``objectives.club.mi_upper_bounds``,
    the same random negatives drawn in the same order)."""
    names = list(pairs)
    if fast:
        bounds = mi_upper_bounds([estimators[m] for m in names], [pairs[m] for m in names], negatives)
    else:
        bounds = [estimators[m].mi_upper_bound(*pairs[m], negatives=negatives) for m in names]
    return {f"mi/{m}": bound for m, bound in zip(names, bounds)}


@contextlib.contextmanager
def frozen(parameters: Iterable[nn.Parameter]):
    """Parameters that take no gradient from what is computed inside (the CLUB estimators under the mi terms)."""
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def total(terms: Mapping[str, Tensor]) -> Tensor:
    """Sum of scalar terms in float32, or float64 for a model run in double (under bf16 autocast some terms come
    back in bf16)."""
    dtype = torch.float64 if any(v.dtype == torch.float64 for v in terms.values()) else torch.float32
    return torch.stack([v.to(dtype) for v in terms.values()]).sum()


def _identity(x: Tensor) -> Tensor:
    return x
