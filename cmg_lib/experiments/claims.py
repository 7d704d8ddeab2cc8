"""Verdicts on the paper's claims: holds / does not hold / inconclusive, from pre-training seeds with an interval.

The unit of evidence is a **pre-training seed**: each seed's value is the mean over its downstream head seeds (and
over the columns a claim averages), and a claim is judged on the per-seed values, or on per-seed paired differences
when it compares two rows trained with the same seeds. With ``n`` seeds, the two-sided Student-t interval at 95 %
(:func:`t_interval`; a verdict prints it as ``mean ± half-width``, :data:`HALF_WIDTH`) decides:

* **holds** when the whole interval lies past the claim's threshold (e.g. ``difference > 0`` or ``> 5 points``);
* **does not hold** when the whole interval lies on the other side;
* **inconclusive** when the interval contains the threshold (the gap is inside seed noise), or when fewer than
  :data:`MIN_SEEDS` pre-training seeds ran (then no interval is trusted at all).

A claim made of several comparisons (:func:`all_of`, e.g. "best in every column") holds when every part holds and
does not hold when any part does not. Every verdict prints its threshold, its interval and its seeds.

A notebook shows its verdicts with :func:`show`: one output that the page renders as the verdict list
(:func:`markdown`) and that also carries them as a machine-readable record (:func:`record`, in the output's
metadata under :data:`RECORD_KEY`, which the book's renderer ignores); ``tools/build_book.py`` reads the records
back from the executed notebooks (:func:`records_in`) for the "Claims at a glance" page and the status page.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from .tables import field as record_field

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
MIN_SEEDS = 3                 # pre-training seeds a verdict needs
CONFIDENCE = 0.95
# what "±" means in a verdict and in the diagnostics' tables (the results tables' "±" is a standard deviation,
# ``tables.STANDARD_DEVIATION``)
HALF_WIDTH = f"mean ± half-width of the {CONFIDENCE * 100:g} % Student-t interval over pre-training seeds"
FAR_POINTS = 5.0              # "far better / worse" = by more than this many percentage points
PRETRAIN_SEED = "pretrain.train.seed"
# a verdict list's machine-readable twin: the metadata of the display output that shows its markdown, under this
# key (myst-nb renders the markdown and ignores the metadata; a MIME type of its own would be warned about as
# unknown); RECORD_FORMAT versions the record's layout (:func:`record`)
RECORD_KEY = "cmg_verdicts"
RECORD_FORMAT = "cmg-verdicts/1"


def _finite(x: float) -> float | None:
    """A number for JSON: None for NaN and infinities (JSON has neither)."""
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Verdict:
    """One claim's outcome, with the evidence behind it (already formatted) and the rule that decided it."""

    claim: str
    outcome: str
    evidence: str
    rule: str = ""
    parts: tuple["Verdict", ...] = field(default=(), repr=False)
    value: float = math.nan          # the mean the rule was applied to (difference or value)
    half_width: float = math.inf     # of its 95 % interval (inf: no interval)
    seeds: int = 0                   # pre-training seeds it rests on
    threshold: float = math.nan      # what the interval must lie past

    def markdown(self) -> str:
        rule = f"; rule: {self.rule}" if self.rule else ""
        return f"- {self.claim}: **{self.outcome}** ({self.evidence}{rule})"

    def record(self) -> dict:
        """The verdict as JSON-ready data: claim, outcome, evidence and rule as printed, the mean, half-width and
        interval ``[low, high]`` (None where there is none), its seeds and threshold, and its parts' records."""
        interval = (None if _finite(self.value) is None or _finite(self.half_width) is None
                    else [self.value - self.half_width, self.value + self.half_width])
        return {"claim": self.claim, "outcome": self.outcome, "evidence": self.evidence, "rule": self.rule,
                "mean": _finite(self.value), "half_width": _finite(self.half_width), "interval": interval,
                "seeds": self.seeds, "threshold": _finite(self.threshold),
                "parts": [p.record() for p in self.parts]}


@dataclass(frozen=True)
class Scope:
    """What a notebook's verdicts rest on, printed with them: scale, steps, pre-training and head seeds."""

    scale: str
    steps: int | str          # a number of updates, or a phrase when rows differ ("222 (rows: 75 to 666)")
    pretrain_seeds: tuple[int, ...]
    head_seeds: tuple[int, ...]

    def record(self) -> dict:
        """The scope as JSON-ready data (``updates``: :attr:`steps` as text, as printed)."""
        return {"scale": self.scale, "updates": str(self.steps), "pretrain_seeds": list(self.pretrain_seeds),
                "head_seeds": list(self.head_seeds), "spread": HALF_WIDTH, "min_seeds": MIN_SEEDS}

    def markdown(self) -> str:
        text = (f"Verdicts at scale **{self.scale}**: pre-training updates {self.steps}; pre-training seeds "
                f"{list(self.pretrain_seeds)}, head seeds {list(self.head_seeds)}; values: {HALF_WIDTH}; at "
                f"least {MIN_SEEDS} seeds for a verdict.")
        if len(self.pretrain_seeds) < MIN_SEEDS:
            text += (f" With {len(self.pretrain_seeds)} pre-training seed(s) every claim is **inconclusive** by "
                     "rule; the numbers show the direction only.")
        return text


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """``(mean, half-width, n)`` of the two-sided Student-t interval; half-width ``inf`` for fewer than 2 values."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.inf, 0
    if x.size < 2:
        return float(x[0]), math.inf, 1
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()), half, int(x.size)


def _decide(mean: float, half: float, n: int, threshold: float) -> str:
    if n < MIN_SEEDS or math.isnan(mean):
        return INCONCLUSIVE
    if mean - half > threshold:
        return HOLDS
    if mean + half < threshold:
        return FAILS
    return INCONCLUSIVE


def _num(x: float) -> str:
    """A value as the evidence prints it: three decimals below 1 (code purity 0.372), two below 10, one above
    (accuracies in points, 36.9)."""
    return f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _interval_text(mean: float, half: float, n: int, unit: str) -> str:
    if n == 0:
        return "no values"
    spread = f"{unit} (no interval)" if math.isinf(half) else f" ± {_num(half)}{unit}"
    return f"{_num(mean)}{spread} over {n} pre-training seed{'s' if n != 1 else ''}"


def exceeds(claim: str, values: Sequence[float] | Mapping[int, float], threshold: float = 0.0, *,
            what: str = "value", unit: str = "") -> Verdict:
    """The claim that the per-seed ``values`` exceed ``threshold``."""
    vals = list(values.values()) if isinstance(values, Mapping) else list(values)
    mean, half, n = t_interval(vals)
    outcome = _decide(mean, half, n, threshold)
    rule = f"{what} > {threshold:.3g}{unit}" + (f"; needs >= {MIN_SEEDS} seeds" if n < MIN_SEEDS else "")
    return Verdict(claim, outcome, f"{what} {_interval_text(mean, half, n, unit)}", rule, value=mean,
                   half_width=half, seeds=n, threshold=threshold)


def greater(claim: str, a: Mapping[int, float], b: Mapping[int, float], margin: float = 0.0, *,
            names: tuple[str, str] = ("a", "b"), unit: str = " points") -> Verdict:
    """The claim that ``a`` exceeds ``b`` by more than ``margin``, on the paired per-seed differences ``a - b``
    over the pre-training seeds both have."""
    common = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in common]
    mean, half, n = t_interval(diffs)
    outcome = _decide(mean, half, n, margin)
    ma, mb = (float(np.mean([d[s] for s in common])) if common else math.nan for d in (a, b))
    evidence = (f"{names[0]} {_num(ma)} vs {names[1]} {_num(mb)}; difference "
                f"{_interval_text(mean, half, n, unit)}")
    rule = f"difference > {margin:g}{unit}" + (f"; needs >= {MIN_SEEDS} seeds" if n < MIN_SEEDS else "")
    return Verdict(claim, outcome, evidence, rule, value=mean, half_width=half, seeds=n, threshold=margin)


def all_of(claim: str, parts: Sequence[Verdict], what: str = "comparisons") -> Verdict:
    """Holds when every part holds; does not hold when any part does not; inconclusive otherwise."""
    count = {o: sum(p.outcome == o for p in parts) for o in (HOLDS, FAILS, INCONCLUSIVE)}
    if not parts:
        outcome = INCONCLUSIVE
    elif count[FAILS]:
        outcome = FAILS
    elif count[HOLDS] == len(parts):
        outcome = HOLDS
    else:
        outcome = INCONCLUSIVE
    evidence = (f"holds in {count[HOLDS]}, fails in {count[FAILS]}, inconclusive in {count[INCONCLUSIVE]} of "
                f"{len(parts)} {what}")
    values = [p.value for p in parts if not math.isnan(p.value)]
    if values:
        evidence += f"; mean differences {_num(min(values))} to {_num(max(values))}"
    return Verdict(claim, outcome, evidence, "every part must hold", tuple(parts))


def markdown(verdicts: Iterable[Verdict], scope: Scope | None = None) -> str:
    """The verdict list as markdown, headed by the scope it rests on."""
    lines = [scope.markdown(), ""] if scope is not None else []
    return "\n".join(lines + [v.markdown() for v in verdicts])


def record(verdicts: Iterable[Verdict], scope: Scope, section: str) -> dict:
    """A notebook's verdict list as one JSON-ready record: ``{"format": RECORD_FORMAT, "section": the paper's section
    (or what the claims are about), "scope": Scope.record(), "verdicts": [Verdict.record(), ...]}``."""
    if not section or not isinstance(section, str):
        raise ValueError(f"section must name the paper's section the claims come from (e.g. 'Sec. 5.3, Table 1'), "
                         f"got {section!r}")
    return {"format": RECORD_FORMAT, "section": section, "scope": scope.record(),
            "verdicts": [v.record() for v in verdicts]}


def output(verdicts: Iterable[Verdict], scope: Scope, section: str) -> tuple[dict, dict]:
    """What :func:`show` displays, as ``(data, metadata)`` of one display output: ``{"text/markdown":
    markdown(...)}`` and ``{RECORD_KEY: record(...)}``."""
    verdicts = list(verdicts)
    return {"text/markdown": markdown(verdicts, scope)}, {RECORD_KEY: record(verdicts, scope, section)}


def show(verdicts: Iterable[Verdict], scope: Scope, section: str) -> None:
    """Display a notebook's verdicts: the page shows :func:`markdown`, the same output carries :func:`record`
    (read back by :func:`records_in` for the book's claims and status pages). ``section``: the paper's section the
    claims come from, e.g. ``"Sec. 5.3, Table 1"``."""
    from IPython.display import display      # only inside a notebook kernel

    data, metadata = output(verdicts, scope, section)
    display(data, raw=True, metadata=metadata)


def records_in(notebook: Mapping) -> list[dict]:
    """The verdict records (:func:`record`) an executed notebook (nbformat 4 JSON, as a dict) displayed, in cell
    order; a record of another format is refused with a one-line error."""
    out = []
    for i, cell in enumerate(notebook.get("cells", [])):
        for shown in cell.get("outputs", []) if cell.get("cell_type") == "code" else ():
            data = shown.get("metadata", {}).get(RECORD_KEY)
            if data is None:
                continue
            if data.get("format") != RECORD_FORMAT:
                raise ValueError(f"cell {i + 1} holds a verdict record of format {data.get('format')!r}; expected "
                                 f"{RECORD_FORMAT!r}: execute the notebook again with this library")
            out.append(data)
    return out


# ------------------------------------------------------------------------------------------------ from records

def by_pretrain_seed(records: Iterable[dict], value: str = "metric", **where) -> dict[int, float]:
    """Per pre-training seed, the mean of ``value`` over the records matching ``where`` (head seeds and any
    columns the filter leaves open are averaged)."""
    groups: dict[int, list[float]] = {}
    for r in records:
        if all(record_field(r, k) == v for k, v in where.items()):
            groups.setdefault(int(record_field(r, PRETRAIN_SEED)), []).append(float(record_field(r, value)))
    return {s: float(np.mean(v)) for s, v in sorted(groups.items())}


def _columns(records: Iterable[dict], keys: Sequence[str]) -> list[tuple]:
    return sorted({tuple(record_field(r, k) for k in keys) for r in records})


def _where(keys: Sequence[str], col: tuple) -> dict:
    return dict(zip(keys, col))


def _col_label(col: tuple) -> str:
    return " ".join(str(c) for c in col)


# ------------------------------------------------------------------------------------------------ per notebook

def table1_claims(records: list[dict], methods: Sequence[str], main_size: str) -> list[Verdict]:
    """Table 1 (Sec. 5.3): Uni-Code beats every compared method in every column of the main size; the baseline
    transfers far worse; DCID improves each compared method; more data (24K -> 40K) helps Uni-Code."""
    keys = ("pretrain_size", "task", "direction")
    columns = [c for c in _columns(records, keys) if c[0] == main_size]

    def at(method, col):
        return by_pretrain_seed(records, method=method, **_where(keys, col))

    others = [m for m in methods if m != "unicode"]
    out = [all_of("Uni-Code outperforms every compared method (Sec. 5.3)",
                  [greater(f"{_col_label(c)} vs {o}", at("unicode", c), at(o, c), names=("Uni-Code", o))
                   for c in columns for o in others], "column x method comparisons")]
    all_columns = _columns(records, keys)
    if "baseline" in methods:
        out.append(all_of("the unconstrained baseline transfers far worse than Uni-Code",
                          [greater(_col_label(c), at("unicode", c), at("baseline", c), FAR_POINTS,
                                   names=("Uni-Code", "baseline")) for c in all_columns],
                          f"columns (margin {FAR_POINTS:g} points)"))
    pairs = [(x, f"dcid+{x}") for x in ("smit", "mst", "codis", "turn", "cmcm")
             if x in methods and f"dcid+{x}" in methods]
    if pairs:
        out.append(all_of("adding DCID improves each compared method (Table 1, lower half)",
                          [greater(f"{_col_label(c)} {d} vs {x}", at(d, c), at(x, c), names=(d, x))
                           for x, d in pairs for c in columns], "method x column comparisons"))
    small = [c for c in all_columns if c[0] == "24k"]
    if small and any(c[0] == "40k" for c in all_columns):
        out.append(all_of("more pre-training data (24K to 40K) helps Uni-Code",
                          [greater(_col_label(c[1:]), at("unicode", ("40k",) + c[1:]), at("unicode", c),
                                   names=("40K", "24K")) for c in small], "columns"))
    return out


def _row_means(records: list[dict], rows: Iterable[str], keys: Sequence[str]) -> dict[str, dict[int, float]]:
    """Per row, per pre-training seed, the mean over the columns (``keys``) the records have."""
    columns = _columns(records, keys)
    out = {}
    for row in rows:
        per_col = [by_pretrain_seed(records, row=row, **_where(keys, c)) for c in columns]
        seeds = set.intersection(*(set(p) for p in per_col)) if per_col else set()
        out[row] = {s: float(np.mean([p[s] for p in per_col])) for s in sorted(seeds)}
    return out


def ablation_claims(records: list[dict], rows: Sequence[str], keys: Sequence[str] = ("pretrain_size", "task",
                                                                                    "direction")) -> list[Verdict]:
    """Tables 2 / 3 (Sec. 5.4) on the column average: removing any component lowers performance; removing
    Cross-CPC hurts more than removing CLUB; MM-EMA with reset matters."""
    means = _row_means(records, rows, keys)
    ablated = [r for r in rows if r != "full"]
    out = [all_of("removing any component lowers performance (Sec. 5.4)",
                  [greater(f"full vs {r}", means["full"], means[r], names=("full", r)) for r in ablated],
                  "ablations (average over columns)")]
    if {"w/o CLUB", "w/o Cross-CPC"} <= set(ablated):
        out.append(greater("removing Cross-CPC hurts more than removing CLUB", means["w/o CLUB"],
                           means["w/o Cross-CPC"], names=("w/o CLUB", "w/o Cross-CPC")))
    if "w/o MM-EMA, reset" in ablated:
        out.append(greater("MM-EMA with code reset matters", means["full"], means["w/o MM-EMA, reset"],
                           names=("full", "w/o MM-EMA, reset")))
    return out


def labelled_bound_claim(records: list[dict], keys: Sequence[str] = ("task", "direction")) -> Verdict:
    """Table 3's last row: cross-modal transfer of the full model stays below the labelled-modality bound (on the
    columns where both ran)."""
    means = _row_means([r for r in records if r["row"] in ("labeled modality", "full")
                        and r["task"] != "ave_avvp"], ("labeled modality", "full"), keys)
    return greater("cross-modal transfer stays below the labelled-modality upper bound", means["labeled modality"],
                   means["full"], names=("labelled", "cross-modal"))


def codebook_size_claim(records: list[dict], key: str = "codebook_size") -> Verdict:
    """Fig. 3: an intermediate codebook size works best (its accuracy, averaged over directions, beats both the
    smallest and the largest size)."""
    sizes = sorted({int(record_field(r, key)) for r in records})
    if len(sizes) < 3:
        return Verdict("an intermediate codebook size works best (Fig. 3)", INCONCLUSIVE,
                       f"only {len(sizes)} sizes ran ({sizes})", "needs >= 3 sizes")
    per_size = {L: by_pretrain_seed(records, **{key: L}) for L in sizes}
    best = max(sizes[1:-1], key=lambda L: np.mean(list(per_size[L].values())))
    parts = [greater(f"L={best} vs L={end}", per_size[best], per_size[end], names=(f"L={best}", f"L={end}"))
             for end in (sizes[0], sizes[-1])]
    return all_of(f"an intermediate codebook size works best (Fig. 3; best intermediate L = {best})", parts,
                  "comparisons with the extreme sizes")


def method_gap_claims(records: list[dict], directions: Sequence[str], measure: str | None, claim: str,
                      margin: float = 0.0) -> list[Verdict]:
    """Per direction, ``claim.format(d=direction)``: Uni-Code beats the baseline on ``measure`` by ``margin``."""
    where = {} if measure is None else {"measure": measure}
    return [greater(claim.format(d=d), by_pretrain_seed(records, method="unicode", direction=d, **where),
                    by_pretrain_seed(records, method="baseline", direction=d, **where), margin,
                    names=("Uni-Code", "baseline")) for d in directions]


def code_sharing_claims(shared: Mapping[str, Mapping[int, float]], almost_all: float = 0.9) -> list[Verdict]:
    """Fig. 4: per method and pre-training seed, the fraction of used codes that both modalities share."""
    pct = {m: {s: 100 * v for s, v in d.items()} for m, d in shared.items()}
    out = []
    if {"baseline", "unicode"} <= set(pct):
        out.append(greater("Uni-Code maps audio and video to shared codes far more than the baseline (Fig. 4a vs c)",
                           pct["unicode"], pct["baseline"], FAR_POINTS, names=("Uni-Code", "baseline")))
    if {"cmcm", "unicode"} <= set(pct):
        out.append(greater("Uni-Code has more shared codes than CMCM (Fig. 4b vs c)", pct["unicode"], pct["cmcm"],
                           names=("Uni-Code", "CMCM")))
    if "unicode" in pct:
        out.append(exceeds("almost all of Uni-Code's used codes are used by both modalities", pct["unicode"],
                           100 * almost_all, what="shared codes", unit=" %"))
    return out


def same_code_claims(agreement: Mapping[str, Mapping[int, Mapping[str, float]]]) -> list[Verdict]:
    """The paper's central property per method (``agreement[method][seed]``: ``usage.aligned_code_agreement`` on
    aligned segments, fractions ``same_code`` and its ``chance``): Uni-Code above the baseline, and above the rate of
    independent code choices (a reference the data defines, per seed)."""
    pct = {m: {s: 100 * a["same_code"] for s, a in d.items()} for m, d in agreement.items()}
    out = []
    if {"baseline", "unicode"} <= set(pct):
        out.append(greater("Uni-Code gives audio and video the same code on aligned segments more often than the "
                           "baseline", pct["unicode"], pct["baseline"], names=("Uni-Code", "baseline")))
    if "unicode" in pct:
        chance = {s: 100 * a["chance"] for s, a in agreement["unicode"].items()}
        out.append(greater("Uni-Code gives audio and video the same code on aligned segments beyond chance",
                           pct["unicode"], chance, names=("Uni-Code", "independent choices")))
    return out


def codebook_claims(used: Mapping[int, Mapping[str, int]], shared: Mapping[int, Mapping[str, float]],
                    codebook_size: int, pair: tuple[str, str] = ("video", "audio")) -> list[Verdict]:
    """Notebook 02: per pre-training seed, codes used per modality (``used[seed][modality]``) and the Fig. 4
    category shares (``shared[seed]``, from ``usage.category_fractions``)."""
    floor = 0.1 * codebook_size
    least = {s: float(min(u.values())) for s, u in used.items()}
    margin = {s: 100 * (f["shared"] - max(f[pair[0]], f[pair[1]])) for s, f in shared.items()}
    return [exceeds("the codebook does not collapse to a few codes (Sec. 4.3, code reset)", least, floor,
                    what=f"codes used by the least-using modality (of {codebook_size})"),
            exceeds(f"{pair[1]} and {pair[0]} are mapped to common codes (Sec. 4.3, MM-EMA)", margin, 0.0,
                    what="shared minus the larger single-modality share", unit=" points")]
