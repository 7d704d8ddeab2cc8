"""References that survive edits: every row of book/differences.md has a named anchor, every citation
``book/differences.md#<name>`` in the repository names one, and no citation counts rows."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIFFERENCES = ROOT / "book" / "differences.md"
CITED_IN = ("cmg_lib", "tests", "tools", "benchmarks", "notebooks", "docs", "book")
CITATION = re.compile(r"differences\.md#([a-z0-9-]+)((?:, #[a-z0-9-]+)*(?: (?:and|to) #[a-z0-9-]+)?)")


def _anchors() -> set[str]:
    text = DIFFERENCES.read_text()
    return set(re.findall(r'<span id="([a-z0-9-]+)"></span>', text)) | set(re.findall(r"^\(([a-z0-9-]+)\)=$", text,
                                                                                         flags=re.M))


def _sources() -> list[Path]:
    files = [ROOT / "README.md"] + [p for d in CITED_IN for p in (ROOT / d).rglob("*")
                                    if p.suffix in (".py", ".md", ".ipynb") and "executed" not in p.parts
                                    and "generated" not in p.parts]
    return [p for p in files if p.is_file()]


def test_every_table_row_of_the_differences_page_has_a_named_anchor():
    rows = [line for line in DIFFERENCES.read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| topic", "| defect"))]
    assert len(rows) >= 29
    unnamed = [row[:60] for row in rows if not re.match(r'^\| <span id="[a-z0-9-]+"></span>', row)]
    assert not unnamed, f"rows without an anchor: {unnamed}"
    names = re.findall(r'<span id="([a-z0-9-]+)"></span>', DIFFERENCES.read_text())
    assert len(names) == len(set(names)) == len(rows)


def test_every_citation_names_an_anchor_and_none_counts_rows():
    anchors = _anchors()
    cited: dict[str, set[str]] = {}
    counted = []
    for path in _sources():
        text = path.read_text()
        for first, more in CITATION.findall(text):
            for name in [first, *re.findall(r"#([a-z0-9-]+)", more)]:
                cited.setdefault(name, set()).add(str(path.relative_to(ROOT)))
        counted += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r"differences(?:\.md|`)?,? rows? \d+", text)]
    assert len(cited) >= 20                                 # the citations are found at all
    missing = {name: sorted(where) for name, where in cited.items() if name not in anchors}
    assert not missing, f"citations of anchors that book/differences.md does not have: {missing}"
    assert not counted, f"citations by row number: {counted}"
