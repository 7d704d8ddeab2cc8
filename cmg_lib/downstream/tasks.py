"""``run_task``: one downstream cross-modal generalisation run of paper Sec. 5 on a frozen pre-trained Uni-Code model.

Tasks (``TASKS``): ``ave`` (event classification, Tables 1-3), ``avvp`` (event localisation), ``ave_avvp`` (cross
dataset + modal localisation), ``ucf_vgg`` (cross dataset + modal classification), ``avs`` (query-based
segmentation, Table 4), ``retrieval`` (X-to-audio retrieval, Table 5), ``oscmg`` (open-set classification, MICU's
protocol, ``openset.py``). The option ``toc_dims=k`` (any task) applies FCID's TOC: the heads read only the k code
dimensions ``toc.py`` keeps (recorded under ``toc``). ``train_modality == test_modality`` gives the
"labeled modality" upper bound of Table 3's last row. The protocols and the frozen-code extraction are described in
``common.py``; each task module documents its head, loss and metric.
"""
from __future__ import annotations

import datetime
import time
from typing import Any

import torch

from .. import __version__
from ..checkpoint import load_checkpoint
from ..storage import check_appendable
from .classification import run_ave, run_ucf_vgg
from . import common
from .common import PROTOCOLS, Context
from .localisation import run_ave_avvp, run_avvp
from .openset import run_oscmg
from .results import append_result, direction_label
from .retrieval import run_retrieval
from .segmentation import AVS_DEFAULTS, predict_masks, run_avs
from .toc import toc_dimensions

TASKS = {"ave": run_ave, "avvp": run_avvp, "ave_avvp": run_ave_avvp, "ucf_vgg": run_ucf_vgg, "avs": run_avs,
         "retrieval": run_retrieval, "oscmg": run_oscmg}
CONTEXT_OPTIONS = ("data_seed", "extract_batch_size", "code_cache", "paths", "allow_data_mismatch")
TOC_OPTION = "toc_dims"      # FCID's TOC (toc.py): keep this many code dimensions, chosen on the codebook


def _toc_dims(model, k) -> tuple[int, ...]:
    """The ``k`` code dimensions TOC keeps for ``model``'s codebook (a model without one is a ValueError)."""
    codebook = getattr(model, "codebook", None)
    if codebook is None:
        raise ValueError(f"{TOC_OPTION} selects code dimensions on a codebook; this model has none")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"{TOC_OPTION} must be a whole number of code dimensions, got {k!r}")
    return tuple(int(d) for d in toc_dimensions(codebook.embedding, k))


def _context(model, ckpt, data, seed, protocol, scale, progress, options: dict) -> Context:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if (model is None) == (ckpt is None):
        raise ValueError("pass exactly one of model= (a pre-trained UniCode) or ckpt= (a checkpoint path)")
    if model is None:
        model = load_checkpoint(ckpt)
    extra = {k: options.pop(k) for k in CONTEXT_OPTIONS if k in options}
    toc = options.pop(TOC_OPTION, None)
    if toc is not None:
        extra["code_dims"] = _toc_dims(model, toc)
    trained_on = getattr(model, "data_identity", None)
    same_build = bool(trained_on) and trained_on.get("source") == "avdigits" and data == "avdigits"
    if scale is None:                    # default: the build the checkpoint was pre-trained on
        scale = (trained_on.get("scale") or "default") if same_build else "default"
    if extra.get("data_seed") is None and same_build and trained_on.get("seed") is not None:
        extra["data_seed"] = int(trained_on["seed"])
    ctx = Context(model=model, data=data, scale=scale, seed=int(seed), protocol=protocol, progress=progress,
                  trained_on=trained_on, **extra)
    common.check_data(ctx, "arguments", {"scale": scale, "seed": ctx.data_seed if ctx.data_seed is not None else 0})
    return ctx


def _percent_history(history: list[dict]) -> list[dict]:
    return [{k: ({m: round(100 * v, 4) for m, v in val.items()} if isinstance(val, dict) else val)
             for k, val in h.items()} for h in history]


def _run(task, model, ckpt, data, train_modality, test_modality, seed, protocol, scale, epochs, progress, options):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    options = dict(options)
    ctx = _context(model, ckpt, data, seed, protocol, scale, progress, options)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        outcome = TASKS[task](ctx, train_modality, test_modality, epochs, options)
    wall = time.perf_counter() - start
    record = {
        "task": task, "train_modality": train_modality, "test_modality": test_modality,
        "direction": direction_label(train_modality, test_modality),
        "protocol": protocol, "seed": int(seed), "metrics": outcome.metrics, "best_epoch": outcome.best_epoch,
        "n_train": outcome.n_train, "n_test": outcome.n_test,
        "pretrain": ctx.model.config.to_dict(), "pretrain_key": ctx.model.config.key(),
        "checkpoint": None if ckpt is None else str(ckpt),
        "data": data if isinstance(data, str) else "in-memory", "scale": ctx.scale, "data_seed": ctx.data_seed,
        "downstream": dict(outcome.settings),
        "history": _percent_history(outcome.history), "notes": ctx.notes,
        "toc": None if ctx.code_dims is None else {"dims": len(ctx.code_dims), "kept": list(ctx.code_dims)},
        "version": __version__, "wall_time_s": round(wall, 3),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return record, outcome, ctx


def run_task(task: str, model=None, ckpt=None, data: Any = "avdigits", train_modality: str = "video",
             test_modality: str = "audio", seed: int = 0, protocol: str = "heldout", scale: str | None = None,
             epochs: int | None = None, results_path=None, progress: bool = True, **options) -> dict:
    """Run one downstream task on a frozen model and return its result record.

    ``model`` (a loaded UniCode) or ``ckpt`` (a checkpoint path for ``cmg_lib.checkpoint.load_checkpoint``); ``data`` =
    ``"avdigits"``, a folder of official features, or a mapping ``split -> Dataset``. ``protocol`` = ``"heldout"``
    (train / select on val / report test) or ``"released"`` (the released scripts' evaluation choices; the released
    encoder dropout during head training is not reproduced, see ``common.py``). ``options`` override the task's
    training settings (``lr``, ``batch_size``, ...; an unknown one raises ValueError) or set ``data_seed``,
    ``extract_batch_size``, ``code_cache`` (default True: reuse the frozen codes of a split across runs of the same
    model and named data in this process), ``paths`` (official layout overrides, ``load_dataset``'s), or
    ``allow_data_mismatch``. ``scale`` and ``data_seed`` default to the AV-Digits build the checkpoint was
    pre-trained on (stored in it; ``"default"`` and 0 for older checkpoints); another build, given or found, is a
    ValueError unless ``allow_data_mismatch=True`` (then the record's ``notes`` say so). Metrics are in percent.
    With ``results_path`` (checked before the task runs) the record is appended atomically.
    Returns a dict: task, train/test modality, direction, protocol, seed, metrics, best_epoch, n_train, n_test,
    pretrain (config dict), pretrain_key, downstream (settings), history, version, wall_time_s, ...
    """
    if results_path is not None:
        check_appendable(results_path)
    record, _, _ = _run(task, model, ckpt, data, train_modality, test_modality, seed, protocol, scale, epochs,
                        progress, options)
    if results_path is not None:
        append_result(results_path, record)
    return record


def avs_predictions(model=None, ckpt=None, data: Any = "avdigits", train_modality: str = "audio",
                    test_modality: str = "text", seed: int = 0, protocol: str = "heldout", scale: str | None = None,
                    epochs: int | None = None, split: str = "test", indices: list[int] | None = None,
                    count: int = 6, progress: bool = True, **options) -> dict:
    """Train the AVS head as ``run_task("avs", ...)`` and predict masks of clips ``indices`` (default the first
    ``count``) of ``split`` with ``test_modality`` queries, for Fig. 5 overlays.

    Returns ``frames (n, H, W, C)``, ``masks (n, H, W)``, ``prob`` / ``pred`` ``(n, H, W)`` (sigmoid, > 0.5) of the
    first annotated frame of each clip, ``index`` and the run's ``result`` record.
    """
    record, outcome, ctx = _run("avs", model, ckpt, data, train_modality, test_modality, seed, protocol, scale,
                                epochs, progress, options)
    dataset = common.load_split(ctx, "avs", split)
    chosen = list(range(min(count, len(dataset)))) if indices is None else [int(i) for i in indices]
    if not chosen or min(chosen) < 0 or max(chosen) >= len(dataset):
        raise ValueError(f"indices must be within [0, {len(dataset)}) of split {split!r}, got {chosen}")
    size = int(outcome.settings.get("size", AVS_DEFAULTS["size"]))
    out = predict_masks(ctx, outcome.head, dataset, test_modality, chosen, size, bool(outcome.settings["grid"]))
    out["result"] = record
    return out
