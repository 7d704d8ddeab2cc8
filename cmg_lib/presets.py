"""Named presets: the modalities at the released and the AV-Digits shapes, Table 1's methods and the ablation rows
as switch settings, the released recipe at the AV-Digits shapes, the book's recipe, and ``preset`` which builds a
:class:`~cmg_lib.config.Config` from them (the dataclasses and their checks live in ``config.py``).
"""
from __future__ import annotations

import warnings
from typing import Any

from .config import RECIPES, Config, ModalitySpec, ModelConfig, TrainConfig

# ----------------------------------------------------------------------------------------------------------------
# Modalities at the released shapes and at the embedded AV-Digits shapes.

PAPER_MODALITIES = {
    "audio": ModalitySpec("audio", "vector", (128,), specific_dim=256, club_dim=256),
    "video": ModalitySpec("video", "grid", (7, 7, 512), specific_dim=2048, club_dim=512),
    "text": ModalitySpec("text", "tokens", (768,), specific_dim=256, club_dim=256),
}
# AV-Digits (cmg_lib.data.avdigits): 128-d log-mel summary per second, a frozen small-CNN 5x5x64 grid per 40x40 frame,
# 384-d MiniLM token embeddings in 10 slots.
AVDIGITS_MODALITIES = {
    "audio": ModalitySpec("audio", "vector", (128,), specific_dim=64, club_dim=64),
    "video": ModalitySpec("video", "grid", (5, 5, 64), specific_dim=64, club_dim=64),
    "text": ModalitySpec("text", "tokens", (384,), specific_dim=64, club_dim=64),
}

# Methods of Table 1 as switch settings, in the paper's row order. "dcid+X" = CLUB + Cross-CPC + X. Uni-Code = DCID +
# MM-EMA + reset + CMCM.
_OFF = dict(club=False, cross_cpc=False, mm_ema=False, reset_code=False, cmcm=False, alignment="none")
_DCID = dict(club=True, cross_cpc=True)
METHODS: dict[str, dict[str, Any]] = {
    "baseline": dict(_OFF),
    "smit": {**_OFF, "alignment": "smit"},
    "mst": {**_OFF, "alignment": "mst"},
    "codis": {**_OFF, "alignment": "codis"},
    "turn": {**_OFF, "alignment": "turn"},
    "cmcm": {**_OFF, "cmcm": True},
    "dcid+smit": {**_OFF, **_DCID, "alignment": "smit"},
    "dcid+mst": {**_OFF, **_DCID, "alignment": "mst"},
    "dcid+turn": {**_OFF, **_DCID, "alignment": "turn"},
    "dcid+codis": {**_OFF, **_DCID, "alignment": "codis"},
    "dcid+cmcm": {**_OFF, **_DCID, "cmcm": True},
    "unicode": dict(club=True, cross_cpc=True, mm_ema=True, reset_code=True, cmcm=True, alignment="none"),
}
TABLE1_METHODS = tuple(METHODS)             # the rows of the paper's Table 1, in its order
# Uni-Code's successors in the authors' repository (the "After Uni-Code" chapter; not rows of Table 1):
# FCID (ACL 2025 Findings): Uni-Code's terms with the codebook moved to a coarse clip level, a coarse CLUB, a
#   coarse reconstruction and a coarse InfoNCE (book/differences.md#fcid-levels);
# MICU (ICCV 2025): Uni-Code's codebook (MM-EMA, reset) with FCMI and CUJP in place of CLUB, Cross-CPC and CMCM
#   (book/differences.md#micu-fcmi, #micu-cujp).
METHODS["fcid"] = {**METHODS["unicode"], "coarse_codes": True, "coarse_infonce": True}
METHODS["micu"] = {**_OFF, "mm_ema": True, "reset_code": True, "masked_infonce": True, "jigsaw": True}


# Ablation rows of Tables 2 and 3 (paper Sec. 5.4): switches turned off on top of the full Uni-Code method.
ABLATIONS: dict[str, dict[str, bool]] = {
    "w/o CLUB": {"club": False},
    "w/o Cross-CPC": {"cross_cpc": False},
    "w/o DCID": {"club": False, "cross_cpc": False},
    "w/o MM-EMA": {"mm_ema": False},
    "w/o reset": {"reset_code": False},
    "w/o CMCM": {"cmcm": False},
    "w/o MM-EMA, reset": {"mm_ema": False, "reset_code": False},
    "full": {},
}


def ablation_overrides(name: str) -> list[str]:
    """``key=value`` overrides (for ``preset(..., method="unicode", overrides=...)``) of one ablation row."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; expected one of {list(ABLATIONS)}")
    return [f"model.{k}={str(v).lower()}" for k, v in ABLATIONS[name].items()]


def _paper(names: tuple[str, ...]) -> Config:
    return Config(model=ModelConfig(modalities=tuple(PAPER_MODALITIES[n] for n in names)), train=TrainConfig())


def _released(names: tuple[str, ...]) -> Config:
    """The released recipe (its choices: every field's default) at the AV-Digits shapes, sized for them."""
    model = ModelConfig(modalities=tuple(AVDIGITS_MODALITIES[n] for n in names), hidden_dim=64, codebook_size=64,
                        n_heads=4, n_layers=1, ffn_dim=128, text_lstm_hidden=32, club_hidden=64, cpc_context=64,
                        reset_window=60)
    train = TrainConfig(batch_size=64, epochs=3, lr=1e-3, milestones=(), log_every=10)
    return Config(model=model, train=train)


# ---------------------------------------------------------------------------------------------------------------
# The book's small-scale recipe (book/differences.md#book-recipe: the switches and why; the "why" chapter tests each).
# Chosen from principles written down before any claim was measured, and checked on pre-training seeds the book
# does not use:
# * geometry: the released code width D = 256 sets the scale of CMCM's distance softmax (|z| ~ sqrt(D) after the
#   LayerNorm); at D = 64 the same softmax is reached with temperature sqrt(64 / 256) = 0.5;
# * codebook size relative to the classes: released 400 codes for the 141 classes of its pre-training set
#   (2.84 per class), rounded up to a multiple of 16 for the AV-Digits class count (28: 80 codes);
# * training length: as long as the released recipe in updates: 6 epochs of its 40K set at batch 80 are 3,000
#   optimiser steps (its LR milestones at epochs 10/20/30 are never reached, so the LR is constant, and a snapshot
#   at step s of a run is the run of s steps: the learning curve comes free);
# * batch: 32 (released 80), a compute choice: the largest batch at which the default book's converged runs fit two
#   cores (benchmarks/book_budget.py); measured at equal updates on a tuning seed before any claim: 16 lost ground
#   after 1,000 updates, 32 and 64 ended level;
# * CLUB on the features the decoder really uses, its gradient into the specific encoder only (the semantic code
#   is what the modalities must share; disentangling removes information from the specific side), and those
#   features standardised per feature over the batch before the estimator sees them: its Gaussian has a bounded
#   log-variance (Tanh: e^-1..e^1), so it can only model y on a unit scale, and on raw features the main networks
#   can escape the bound by rescaling y (seen as estimates of +-1e8 and a video decoder that never recovers);
# * a codebook that starts where the data is (the first batch's z) and resets that stick (EMA statistics reset).
AVDIGITS_CLASSES = 28                       # cmg_lib.data.avdigits.classes.DEFAULT_CLASSES (a test keeps them equal)
RELEASED_CODES_PER_CLASS = 400 / 141
RELEASED_EPOCHS, RELEASED_PRETRAIN_CLIPS, RELEASED_BATCH = 6, 40_000, 80
BOOK_UPDATES = RELEASED_EPOCHS * RELEASED_PRETRAIN_CLIPS // RELEASED_BATCH      # 3,000
BOOK_BATCH = 32
BOOK_RECIPE = dict(cmcm_temperature=0.5, club_target="decoder_input", club_grad="specific", codebook_init="data",
                   reset_stats="reset", club_y_scale="standardized")


def book_codebook_size(num_classes: int = AVDIGITS_CLASSES) -> int:
    """Codes for ``num_classes`` pre-training classes at the released ratio, rounded up to a multiple of 16."""
    return int(-(-RELEASED_CODES_PER_CLASS * num_classes // 16) * 16)


def _book(names: tuple[str, ...]) -> Config:
    """The recipe above on the AV-Digits shapes; pre-trained on the book's main set for these modalities (24K for
    the AV / AT / VT tables, 40K, the paper's AVT size, for three modalities)."""
    cfg = _released(names)
    cfg.recipe = "book"
    cfg.data.pretrain_size = "40k" if len(names) == 3 else "24k"
    for key, value in BOOK_RECIPE.items():
        setattr(cfg.model, key, value)
    cfg.model.codebook_size = book_codebook_size()
    cfg.train.batch_size, cfg.train.max_steps = BOOK_BATCH, BOOK_UPDATES
    return cfg


PRESETS = {
    "paper_av": lambda: _paper(("audio", "video")),
    "paper_at": lambda: _paper(("audio", "text")),
    "paper_vt": lambda: _paper(("video", "text")),
    "paper_avt": lambda: _paper(("audio", "video", "text")),
    "released_avt": lambda: _released(("audio", "video", "text")),
    "released_av": lambda: _released(("audio", "video")),
    "released_at": lambda: _released(("audio", "text")),
    "released_vt": lambda: _released(("video", "text")),
    "book_avt": lambda: _book(("audio", "video", "text")),
    "book_av": lambda: _book(("audio", "video")),
    "book_at": lambda: _book(("audio", "text")),
    "book_vt": lambda: _book(("video", "text")),
}


# Old names of the released_* presets, still accepted by ``preset`` (with a DeprecationWarning).
RENAMED_PRESETS = {"tiny": "released_avt", "tiny_av": "released_av", "tiny_at": "released_at",
                   "tiny_vt": "released_vt"}



def recipe_preset(recipe: str, modalities: str) -> str:
    """The preset of ``recipe`` ("book" | "released") for ``modalities`` ("av", "at", "vt" or "avt")."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {sorted(RECIPES)}")
    if modalities not in RECIPES[recipe]:
        raise ValueError(f"unknown modalities {modalities!r}; expected one of {sorted(RECIPES[recipe])}")
    return RECIPES[recipe][modalities]


def preset(name: str, method: str = "unicode", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a named preset, apply a Table 1 method's switches, then ``key=value`` overrides. An old name of
    :data:`RENAMED_PRESETS` builds its new preset, with a DeprecationWarning."""
    if name in RENAMED_PRESETS:
        warnings.warn(f"preset {name!r} is now called {RENAMED_PRESETS[name]!r}", DeprecationWarning, stacklevel=2)
        name = RENAMED_PRESETS[name]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    cfg = PRESETS[name]()
    for k, v in METHODS[method].items():
        setattr(cfg.model, k, v)
    cfg.preset, cfg.method = name, method
    return cfg.override(*overrides) if overrides else Config.from_dict(cfg.to_dict())
