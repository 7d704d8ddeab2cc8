"""Command line: ``python -m cmg_lib {data,pretrain,downstream} ...``.

Each subcommand parses its flags here and calls one library function; errors a user can fix (a ValueError,
a missing file, a refused checkpoint, a held lock) print one ``error: ...`` line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

from .presets import preset
from .data import load_dataset
from .data.avdigits import build_dataset, manifest
from .data.avdigits.scales import SCALE_NAMES
from .data.schema import PRETRAIN_SIZES
from .data.probes import run_probes
from .downstream import TASKS, run_task
from .distributed import RankFailed
from .storage import NotWritableError
from .train import check_device, holding_out_folder, pretrain

USER_ERRORS = (ValueError, FileNotFoundError, TimeoutError, pickle.UnpicklingError, NotWritableError, RankFailed)


def _layout_path(text: str) -> tuple[str, str]:
    """``--paths NAME=PATH``: one override of the official data layout (``cmg_lib.data.official.LAYOUT``)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--paths {text!r} must look like NAME=PATH, e.g. ave=/mnt/ave/data")
    name, path = text.split("=", 1)
    return name.strip(), path.strip()


def _add_paths(p) -> None:
    p.add_argument("--paths", type=_layout_path, action="append", default=[], metavar="NAME=PATH",
                   help="official data: where one layout entry lives (book/official_data.md), repeatable")


# ---------------------------------------------------------------------------------------------------- data
def _data_build(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    folder = build_dataset(args.scale, args.seed, args.out, repair=True)
    meta = manifest(args.scale, args.seed, args.out)
    print(f"avdigits scale={args.scale} seed={args.seed} folder={folder} ({time.perf_counter() - t0:.1f} s)")
    print(meta["hash"])
    return 0


def _data_show(args: argparse.Namespace) -> int:
    meta = manifest(args.scale, args.seed, args.out)
    summary = {k: meta[k] for k in ("scale", "seed", "hash", "sizes", "timings", "features", "library_version")}
    summary["images"] = meta["sources"]["images"]["main"]["name"]
    summary["voices_per_pool"] = {k: len(v) for k, v in meta["sources"]["audio"]["voice_pools"].items()}
    summary["classes"] = meta["classes"]["count"]
    summary["redundancy"] = meta["redundancy"]
    summary["extractors"] = {m: {k: v for k, v in e.items() if k in ("task", "held_out_accuracy", "chance")}
                             for m, e in meta["extractors"].items()}
    print(json.dumps(summary, indent=2))
    return 0


def _data_probe(args: argparse.Namespace) -> int:
    print(json.dumps(run_probes(args.scale, args.seed, args.out), indent=2))
    return 0


def _add_data(sub) -> None:
    parser = sub.add_parser("data", help="build or inspect the embedded AV-Digits dataset")
    commands = parser.add_subparsers(dest="data_command", required=True)
    for name, helptext, func in (("build", "build the cache (instant if present); prints the manifest hash",
                                  _data_build),
                                 ("show", "print a build's manifest summary (building it if needed)", _data_show),
                                 ("probe", "linear probes on raw features: within and across modalities",
                                  _data_probe)):
        p = commands.add_parser(name, help=helptext)
        p.add_argument("--scale", default="default", choices=SCALE_NAMES)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="cache folder (default: $CMG_CACHE or ~/.cache/cmg)")
        p.set_defaults(func=func)


# ---------------------------------------------------------------------------------------------------- pretrain
def _pretrain(args: argparse.Namespace) -> int:
    overrides = list(args.set) + [f"data.source={args.data}"]
    for flag, key in (("seed", "train.seed"), ("scale", "data.scale"), ("pretrain_size", "data.pretrain_size"),
                      ("device", "train.device")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    config = preset(args.preset, args.method, overrides)
    if args.steps is not None and args.steps < 1:          # checked again by pretrain; here before the data loads
        raise ValueError(f"--steps must be a positive number of optimiser steps, got {args.steps}")
    check_device(config.train.device)
    extra = {"paths": dict(args.paths)} if args.paths else {}
    with holding_out_folder(args.out, config.train.device):   # a busy --out is refused before the data loads
        dataset = load_dataset(args.data, "pretrain", config.data.pretrain_size, scale=config.data.scale, **extra)
        pretrain(config, dataset, out_dir=args.out, steps=args.steps, resume=args.resume)
    print(f"checkpoint: {Path(args.out) / 'final.pt'}")
    return 0


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train Uni-Code (a Table 1 method, FCID or MICU) and write checkpoints")
    p.add_argument("--preset", required=True, help="config preset, e.g. released_avt, book_av or paper_avt")
    p.add_argument("--method", default="unicode",
                   help="a Table 1 method or a successor, fcid or micu (cmg_lib.presets.METHODS)")
    p.add_argument("--data", default="avdigits", help="'avdigits' or a folder of official features")
    p.add_argument("--out", required=True, help="output folder for checkpoints")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: the config's epochs)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. model.beta=0.5 or model.modalities.audio.specific_dim=256")
    p.add_argument("--resume", default=None, help="checkpoint to continue from")
    p.add_argument("--scale", choices=SCALE_NAMES, default=None, help="AV-Digits build scale")
    p.add_argument("--pretrain-size", choices=PRETRAIN_SIZES, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    _add_paths(p)
    p.set_defaults(func=_pretrain)


# ---------------------------------------------------------------------------------------------------- downstream
def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--opt {text!r} must look like KEY=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def format_metrics(record: dict) -> str:
    """A small two-column table of a result record's metrics, headed by the run's task and direction."""
    head = (f"{record['task']} {record['direction']} ({record['protocol']}, seed {record['seed']}, "
            f"best epoch {record['best_epoch']}, {record['n_train']} train / {record['n_test']} test clips)")
    width = max(len(k) for k in record["metrics"])
    lines = [head, f"{'metric'.ljust(width)}  value (%)"]
    lines += [f"{k.ljust(width)}  {v:8.2f}" for k, v in record["metrics"].items()]
    settings = record.get("downstream") or {}
    if "released_threshold" in settings:           # oscmg: the max-softmax thresholds behind the two choices
        lines.append(f"threshold (max softmax): {settings['threshold']:.4f} chosen on validation; "
                     f"{settings['released_threshold']:.4f} the released choice on the test clips")
    if record.get("toc"):
        lines.append(f"TOC: the heads read {record['toc']['dims']} code dimensions")
    return "\n".join(lines)


def _downstream(args: argparse.Namespace) -> int:
    options = dict(args.opt)
    for key, value in (("data_seed", args.data_seed), ("paths", dict(args.paths) or None),
                       ("allow_data_mismatch", args.allow_data_mismatch or None)):
        if value is not None:
            options[key] = value
    record = run_task(args.task, ckpt=args.ckpt, data=args.data, train_modality=args.train_modality,
                      test_modality=args.test_modality, seed=args.seed, protocol=args.protocol, scale=args.scale,
                      epochs=args.epochs, results_path=args.results, progress=not args.no_progress, **options)
    print(format_metrics(record))
    return 0


def _add_downstream(sub) -> None:
    p = sub.add_parser("downstream", help="run a cross-modal generalisation task on a frozen checkpoint",
                       description="run one downstream task on a frozen checkpoint and print its metrics")
    p.add_argument("task", choices=tuple(TASKS))
    p.add_argument("--ckpt", required=True, help="pre-trained checkpoint (.pt)")
    p.add_argument("--data", default="avdigits", help="'avdigits' or a folder of official features")
    p.add_argument("--train-modality", default="video", choices=("audio", "video", "text"))
    p.add_argument("--test-modality", default="audio", choices=("audio", "video", "text"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", choices=("heldout", "released"), default="heldout")
    p.add_argument("--scale", choices=SCALE_NAMES, default=None,
                   help="AV-Digits build (default: the one the checkpoint was pre-trained on)")
    p.add_argument("--data-seed", type=int, default=None,
                   help="AV-Digits build seed (default: the checkpoint's pre-training data seed)")
    p.add_argument("--allow-data-mismatch", action="store_true",
                   help="evaluate on another AV-Digits build than the checkpoint's (noted in the record)")
    _add_paths(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--results", default=None, help="append the result record to this JSON-lines file")
    p.add_argument("--opt", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="task setting override, e.g. --opt lr=1e-3 (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_downstream)


# ---------------------------------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cmg_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_data, _add_pretrain, _add_downstream):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
