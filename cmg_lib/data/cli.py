"""``python -m cmg_lib data {build,show,probe}``: build the AV-Digits cache, describe it, run the linear probes."""
from __future__ import annotations

import argparse
import json
import time


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="build or inspect the embedded AV-Digits dataset")
    sub = parser.add_subparsers(dest="data_command", required=True)
    for name, helptext, func in (("build", "build the cache (instant if present); prints the manifest hash", _build),
                                 ("show", "print a build's manifest summary (building it if needed)", _show),
                                 ("probe", "linear probes on raw features: within and across modalities", _probe)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--scale", default="default", choices=("smoke", "default", "full"))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="cache folder (default: $CMG_CACHE or ~/.cache/cmg)")
        p.set_defaults(func=func)


def _build(args: argparse.Namespace) -> int:
    from .avdigits import build_dataset, manifest

    t0 = time.perf_counter()
    folder = build_dataset(args.scale, args.seed, args.out)
    meta = manifest(args.scale, args.seed, args.out)
    print(f"avdigits scale={args.scale} seed={args.seed} folder={folder} ({time.perf_counter() - t0:.1f} s)")
    print(meta["hash"])
    return 0


def _show(args: argparse.Namespace) -> int:
    from .avdigits import manifest

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


def _probe(args: argparse.Namespace) -> int:
    from .probes import run_probes

    print(json.dumps(run_probes(args.scale, args.seed, args.out), indent=2))
    return 0
