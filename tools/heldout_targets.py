"""The book recipe's targets on pre-training seeds the book does not use (default 100 and 101).

The same runs as the "why" chapter's learning curve (``experiments.why``: the book recipe at full length, what
``python -m cmg_lib pretrain --preset book_av --data avdigits --seed S`` trains, with its snapshots) and its
baseline, on other seeds, at a scale's budget; prints per seed and number of updates the labelled-modality and
cross-modal AVE accuracies (held-out protocol), their ratio, the margin over the baseline, the same code on aligned
segments, then the target verdicts at full length (inconclusive by rule below 3 seeds). ``--club-condition NAME``
(repeatable) also trains that CLUB condition of the why chapter (``why.CLUB_CONDITIONS``) at full length on the same
seeds and prints the same measures for it, to check a finding of the chapter on seeds it did not see, or what a
condition the default book leaves to scale ``full`` gives at full length; ``--switch NAME`` (repeatable) does the
same for one of the chapter's released choices (``why.SWITCHES``), with the verdict on the measure that choice is
suspected of lowering, and ``--released`` for the whole released recipe (at the book's batch, as the chapter's last
row); ``--doubled`` trains the recipe, and every condition and switch asked for, for twice the recipe's updates and
prints the chapter's plateau test (``why.plateau_table`` and its verdict), the conditions at that length and, with
"w/o CLUB", whether CLUB's effect lasts (``why.delay_claims``): what the default book leaves to scale ``full``.
Every run is trained first, as the book build does: one one-thread worker per core, longest first
(``experiments.pool``); runs already in the cache are reused.

    python tools/heldout_targets.py --scale default --seeds 100,101
    python tools/heldout_targets.py --scale default --seeds 100,101 \
        --club-condition "CLUB, reconstruction does not train the code"
    python tools/heldout_targets.py --scale default --seeds 0,1,2 --club-condition "CLUB at a tenth of its weight" \
        --club-condition "CLUB, audio specific encoder at the released width"
    python tools/heldout_targets.py --scale default --seeds 0,1,2 --switch "CMCM without temperature" --released
    python tools/heldout_targets.py --scale default --seeds 0,1,2 --doubled --club-condition "w/o CLUB"
"""
from __future__ import annotations

import argparse
import sys

from cmg_lib import experiments as ex
from cmg_lib.data.avdigits.scales import SCALE_NAMES
from cmg_lib.experiments import pool, why
from cmg_lib.experiments.chapters import PlanRecorder


def runs(nb, seeds, conditions, switches=(), released=False, doubled=False) -> dict:
    """The tool's pre-training runs on ``seeds``: ``curve`` (the recipe's full-length runs and their snapshots,
    ``{updates: {seed: ckpt}}``), ``baseline``, ``conditions`` (the CLUB ``conditions``, the ``switches`` and,
    if ``released``, the released recipe; ``{name: {seed: ckpt}}``, as long as the recipe) and, if ``doubled``,
    ``doubled`` (the recipe trained twice as long, ``{seed: ckpt}``) and ``doubled conditions`` (the CLUB
    conditions and the switches trained twice as long)."""
    overrides = {**{name: why.CLUB_CONDITIONS[name] for name in conditions},
                 **{name: why.SWITCHES[name].overrides for name in switches}}
    out = {"curve": why.curve_runs(nb, seeds), "baseline": why.baseline_runs(nb, seeds),
           "conditions": {name: why.recipe_runs(nb, seeds, overrides=o) for name, o in overrides.items()}}
    if released:
        out["conditions"][why.RELEASED] = why.released_runs(nb, seeds, why.lengths(nb)["recipe"])
    if doubled:
        out["doubled"] = why.doubled_runs(nb, seeds)
        out["doubled conditions"] = {name: why.doubled_runs(nb, seeds, o) for name, o in overrides.items()}
    return out


def train_first(nb, seeds, conditions, switches=(), released=False, doubled=False) -> None:
    """Train every run :func:`runs` asks for that is not cached yet, one one-thread worker per core."""
    recorder = PlanRecorder(nb.scale, nb.budget, nb.recipe, nb.device, nb.data)
    runs(recorder, seeds, conditions, switches, released, doubled)
    pool.train_runs(pool.jobs_from_plan(list(recorder.runs.values())), nb.data, cache_dir=nb.cache_dir)


def plateau(nb, records, diag, doubled, scope) -> None:
    """Print the plateau test (``why.plateau_table``: the doubled runs' measures beside the recipe's, how far
    doubling moved each against its seed interval) and the verdict that cross-modal transfer still rises
    (``why.curve_claim``), as the chapter shows them at scale ``full``."""
    n = why.lengths(nb)
    records = records + why.transfer(nb, {n["doubled"]: doubled}, key="updates")
    diag = {n["recipe"]: diag[n["recipe"]], **why.diagnostics(nb, {n["doubled"]: doubled})}
    curve = why.curve_table(records, diag)
    for s in sorted({r["seed"] for r in curve}):
        at = {r["updates"]: r for r in curve if r["seed"] == s}
        print(f"  seed {s}: " + "; ".join(f"{m} {at[n['recipe']][m]:.1f} -> {at[n['doubled']][m]:.1f}"
                                          for m in ("labelled", "cross", "same code")))
    for measure, row in why.plateau_table(curve, n["recipe"], n["doubled"]).items():
        print(f"  {measure}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k}: {v}"
                                           for k, v in row.items()))
    print(ex.claims.markdown([why.curve_claim(records, n["recipe"], n["doubled"])], scope))


def compare(nb, conditions, recipe_diag, recipe_records, steps, baseline, scope) -> None:
    """Print each condition's measures per seed beside the recipe's at ``steps`` updates (``recipe_diag``: the
    recipe's diagnostics per seed there; ``recipe_records``: its AVE records tagged ``updates``) and the chapter's
    verdicts on them."""
    recipe = {steps: recipe_diag}
    recipe_same = why.per_seed(recipe, steps, "same_code", 100)
    recipe_cross = ex.claims.by_pretrain_seed(recipe_records, updates=steps, kind="cross")
    cond, cond_diag = why.transfer(nb, conditions), why.diagnostics(nb, conditions)
    verdicts = []
    for name in conditions:
        labelled = ex.claims.by_pretrain_seed(cond, kind="labelled", row=name)
        cross = ex.claims.by_pretrain_seed(cond, kind="cross", row=name)
        same = why.per_seed(cond_diag, name, "same_code", 100)
        switch = why.SWITCHES.get(name)
        measure = {} if switch is None else why.per_seed(cond_diag, name, switch.measure)
        recipe_measure = {} if switch is None else why.per_seed(recipe, steps, switch.measure)
        for s in conditions[name]:
            line = (f"  {name}, {steps} updates, seed {s}: labelled {labelled[s]:.1f}, cross "
                    f"{cross[s]:.1f} (ratio {cross[s] / labelled[s]:.2f}, baseline + {cross[s] - baseline[s]:.1f}), "
                    f"same code {same[s]:.1f} % (recipe {recipe_same[s]:.1f} %)")
            if switch is not None:
                line += f", {switch.label} {measure[s]:.3g} (recipe {recipe_measure[s]:.3g})"
            print(line)
        if name == why.RELEASED:               # the chapter's verdicts (why.switch_claims), at full length
            verdicts.append(why.released_claim(recipe_cross, cross))
        elif switch is None:
            verdicts.append(ex.claims.greater(f"{name}: more aligned segments get the same code than with the "
                                              f"{why.RECIPE}", same, recipe_same, names=(name, why.RECIPE)))
        else:
            verdicts.append(why.switch_claim(name, recipe_measure, measure))
            verdicts.append(ex.claims.greater(f"the {why.RECIPE} transfers better across modalities than with "
                                              f"{name} (AVE, mean of V→A and A→V)", recipe_cross, cross,
                                              names=(why.RECIPE, name)))
    if verdicts:
        print(ex.claims.markdown(verdicts, scope))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default", choices=SCALE_NAMES)
    parser.add_argument("--seeds", default="100,101", help="comma-separated pre-training seeds")
    parser.add_argument("--data", default="avdigits")
    parser.add_argument("--club-condition", action="append", default=[], choices=sorted(why.CLUB_CONDITIONS),
                        help="also train this CLUB condition at full length on the same seeds (repeatable)")
    parser.add_argument("--switch", action="append", default=[], choices=sorted(why.SWITCHES),
                        help="also train the recipe with this released choice put back, at full length on the same "
                             "seeds (repeatable)")
    parser.add_argument("--released", action="store_true",
                        help="also train the released recipe (at the book's batch) as long as the recipe")
    parser.add_argument("--doubled", action="store_true",
                        help="also train the recipe for twice its updates (is its length a plateau?), and each CLUB "
                             "condition and switch asked for")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds expects comma-separated integers, e.g. 100,101; got {args.seeds!r}") from None
    conditions, switches = list(dict.fromkeys(args.club_condition)), list(dict.fromkeys(args.switch))
    nb = ex.setup(args.scale, args.data, threads=1)
    n = why.lengths(nb)
    train_first(nb, seeds, conditions, switches, args.released, args.doubled)
    wanted = runs(nb, seeds, conditions, switches, args.released, args.doubled)
    curve = wanted["curve"]
    records = why.transfer(nb, curve, key="updates")
    diag = why.diagnostics(nb, curve)
    base = [r for c in wanted["baseline"].values()
            for r in nb.evaluate(c, "ave", why.CROSS, nb.seeds[:1], tags={"row": "baseline"})]
    baseline = ex.claims.by_pretrain_seed(base)
    raw, paper_ratio = why.references(nb)
    print(f"scale {args.scale}, pre-training seeds {seeds}, head seed {nb.seeds[0]}; the recipe's updates "
          f"{n['recipe']}; baseline (AVE cross, {n['recipe']} updates) per seed: {baseline}; raw-feature head "
          f"(A→A, V→V): {raw}; the paper's transfer ratio {paper_ratio:.3f}")
    for step in n["curve"]:
        labelled = ex.claims.by_pretrain_seed(records, updates=step, kind="labelled")
        cross = ex.claims.by_pretrain_seed(records, updates=step, kind="cross")
        for s in seeds:
            print(f"  {step} updates, seed {s}: labelled {labelled[s]:.1f}, cross {cross[s]:.1f} "
                  f"(ratio {cross[s] / labelled[s]:.2f}, baseline + {cross[s] - baseline[s]:.1f}), "
                  f"same code {100 * diag[step][s]['same_code']:.1f} %")
    scope = nb.scope(nb.seeds[:1], steps=n["recipe"], pretrain_seeds=seeds)
    print(ex.claims.markdown(why.target_claims(records, baseline, raw, diag[n["recipe"]], paper_ratio, n["recipe"]),
                             scope))
    if args.doubled:
        plateau(nb, records, diag, wanted["doubled"],
                nb.scope(nb.seeds[:1], steps=f"{n['recipe']} and {n['doubled']}", pretrain_seeds=seeds))
    compare(nb, wanted["conditions"], diag[n["recipe"]], records, n["recipe"], baseline,
            nb.scope(nb.seeds[:1], steps=n["recipe"], pretrain_seeds=seeds))
    if args.doubled and wanted["doubled conditions"]:
        recipe = {n["doubled"]: wanted["doubled"]}
        compare(nb, wanted["doubled conditions"], why.diagnostics(nb, recipe)[n["doubled"]],
                why.transfer(nb, recipe, key="updates"), n["doubled"], baseline,
                nb.scope(nb.seeds[:1], steps=n["doubled"], pretrain_seeds=seeds))
        if why.NO_CLUB in wanted["doubled conditions"]:        # the chapter's test: does CLUB's effect last?
            at = {length: why.diagnostics(nb, {why.RECIPE: recipe_ckpts, why.NO_CLUB: conditions[why.NO_CLUB]})
                  for length, recipe_ckpts, conditions in (
                      (n["recipe"], curve[n["recipe"]], wanted["conditions"]),
                      (n["doubled"], wanted["doubled"], wanted["doubled conditions"]))}
            print(ex.claims.markdown(why.delay_claims(at[n["recipe"]], at[n["doubled"]]),
                                     nb.scope(nb.seeds[:1], steps=f"{n['recipe']} and {n['doubled']}",
                                              pretrain_seeds=seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
