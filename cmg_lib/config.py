"""Typed configuration for Uni-Code pre-training: dataclasses and ``key=value`` overrides (the named presets are
in ``presets.py``).

The field names use the paper's words (``beta``, ``ema_decay``, ``codebook_size``, ``reset_window``) and the
Table 2/3 switch names (``club``, ``cross_cpc``, ``mm_ema``, ``reset_code``, ``cmcm``). Where the paper and the
authors' released code disagree, a string field selects the behaviour; the default is the released code's
(book/differences.md), and each choice is documented where it is implemented.

A config round-trips through plain dicts (``to_dict`` / ``from_dict``) so checkpoints and results store it as JSON.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

MODALITY_KINDS = ("vector", "grid", "tokens")
KNOWN_MODALITIES = ("audio", "video", "text")
ALIGNMENTS = ("none", "smit", "mst", "codis", "turn")

# The AV-Digits presets of each recipe per set of modalities (each preset's ``Config.recipe`` is the recipe it is
# listed under): the tables run ``book`` (the book's recipe, ``presets.py``) by default and the released recipe
# (``released_*``: its geometry and choices at the AV-Digits shapes) when a notebook's ``recipe`` says so.
RECIPES: dict[str, dict[str, str]] = {
    "book": {"av": "book_av", "at": "book_at", "vt": "book_vt", "avt": "book_avt"},
    "released": {"av": "released_av", "at": "released_at", "vt": "released_vt", "avt": "released_avt"},
}


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality.

    ``kind`` selects the encoder family: ``vector`` = one feature vector per segment, ``(T, F)`` (VGGish audio);
    ``grid`` = a spatial feature map per segment, ``(T, H, W, C)`` (VGG19 pool5 video); ``tokens`` = one token
    embedding per slot, ``(T, F)``, passed through a 2-layer BiLSTM front-end first (BERT text, released code
    section 1.2). ``specific_dim`` is the width of the modality-specific encoder Psi (released: 256 audio/text,
    2048 video); ``club_dim`` the width of the Psi feature that CLUB sees (released: 512 for video, else = specific).
    """

    name: str
    kind: str
    feature_shape: tuple[int, ...]
    specific_dim: int = 256
    club_dim: int = 256

    def __post_init__(self):
        if self.name not in KNOWN_MODALITIES:
            raise ValueError(f"unknown modality {self.name!r}; expected one of {KNOWN_MODALITIES}")
        if self.kind not in MODALITY_KINDS:
            raise ValueError(f"unknown modality kind {self.kind!r} for {self.name!r}; expected one of {MODALITY_KINDS}")
        object.__setattr__(self, "feature_shape", tuple(int(s) for s in self.feature_shape))
        want = 3 if self.kind == "grid" else 1
        if len(self.feature_shape) != want:
            raise ValueError(f"modality {self.name!r} of kind {self.kind!r} needs a feature_shape of {want} dims "
                             f"(per segment), got {self.feature_shape}")
        for width in ("specific_dim", "club_dim"):
            value = getattr(self, width)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"modality {self.name!r}: {width} must be a positive integer, got {value!r}")


@dataclass
class ModelConfig:
    """Architecture, codebook and objective switches (paper Sec. 4; released defaults in
    book/differences.md#paper-vs-released)."""

    modalities: tuple[ModalitySpec, ...] = ()
    segments: int = 10                 # T: 1-s segments (text: token slots)
    hidden_dim: int = 256              # D: semantic width = code dim
    codebook_size: int = 400           # L
    n_heads: int = 4
    n_layers: int = 2
    ffn_dim: int = 1024
    dropout: float = 0.1
    text_lstm_hidden: int = 128        # BiLSTM front-end for ``tokens`` modalities -> 2*128 = 256
    # --- codebook (Eq. 2, 3, 7, 8) ---
    beta: float = 0.25
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    reset_window: int = 300            # N_re
    ema_teacher: str = "paired"        # "paired" (released: other modality's z at same (b,t)) | "cross_attention" (paper)
    ema_form: str = "sequential"       # "sequential" (released per-modality sub-updates) | "joint" (paper Eq. 7)
    commit_weights: str = "released"   # "released" (2*beta self term) | "paper" (Eq. 8: beta self, beta/2 teachers)
    reset_rule: str = "released"       # "released" (reset if unused by all) | "paper" (keep only if used by every modality)
    released_quirks: bool = False      # reproduce released defects: EMA counts start at 0; degenerate spatial softmax
    conv_impl: str = "gemm"            # grid convs: "gemm" (SmallMapConv's GEMMs, fast on CPU) | "torch" (torch conv)
    # --- DCID (Eq. 4-6) ---
    club_hidden: int = 256
    club_steps: int = 5
    club_lr: float = 1e-3
    club_negatives: str = "sampled"    # "sampled" (released CLUBSample, one permutation) | "all" (paper Eq. 5)
    cpc_steps: int = 1                 # K
    cpc_layers: int = 2                # released 2-layer LSTM; paper says single layer
    cpc_context: int = 256
    cpc_softmax: str = "predictions"   # "predictions" (released LogSoftmax dim=1) | "targets" (paper Eq. 6)
    cpc_self_weight: float = 0.1       # released intra-modal CPC pairs; 0 drops them (paper)
    # --- the book's small-scale recipe (book/differences.md#book-recipe: one row per field, named as the field,
    # e.g. #cmcm-temperature); each default is the released behaviour ---
    cmcm_temperature: float = 1.0      # CMCM softmax(-|z - e| / tau); released tau = 1
    club_target: str = "projection"    # CLUB's y: "projection" (released; video: an MLP only CLUB uses) |
                                       # "decoder_input" (the specific features the decoder reads)
    club_grad: str = "both"            # mi gradient into "both" encoders (released) | "specific" only
    codebook_init: str = "uniform"     # "uniform" U(+-1/L) (released) | "data": the first batch's z
    reset_stats: str = "keep"          # on a reset: EMA statistics "keep" (released) | "reset" to the new code
    club_y_scale: str = "raw"          # CLUB's y as Psi gives it (released) | "standardized" per feature over the batch
    # --- CLUB's strength and path (the "why" chapter's controlled experiments; released values) ---
    club_weight: float = 1.0           # weight of the mi terms in the main objective
    recon_trains_code: bool = True     # the reconstruction's straight-through gradient trains Phi (released: yes)
    # --- Table 2/3 switches ---
    club: bool = True
    cross_cpc: bool = True
    mm_ema: bool = True
    reset_code: bool = True
    cmcm: bool = True
    alignment: str = "none"            # extra compared method of Table 1: none | smit | mst | codis | turn
    alignment_weight: float = 1.0
    # --- Uni-Code's successors (METHODS "fcid", "micu"; book/differences.md#fcid-levels, #micu-fcmi, #micu-cujp);
    # off for Uni-Code and Table 1's methods, released values otherwise ---
    coarse_codes: bool = False         # FCID: the codebook quantises a coarse vector per clip, z stays continuous
    coarse_infonce: bool = False       # FCID: InfoNCE between the modalities' coarse vectors
    masked_infonce: bool = False       # MICU's FCMI: fine and coarse InfoNCE of time-masked z against z
    mask_ratio: float = 0.3            # FCMI: probability that a (clip, time step) is masked
    jigsaw: bool = False               # MICU's CUJP: name the order of code pieces drawn from random modalities
    jigsaw_chunks: int = 2             # CUJP: pieces per code vector
    jigsaw_permutations: int = 2       # CUJP: fixed piece orders to tell apart
    jigsaw_hidden: int = 512           # CUJP: width of the order classifier
    infonce_temperature: float = 0.1   # FCID's and MICU's InfoNCE (info-nce-pytorch's default)

    def __post_init__(self):
        _check_finite(self, "model", positive=("club_lr",))
        self.modalities = tuple(m if isinstance(m, ModalitySpec) else ModalitySpec(**m) for m in self.modalities)
        names = [m.name for m in self.modalities]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate modality names: {names}")
        if self.modalities and not 2 <= len(names) <= 3:
            raise ValueError(f"Uni-Code pairs 2 or 3 modalities, got {names}")
        choices = {"ema_teacher": ("paired", "cross_attention"), "ema_form": ("sequential", "joint"),
                   "commit_weights": ("released", "paper"), "reset_rule": ("released", "paper"),
                   "club_negatives": ("sampled", "all"), "cpc_softmax": ("predictions", "targets"),
                   "alignment": ALIGNMENTS, "conv_impl": ("gemm", "torch"),
                   "club_target": ("projection", "decoder_input"), "club_grad": ("both", "specific"),
                   "codebook_init": ("uniform", "data"), "reset_stats": ("keep", "reset"),
                   "club_y_scale": ("raw", "standardized")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r} is not one of {allowed}")
        if self.hidden_dim % self.n_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by n_heads {self.n_heads}")
        if self.club_weight < 0:
            raise ValueError(f"club_weight must be >= 0 (the mi terms' weight), got {self.club_weight}")
        if not self.cmcm_temperature > 0:
            raise ValueError(f"cmcm_temperature must be > 0, got {self.cmcm_temperature}")
        if not 1 <= self.cpc_steps < self.segments:
            raise ValueError(f"cpc_steps must be in [1, segments-1], got {self.cpc_steps}")
        if self.coarse_infonce and not self.coarse_codes:
            raise ValueError("coarse_infonce needs coarse_codes=true (FCID's coarse level)")
        if self.coarse_codes and self.alignment != "none":
            raise ValueError(f"coarse_codes (FCID) cannot be combined with alignment={self.alignment!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not self.infonce_temperature > 0:
            raise ValueError(f"infonce_temperature must be > 0, got {self.infonce_temperature}")
        if self.jigsaw and (self.jigsaw_chunks < 2 or self.hidden_dim % self.jigsaw_chunks
                            or not 2 <= self.jigsaw_permutations <= math.factorial(self.jigsaw_chunks)):
            raise ValueError(f"jigsaw needs jigsaw_chunks >= 2 dividing hidden_dim {self.hidden_dim} and "
                             f"2 <= jigsaw_permutations <= jigsaw_chunks!, got {self.jigsaw_chunks} and "
                             f"{self.jigsaw_permutations}")

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def spec(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise ValueError(f"modality {name!r} is not in this model; it has {self.modality_names}")


@dataclass
class TrainConfig:
    """Optimisation (released pretrain.py / pretrain.sh, book/differences.md)."""

    lr: float = 4e-4
    milestones: tuple[int, ...] = (10, 20, 30)   # epochs; MultiStepLR gamma below
    lr_gamma: float = 0.5
    grad_clip: float = 0.5                       # per module, as released
    batch_size: int = 80
    epochs: int = 6
    max_steps: int | None = None                 # overrides epochs when set
    seed: int = 43
    device: str = "cpu"
    precision: str = "fp32"                      # "fp32" | "bf16" (autocast: CUDA, or a CPU with native bf16)
    log_every: int = 20
    ckpt_every: int = 0                          # steps; 0 = only at the end of each epoch
    snapshot_steps: tuple[int, ...] = ()         # also save step-<s>.pt at exactly these steps
    epoch_ckpts: bool = True                     # save epoch-<e>.pt after each epoch (the book's cached runs: off)
    num_workers: int = 0
    fast: bool = True                            # the fast paths of a step (cmg_lib.step); False: the reference

    def __post_init__(self):
        _check_finite(self, "train", positive=("lr", "lr_gamma", "grad_clip"))
        self.milestones = tuple(int(m) for m in self.milestones)
        steps = self.snapshot_steps
        if isinstance(steps, str):                   # "--set train.snapshot_steps=30,100"
            steps = [s for s in steps.replace("[", "").replace("]", "").split(",") if s.strip()]
        elif isinstance(steps, int):
            steps = [steps]
        try:
            self.snapshot_steps = tuple(sorted({int(s) for s in steps}))
        except (TypeError, ValueError):
            raise ValueError(f"snapshot_steps must be a list of step numbers, got {self.snapshot_steps!r}") from None
        if any(s < 1 for s in self.snapshot_steps):
            raise ValueError(f"snapshot_steps must be positive step numbers, got {self.snapshot_steps}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (contrastive terms need negatives)")


@dataclass
class DataConfig:
    """Which pre-training data: ``source`` is ``"avdigits"`` (embedded) or a folder of official features."""

    source: str = "avdigits"
    scale: str = "default"          # avdigits build scale: smoke | default | full
    pretrain_size: str = "40k"      # one of data.schema.PRETRAIN_SIZES (paper sizes; avdigits keeps the ratio);
                                    # the released pretrain.sh's 40K; each preset sets its own (book_*: 24K for 2)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "custom"
    method: str = "unicode"
    recipe: str = "released"        # "book" (the book's recipe, book_* presets) | "released" (RECIPES)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe={self.recipe!r} is not one of {tuple(RECIPES)}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown top-level config keys {sorted(unknown)}; expected {[f.name for f in fields(cls)]}")
        sub = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
        kwargs = {}
        for key, val in d.items():
            if key in sub:
                kwargs[key] = _build(sub[key], val, key)
            else:
                kwargs[key] = val
        return cls(**kwargs)

    def key(self) -> str:
        """Stable short hash of the whole config: the results-cache key."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def override(self, *assignments: str) -> "Config":
        """Return a copy with ``section.field=value`` (or a unique bare ``field=value``) assignments applied; a
        modality's widths as ``model.modalities.<name>.<field>`` (``model.modalities.audio.specific_dim=256``)."""
        d = self.to_dict()
        for a in assignments:
            if "=" not in a:
                raise ValueError(f"override {a!r} must look like key=value")
            key, raw = a.split("=", 1)
            key = key.strip()
            if key.startswith(MODALITY_PREFIX):
                spec, name = _locate_modality(d, key)
                spec[name] = _parse_value(raw, spec[name], key)
                continue
            section, name = _locate(d, key)
            d[section][name] = _parse_value(raw, d[section][name], key)
        return Config.from_dict(d)


def _build(cls, val, where):
    if isinstance(val, cls):
        return val
    known = {f.name for f in fields(cls)}
    unknown = set(val) - known
    if unknown:
        raise ValueError(f"unknown {where} config keys {sorted(unknown)}; known keys: {sorted(known)}")
    val = dict(val)
    if "modalities" in val:
        val["modalities"] = tuple(ModalitySpec(**m) if isinstance(m, dict) else m for m in val["modalities"])
    return cls(**val)


def _locate(d: dict, key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in ("model", "train", "data") or name not in d[section]:
            raise ValueError(f"unknown config key {key!r}")
        return section, name
    hits = [s for s in ("model", "train", "data") if key in d[s]]
    if len(hits) != 1:
        raise ValueError(f"unknown or ambiguous config key {key!r}; use section.field, e.g. model.beta")
    return hits[0], key


MODALITY_PREFIX = "model.modalities."
_SPEC_FIELDS = ("specific_dim", "club_dim")      # the widths an override may change (the shapes are the data's)


def _locate_modality(d: dict, key: str) -> tuple[dict, str]:
    """The spec dict and field of ``model.modalities.<name>.<field>`` in ``d`` (``Config.to_dict``)."""
    parts = key[len(MODALITY_PREFIX):].split(".")
    specs = {m["name"]: m for m in d["model"]["modalities"]}
    if len(parts) != 2 or parts[0] not in specs or parts[1] not in _SPEC_FIELDS:
        raise ValueError(f"unknown config key {key!r}; expected model.modalities.<name>.<field> with a name in "
                         f"{sorted(specs)} and a field in {list(_SPEC_FIELDS)}")
    return specs[parts[0]], parts[1]


def _check_finite(obj: Any, section: str, positive: tuple[str, ...] = ()) -> None:
    """Every float field of the dataclass ``obj`` finite, those in ``positive`` also > 0; a ValueError naming the
    first that is not (``train.lr=nan`` is a float, but no learning rate)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and (not math.isfinite(value) or (f.name in positive and value <= 0)):
            need = "finite and positive" if f.name in positive else "a finite number"
            raise ValueError(f"{section}.{f.name} must be {need}, got {value!r}")


def _parse_value(raw: str, current: Any, key: str) -> Any:
    raw = raw.strip()
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} expects a boolean, got {raw!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    if isinstance(current, float) and isinstance(value, str):
        try:
            value = float(value)                # "nan", "inf": floats JSON does not spell (checked by the section)
        except ValueError:
            pass
    if current is not None and isinstance(current, (int, float, str)) and not isinstance(value, type(current)):
        raise ValueError(f"{key} expects {type(current).__name__}, got {raw!r}")
    return value
