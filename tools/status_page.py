"""The book's reproducibility status page, written by tools/build_book.py at every build.

Per executed notebook: its run time, scale, seeds and pre-training steps (from the budget table), when and from
which commit it ran and on what machine (CPU model, cores, measured float32 GEMM rate, torch). Run facts come from
the executed notebook itself: papermill's ``metadata.papermill`` (parameters, duration) and the ``metadata.cmg_run``
block that build_book.py adds right after executing it, so a notebook kept from an earlier build (``--only``,
``--skip-execute``) shows that earlier build's facts.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

RUN_KEY = "cmg_run"           # notebook metadata block written by build_book.record_run
NOT_RECORDED = "not recorded"


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


def notebook_run(path: str | Path, budget) -> dict:
    """The run facts of one executed notebook; ``budget(scale)`` gives the scale's typed ``Budget``
    (``cmg_lib.experiments.budgets.budget``): its head seeds and steps."""
    path = Path(path)
    nb = json.loads(path.read_text())
    meta = nb.get("metadata", {})
    pm = meta.get("papermill", {})
    params = pm.get("parameters", {}) or {}
    run = meta.get(RUN_KEY, {})
    scale = params.get("scale")
    b = budget(scale) if scale else None
    seeds = params.get("seeds") or (b.seeds if b is not None else None)
    return {"name": path.stem, "title": _title(nb.get("cells", [])) or path.stem, "scale": scale,
            "seeds": list(seeds) if seeds else None, "pretrain_steps": b.pretrain_steps if b is not None else None,
            "seconds": pm.get("duration"), "executed": run.get("executed") or pm.get("end_time"),
            "commit": run.get("commit"), "machine": run.get("machine"), "device": params.get("device")}


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
              "| chapter | scale | seeds | pre-training steps | device | run time | executed | commit | machine |",
              "|---|---|---|---|---|---|---|---|---|"]
    machines: list[str] = []
    for r in runs:
        m = machine_line(r.get("machine"))
        if m != NOT_RECORDED and m not in machines:
            machines.append(m)
        mid = f"M{machines.index(m) + 1}" if m in machines else NOT_RECORDED
        seeds = ", ".join(str(s) for s in r["seeds"]) if r.get("seeds") else None
        executed = (r.get("executed") or "")[:16].replace("T", " ") or None
        lines.append(f"| {{doc}}`{_cell(r['title'])} <../executed/{r['name']}>` | {_cell(r.get('scale'))} | "
                     f"{_cell(seeds)} | {_cell(r.get('pretrain_steps'))} | {_cell(r.get('device'))} | "
                     f"{_minutes(r.get('seconds'))} | {_cell(executed)} | {_cell(r.get('commit'))} | {mid} |")
    lines += ["", "Seeds are the downstream-head seeds of the scale's budget (`cmg_lib.experiments.budgets.BUDGETS`) "
              "unless the build passed `--seeds`; the segmentation chapter uses the budget's own AVS seeds.", "",
              "## Machines", ""]
    lines += [f"- M{i + 1}: {m}" for i, m in enumerate(machines)] or ["- none recorded"]
    if timings_include:
        lines += ["", f"```{{include}} {timings_include}", "```"]
    return "\n".join(lines) + "\n"
