"""``python -m cmg_lib downstream TASK --ckpt CKPT ...``: run one downstream task and print its metrics."""
from __future__ import annotations

import argparse
import json

TASK_NAMES = ("ave", "avvp", "ave_avvp", "ucf_vgg", "avs", "retrieval")


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--opt {text!r} must look like KEY=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def register(subparsers) -> None:
    """Add the ``downstream`` subcommand."""
    p = subparsers.add_parser("downstream", help="run a cross-modal generalisation task on a frozen checkpoint",
                              description=__doc__)
    p.add_argument("task", choices=TASK_NAMES)
    p.add_argument("--ckpt", required=True, help="pre-trained checkpoint (.pt)")
    p.add_argument("--data", default="avdigits", help="'avdigits' or a folder of official features")
    p.add_argument("--train-modality", default="video", choices=("audio", "video", "text"))
    p.add_argument("--test-modality", default="audio", choices=("audio", "video", "text"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", choices=("heldout", "released"), default="heldout")
    p.add_argument("--scale", default="default")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--results", default=None, help="append the result record to this JSON-lines file")
    p.add_argument("--opt", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="task setting override, e.g. --opt lr=1e-3 (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)


def format_metrics(record: dict) -> str:
    """A small two-column table of a result record's metrics, headed by the run's task and direction."""
    head = (f"{record['task']} {record['direction']} ({record['protocol']}, seed {record['seed']}, "
            f"best epoch {record['best_epoch']}, {record['n_train']} train / {record['n_test']} test clips)")
    width = max(len(k) for k in record["metrics"])
    lines = [head, f"{'metric'.ljust(width)}  value (%)"]
    lines += [f"{k.ljust(width)}  {v:8.2f}" for k, v in record["metrics"].items()]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from .tasks import run_task
    record = run_task(args.task, ckpt=args.ckpt, data=args.data, train_modality=args.train_modality,
                      test_modality=args.test_modality, seed=args.seed, protocol=args.protocol, scale=args.scale,
                      epochs=args.epochs, results_path=args.results, progress=not args.no_progress, **dict(args.opt))
    print(format_metrics(record))
    return 0
