"""The book's "Claims at a glance" page, written by tools/build_book.py at every build.

One row per verdict the chapters display, in book order: its chapter (a link), the claim, the verdict word, the
numbers and interval it rests on, the runs behind it (scale, updates, pre-training and head seeds) and the paper's
section. Nothing on it is typed: every row comes from the verdict records that the executed notebooks displayed
beside their verdict lists (``cmg_lib.experiments.claims.show``; read back by ``claims.records_in`` into
``status_page.notebook_run``'s ``records``). A page built below the published scale carries that scale's banner.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from cmg_lib.experiments.claims import FAILS, HOLDS, INCONCLUSIVE

TITLE = "Claims at a glance"
OUTCOMES = (HOLDS, FAILS, INCONCLUSIVE)


def _cell(text) -> str:
    """Text safe inside a markdown table cell: no pipe, no raw HTML, no line break."""
    return " ".join(str(text).replace("|", "\\|").replace("<", "&lt;").split())


def _seeds(seeds: Iterable[int]) -> str:
    return ", ".join(str(s) for s in seeds) or "none"


def runs_text(scope: Mapping) -> str:
    """What a verdict's runs were, from its record's scope: scale, updates, pre-training seeds, head seeds."""
    return (f"scale {scope['scale']}; {scope['updates']} updates; pre-training seeds {_seeds(scope['pretrain_seeds'])}; "
            f"head seeds {_seeds(scope['head_seeds'])}")


def short_title(title: str, words: int = 4) -> str:
    """A chapter's name for a table cell: its title up to the first colon ("Table 1: Uni-Code against ..." ->
    "Table 1"); without one, its first ``words`` words ("Why the released recipe …")."""
    if ":" in title:
        return title.split(":", 1)[0].strip() or title
    parts = title.split()
    return title if len(parts) <= words else " ".join(parts[:words]) + " …"


def rows(runs: Sequence[Mapping]) -> list[dict]:
    """Every verdict of every chapter (``runs``: ``status_page.notebook_run`` dicts, in book order) with its
    chapter, scope and section."""
    out = []
    for run in runs:
        for record in run.get("records", []):
            for verdict in record["verdicts"]:
                out.append({"name": run["name"], "title": run["title"], "section": record["section"],
                            "scope": record["scope"], **verdict})
    return out


def render(runs: Sequence[Mapping], banner: Callable[[str], str] | None = None) -> str:
    """The page as MyST markdown; ``banner(scale)`` (``experiments.notebook.scale_banner``) gives the HTML notice
    of each scale the verdicts ran at (empty at the published scale)."""
    found = rows(runs)
    scales = list(dict.fromkeys(r["scope"]["scale"] for r in found))
    lines = [f"# {TITLE}", ""]
    notices = [banner(s) for s in scales] if banner else []
    lines += [n + "\n" for n in notices if n]
    lines += ["What the reproduction found: every verdict the chapters print, in book order, with the numbers it rests "
              "on. Written by `tools/build_book.py` at every build from the records the executed chapters displayed "
              "beside their verdicts; open a chapter for its tables, figures and the reasoning behind each claim.", ""]
    if not found:
        return "\n".join(lines + ["No chapter of this build displayed verdicts.", ""])
    count = {o: sum(r["outcome"] == o for r in found) for o in OUTCOMES}
    chapters = len({r["name"] for r in found})
    lines += [f"**{len(found)} verdicts** from {chapters} chapters: **{count[HOLDS]} hold**, **{count[FAILS]} do not "
              f"hold**, **{count[INCONCLUSIVE]} inconclusive**.", ""]
    spread = {r["scope"].get("spread") for r in found} - {None}
    least = {r["scope"].get("min_seeds") for r in found} - {None}
    rule = ("A claim **holds** when the whole 95 % interval over pre-training seeds lies past its threshold, **does "
            "not hold** when it lies on the other side, and is **inconclusive** otherwise")
    rule += f" or with fewer than {min(least)} pre-training seeds." if least else "."
    if spread:
        rule += f" Numbers are {'; '.join(sorted(spread))} (\"±\"), or a count of the parts that held."
    lines += [rule, "",
              "| chapter | claim | verdict | numbers | runs | paper section |",
              "|---|---|---|---|---|---|"]
    for r in found:
        lines.append(f"| {{doc}}`{_cell(short_title(r['title']))} <../executed/{r['name']}>` | {_cell(r['claim'])} | "
                     f"**{_cell(r['outcome'])}** | {_cell(r['evidence'])} | {_cell(runs_text(r['scope']))} | "
                     f"{_cell(r['section'])} |")
    return "\n".join(lines) + "\n"
