"""Command line: ``python -m cmg_lib {data,pretrain,downstream,bench} ...``.

Each subcommand is registered by the module that implements it (``register(subparsers)`` returning nothing; the
parser's ``func`` default runs the command), so this file stays thin.
"""
from __future__ import annotations

import argparse
import importlib
import sys

_COMMANDS = {
    "data": "cmg_lib.data.cli",
    "pretrain": "cmg_lib.train",
    "downstream": "cmg_lib.downstream.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cmg_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
