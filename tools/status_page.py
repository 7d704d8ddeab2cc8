"""The book's reproducibility status page, written by tools/build_book.py at every build.

Per executed notebook: its run time, scale, the updates and the pre-training and head seeds its verdicts rest on,
when and from which commit it ran and on what machine (CPU model, cores, measured float32 GEMM rate, torch). Run
facts come from the executed notebook itself: papermill's ``metadata.papermill`` (parameters, duration), the
``metadata.cmg_run`` block that build_book.py adds right after executing it, and the verdict records its verdict
cells displayed (``cmg_lib.experiments.claims.show``, read by ``claims.records_in``: the scope lines' updates and
seeds), so a notebook kept from an earlier build (``--only``, ``--skip-execute``) shows that earlier build's facts.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from cmg_lib.experiments.claims import records_in

RUN_KEY = "cmg_run"           # notebook metadata block written by build_book.record_run
NOT_RECORDED = "not recorded"
NO_VERDICTS = "no verdicts"   # a chapter that shows none trains nothing the status page could state
FULL_ONLY = "at scale full only"   # a chapter the build's scale leaves to scale full (Budget.full_only)
SEPARATOR = " / "             # between a chapter's different scope lines' updates, in page order


def machine_line(machine: Mapping | None) -> str:
    """``"<CPU>, N cores, G GFLOP/s float32 GEMM, torch V"`` (or ``"not recorded"``)."""
    if not machine:
        return NOT_RECORDED
    parts = [str(machine.get("cpu", "unknown CPU")), f"{machine.get('cores', '?')} cores"]
    if machine.get("gemm_gflops") is not None:
        parts.append(f"{machine['gemm_gflops']:.0f} GFLOP/s float32 GEMM")
    if machine.get("cuda"):
        parts.append(str(machine["cuda"]))
    parts.append(f"torch {machine.get('torch', '?')}")
    return ", ".join(parts)


def _title(cells: Sequence[Mapping]) -> str | None:
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", ""))
            for line in src.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return None


def notebook_run(path: str | Path) -> dict:
    """The run facts of one executed notebook, with its verdict ``records`` (``claims.records_in``)."""
    path = Path(path)
    nb = json.loads(path.read_text())
    meta = nb.get("metadata", {})
    pm = meta.get("papermill", {})
    params = pm.get("parameters", {}) or {}
    run = meta.get(RUN_KEY, {})
    return {"name": path.stem, "title": _title(nb.get("cells", [])) or path.stem, "scale": params.get("scale"),
            "records": records_in(nb), "seconds": pm.get("duration"),
            "executed": run.get("executed") or pm.get("end_time"), "commit": run.get("commit"),
            "machine": run.get("machine"), "device": params.get("device"), "full_only": bool(run.get("full_only"))}


def trained(run: Mapping) -> dict[str, str]:
    """What a chapter's verdicts rest on, from its records' scopes: ``updates`` (each scope line's, in page order,
    repeats dropped, joined by :data:`SEPARATOR`), ``pretrain_seeds`` and ``head_seeds`` (all, sorted);
    :data:`FULL_ONLY` for a chapter the build's scale left to scale full."""
    if run.get("full_only"):
        return {"updates": FULL_ONLY, "pretrain_seeds": "–", "head_seeds": "–"}
    scopes = [r["scope"] for r in run.get("records", [])]
    if not scopes:
        return {"updates": NO_VERDICTS, "pretrain_seeds": "–", "head_seeds": "–"}

    def seeds(key: str) -> str:
        return ", ".join(str(s) for s in sorted({s for sc in scopes for s in sc[key]}))

    return {"updates": SEPARATOR.join(dict.fromkeys(sc["updates"] for sc in scopes)),
            "pretrain_seeds": seeds("pretrain_seeds"), "head_seeds": seeds("head_seeds")}


def _cell(value) -> str:
    return NOT_RECORDED if value in (None, "", []) else str(value).replace("|", "\\|")


def _minutes(seconds) -> str:
    if seconds is None:
        return NOT_RECORDED
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render(runs: Sequence[Mapping], build: Mapping, timings_include: str | None = None) -> str:
    """The page as MyST markdown: this build's facts, one row per notebook, the machines, then hand measurements.

    ``build`` has ``date``, ``commit``, ``scale``, ``machine``, ``data_seconds`` (or None); ``timings_include`` is
    a path (relative to the page) of hand-measured timings to include at the end.
    """
    lines = ["# Reproducibility status", "",
             "Written by `tools/build_book.py` at every build: what each chapter was run with, on which machine, and "
             "how long it took. Times on other machines scale roughly with the float32 GEMM rate.", "",
             "## This build", "",
             f"- built {build['date']} from commit `{build['commit']}`, `make book SCALE={build['scale']}`",
             f"- machine: {machine_line(build.get('machine'))}; Python {build.get('machine', {}).get('python', '?')}"]
    if build.get("data_seconds") is not None:
        lines.append(f"- dataset build: {_minutes(build['data_seconds'])}")
    known = [r["seconds"] for r in runs if r.get("seconds") is not None]
    if known:
        lines.append(f"- notebooks: {_minutes(sum(known))} in all")
    lines += ["", "## Chapters", "",
              "| chapter | scale | updates | pre-training seeds | head seeds | device | run time | executed | commit | "
              "machine |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    machines: list[str] = []
    for r in runs:
        m = machine_line(r.get("machine"))
        if m != NOT_RECORDED and m not in machines:
            machines.append(m)
        mid = f"M{machines.index(m) + 1}" if m in machines else NOT_RECORDED
        t = trained(r)
        executed = (r.get("executed") or "")[:16].replace("T", " ") or None
        lines.append(f"| {{doc}}`{_cell(r['title'])} <../executed/{r['name']}>` | {_cell(r.get('scale'))} | "
                     f"{_cell(t['updates'])} | {_cell(t['pretrain_seeds'])} | {_cell(t['head_seeds'])} | "
                     f"{_cell(r.get('device'))} | {_minutes(r.get('seconds'))} | {_cell(executed)} | "
                     f"{_cell(r.get('commit'))} | {mid} |")
    lines += ["", "Updates and seeds are what each chapter's verdicts rest on, as its scope lines print them (the "
              "verdict records the executed chapter displayed); a chapter whose verdict lists ran different lengths "
              f"lists each, in page order, separated by \"{SEPARATOR.strip()}\". {NO_VERDICTS.capitalize()}: the "
              f"chapter judges no claim; {FULL_ONLY}: the build's scale leaves the chapter to scale full. The full "
              "list of verdicts is on {doc}`claims`.", "",
              "## Machines", ""]
    lines += [f"- M{i + 1}: {m}" for i, m in enumerate(machines)] or ["- none recorded"]
    if timings_include:
        lines += ["", f"```{{include}} {timings_include}", "```"]
    return "\n".join(lines) + "\n"
