"""The targets of the book recipe on pre-training seeds the book does not use (default 100 and 101).

The same runs as the "why" chapter's (``experiments.why``: the book recipe trained for the longer row's updates,
its snapshot at the recipe's updates, the baseline), on other seeds, at a scale's budget; prints per seed the
labelled-modality and cross-modal AVE accuracies (held-out protocol), their ratio, the margin over the baseline,
the same code on aligned segments, and the target verdicts (inconclusive by rule below 3 seeds):

    python tools/heldout_targets.py --scale default --seeds 100,101
"""
from __future__ import annotations

import argparse
import sys

from cmg_lib import experiments as ex
from cmg_lib.data.avdigits.scales import SCALE_NAMES
from cmg_lib.experiments import why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default", choices=SCALE_NAMES)
    parser.add_argument("--seeds", default="100,101", help="comma-separated pre-training seeds")
    parser.add_argument("--data", default="avdigits")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds expects comma-separated integers, e.g. 100,101; got {args.seeds!r}") from None
    nb = ex.setup(args.scale, args.data)
    n = why.steps(nb)
    rows = {row: ckpts for row, ckpts in why.recipe_rows(nb, seeds).items() if row != why.SHORTER}
    records = why.transfer(nb, rows)
    diag = why.diagnostics(nb, rows)
    base = [r for c in why.baseline_runs(nb, seeds).values()
            for r in nb.evaluate(c, "ave", why.CROSS, tags={"row": "baseline"})]
    baseline = ex.claims.by_pretrain_seed(base)
    print(f"scale {args.scale}, pre-training seeds {seeds}, head seed {nb.seeds[0]} (baseline: {nb.seeds}); "
          f"updates: recipe {n['recipe']}, {why.LONGER} {n['longer']}; baseline (AVE cross) per seed: {baseline}")
    for row in rows:
        labelled = ex.claims.by_pretrain_seed(records, row=row, kind="labelled")
        cross = ex.claims.by_pretrain_seed(records, row=row, kind="cross")
        for s in seeds:
            print(f"  {row} seed {s}: labelled {labelled[s]:.1f}, cross {cross[s]:.1f} "
                  f"(ratio {cross[s] / labelled[s]:.2f}, baseline + {cross[s] - baseline[s]:.1f}), "
                  f"same code {100 * diag[row][s]['same_code']:.1f} %")
        scope = nb.scope(nb.seeds[:1], steps=n["longer" if row == why.LONGER else "recipe"], pretrain_seeds=seeds)
        print(ex.claims.markdown(why.target_claims(records, baseline, diag[row], row=row), scope))
    return 0


if __name__ == "__main__":
    sys.exit(main())
