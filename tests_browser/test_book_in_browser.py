"""The built book in a real browser (headless Chromium over http on 127.0.0.1, no network): equations render, the
explorer's controls switch its view, no page logs an error or asks for anything off the machine, no page shows a
local path; the "Claims at a glance" page lists every verdict the chapters print, the status page states the
updates the chapters' scope lines print, and no code cell, printed output or table runs past its column. Run with
``make browser-test`` after ``make book SCALE=smoke``."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

LOCAL_PATH = re.compile(r"(?<![\w.])/(?:tmp|work|root|home)/")
METHOD = "book/method.html"
EXPLORER = "book/executed/explorer_demo.html"
TABLE1 = "book/executed/03_table1_methods.html"
CLAIMS = "book/generated/claims.html"
STATUS = "book/generated/reproducibility.html"
OUTCOMES = ("holds", "does not hold", "inconclusive")
SCOPE_UPDATES = re.compile(r"pre-training updates (.*?); pre-training seeds")
# the chapters whose full pages are photographed for the reader's eye (the list)
PHOTOGRAPHED = {"01_why_released_recipe": "why_chapter.png", "07_fig4_code_maps": "fig4.png"}


def _pages(book: Path) -> list[str]:
    return sorted(str(p.relative_to(book)) for p in book.rglob("*.html") if "_static" not in p.parts)


def _chapters(book: Path) -> list[str]:
    """The executed chapters' names (``book/executed/<name>.html``)."""
    return sorted(p.stem for p in (book / "book" / "executed").glob("*.html"))


def _verdict_lists(page) -> list[dict]:
    """Every verdict list a chapter page prints: its scope line and its items' claim and verdict word."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('article p'))
        .filter(p => p.textContent.startsWith('Verdicts at scale'))
        .map(p => ({scope: p.textContent.replace(/\\s+/g, ' '),
                    items: Array.from(p.nextElementSibling && p.nextElementSibling.tagName === 'UL'
                                      ? p.nextElementSibling.children : [])
                        .map(li => ({text: li.textContent.replace(/\\s+/g, ' ').trim(),
                                     verdict: (li.querySelector('strong') || {}).textContent}))}))""")


def _table_rows(page) -> list[dict]:
    """The rows of a page's first table: each cell's text, and the link targets of each cell."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('article table')[0].querySelectorAll('tbody tr'))
        .map(tr => Array.from(tr.children).map(td => ({text: td.textContent.replace(/\\s+/g, ' ').trim(),
            links: Array.from(td.querySelectorAll('a')).map(a => a.getAttribute('href'))})))""")


def _chapter_of(cell) -> str:
    """The chapter a table cell links to (``.../executed/<name>.html``)."""
    names = {re.search(r"executed/([\w.-]+)\.html", href).group(1) for href in cell["links"]
             if re.search(r"executed/([\w.-]+)\.html", href)}
    assert len(names) == 1, f"expected one chapter link in {cell}"
    return names.pop()


def _wait_for_mathjax(page):
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000)
    page.evaluate("() => MathJax.startup.promise")


def test_equations_render_offline(server, open_page, shots):
    page, log = open_page(f"{server}/{METHOD}")
    _wait_for_mathjax(page)
    rendered = page.locator("mjx-container").count()
    assert rendered >= 30, f"only {rendered} MathJax output elements on the method page"
    text = page.locator("article").inner_text()
    for raw in ("\\[", "\\]", "$$"):
        assert raw not in text, f"raw LaTeX {raw!r} left in the method page's text"
    page.screenshot(path=str(shots / "method.png"), full_page=False)
    assert not log.external and not log.errors and not log.failed, (log.external, log.errors, log.failed)


def _shown_view(page) -> str:
    """The src of the explorer image the reader sees (hidden Stack children have no layout box)."""
    srcs = page.evaluate("""() => Array.from(document.querySelectorAll('.widget-stack img, .widget-box img'))
        .filter(i => i.offsetParent !== null && i.getBoundingClientRect().height > 0).map(i => i.src)""")
    assert len(srcs) == 1, f"expected one visible explorer view, found {len(srcs)}"
    return srcs[0]


def test_explorer_controls_change_the_view(server, open_page, shots):
    page, log = open_page(f"{server}/{EXPLORER}")
    page.wait_for_selector(".widget-dropdown select", timeout=20000)
    explorer = page.locator(".widget-vbox").first
    explorer.scroll_into_view_if_needed()
    before = _shown_view(page)
    explorer.screenshot(path=str(shots / "explorer_before.png"))
    method = page.locator(".widget-dropdown select").first
    method.select_option(index=1)
    page.wait_for_function("(before) => Array.from(document.querySelectorAll('.widget-stack img, .widget-box img'))"
                           ".some(i => i.offsetParent !== null && i.src !== before)", arg=before, timeout=10000)
    after_method = _shown_view(page)
    assert after_method != before
    handle = page.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    page.wait_for_timeout(300)
    after_step = _shown_view(page)
    assert after_step != after_method, "moving the step slider did not change the view"
    explorer.screenshot(path=str(shots / "explorer_after.png"))
    fallback = page.locator(".cmg-explorer-fallback")
    assert fallback.count() == 1 and not fallback.is_visible(), "the file:// fallback must be hidden over http"
    assert not log.external and not log.errors and not log.failed, (log.external, log.errors, log.failed)


def test_explorer_opened_as_file_shows_a_static_view_and_hint(book, open_page):
    page, _ = open_page((book / EXPLORER).resolve().as_uri())
    fallback = page.locator(".cmg-explorer-fallback")
    assert fallback.is_visible()
    assert "make serve" in fallback.inner_text()
    assert fallback.locator("img").evaluate("i => i.naturalWidth") > 100


def test_table1_page(server, open_page, shots):
    page, log = open_page(f"{server}/{TABLE1}")
    page.screenshot(path=str(shots / "table1.png"), full_page=True)
    assert not log.external and not log.errors and not log.failed, (log.external, log.errors, log.failed)


def test_every_page_loads_without_errors_or_external_requests(book, server, open_page):
    problems = {}
    for rel in _pages(book):
        page, log = open_page(f"{server}/{rel}")
        if page.locator("div.math, span.math").count():
            _wait_for_mathjax(page)
        page.wait_for_timeout(200)
        found = log.errors + [f"off-machine request {u}" for u in log.external] + log.failed
        if found:
            problems[rel] = found
        page.context.close()
    assert not problems, "\n".join(f"{p}: {v}" for p, v in problems.items())


@pytest.mark.parametrize("suffix", [".html", ".ipynb", ".md", ".txt", ".js"])
def test_no_local_path_in_any_page(book, suffix):
    leaks = {}
    for path in book.rglob(f"*{suffix}"):
        if "_static" in path.parts and suffix == ".js":
            continue
        hits = LOCAL_PATH.findall(path.read_text(errors="replace"))
        if hits:
            leaks[str(path.relative_to(book))] = len(hits)
    assert not leaks, f"local paths (/tmp/, /work/, /root/, /home/) in: {leaks}"


def test_wide_markdown_tables_fit_the_text_column(server, open_page, shots):
    page, log = open_page(f"{server}/book/differences.html")
    _wait_for_mathjax(page)
    overflow = page.evaluate("""() => Array.from(document.querySelectorAll('article table')).map(t => {
        const box = t.closest('.pst-scrollable-table-container') || t.parentElement;
        return box.scrollWidth - box.clientWidth; })""")
    assert overflow and max(overflow) <= 1, f"tables overflow their column by {overflow} px (cut off behind a scrollbar)"
    page.screenshot(path=str(shots / "differences.png"), full_page=False)
    assert not log.external and not log.errors and not log.failed, (log.external, log.errors, log.failed)


def test_no_page_loads_thebe(book):
    loaded = [p for p in _pages(book) if "sphinx-thebe" in (book / p).read_text() or "THEBE_JS_URL" in (book / p).read_text()]
    assert not loaded, f"thebe is still wired into {loaded}"


@pytest.fixture(scope="module")
def chapter_verdicts(book, server, browser):
    """Per chapter, the verdict lists its page prints (read in the browser, as a reader sees them)."""
    context = browser.new_context()
    page = context.new_page()
    out = {}
    for name in _chapters(book):
        page.goto(f"{server}/book/executed/{name}.html", wait_until="load")
        out[name] = _verdict_lists(page)
    context.close()
    return out


@pytest.fixture(scope="module")
def left_to_full(book, server, browser):
    """The chapters whose page says the build's scale did not run them (``Budget.full_only``), as a reader sees it."""
    context = browser.new_context()
    page = context.new_page()
    out = set()
    for name in _chapters(book):
        page.goto(f"{server}/book/executed/{name}.html", wait_until="load")
        if "this chapter is not run" in page.evaluate("() => document.querySelector('article').textContent"):
            out.add(name)
    context.close()
    return out


def test_claims_page_has_one_row_per_verdict_the_chapters_print(server, open_page, shots, chapter_verdicts):
    page, log = open_page(f"{server}/{CLAIMS}")
    page.screenshot(path=str(shots / "claims.png"), full_page=True)
    rows = _table_rows(page)
    printed = [(name, item) for name, lists in chapter_verdicts.items() for vl in lists for item in vl["items"]]
    assert printed, "no chapter prints a verdict list"
    assert len(rows) == len(printed), f"{len(rows)} rows on the claims page, {len(printed)} verdicts in the chapters"
    listed = {}
    for row in rows:
        chapter, claim, verdict = _chapter_of(row[0]), row[1]["text"], row[2]["text"]
        assert verdict in OUTCOMES, f"row {claim!r} has no verdict word: {verdict!r}"
        listed.setdefault(chapter, []).append(f"{claim}: {verdict} (")
    for name, lists in chapter_verdicts.items():
        items = [i for vl in lists for i in vl["items"]]
        assert len(listed.get(name, [])) == len(items), f"{name}: {len(items)} verdicts, claims page lists " \
                                                         f"{len(listed.get(name, []))}"
        for head, item in zip(listed.get(name, []), items):
            assert item["verdict"] in OUTCOMES and item["text"].startswith(head), (name, head, item["text"])
    from cmg_lib.experiments.budgets import PUBLISHED_SCALE

    scales = {re.match(r"Verdicts at scale (\S+):", vl["scope"]).group(1) for lists in chapter_verdicts.values()
              for vl in lists}
    banner = page.locator(".cmg-scale-banner")     # a build off the published scale says so above the table
    assert banner.count() == len(scales - {PUBLISHED_SCALE}), (scales, banner.count())
    assert all(banner.nth(i).is_visible() for i in range(banner.count()))
    assert not log.external and not log.errors and not log.failed, (log.external, log.errors, log.failed)


def test_status_page_updates_are_each_chapters_scope_lines(server, open_page, chapter_verdicts, left_to_full):
    page, log = open_page(f"{server}/{STATUS}")
    rows = {_chapter_of(row[0]): row for row in _table_rows(page)}
    assert set(rows) == set(chapter_verdicts), "the status page lists other chapters than the book has"
    header = page.evaluate("() => Array.from(document.querySelectorAll('article table')[0].querySelectorAll('thead th'))"
                           ".map(th => th.textContent.trim())")
    column = {h: i for i, h in enumerate(header)}
    for name, lists in chapter_verdicts.items():
        updates = [SCOPE_UPDATES.search(vl["scope"]).group(1) for vl in lists]
        expected = (" / ".join(dict.fromkeys(updates)) if updates
                    else "at scale full only" if name in left_to_full else "no verdicts")
        assert rows[name][column["updates"]]["text"] == expected, (name, rows[name][column["updates"]]["text"])
        seeds = sorted({int(s) for vl in lists
                        for s in re.search(r"pre-training seeds \[([\d, ]*)\]", vl["scope"]).group(1).split(",")
                        if s.strip()})
        if seeds:
            assert rows[name][column["pre-training seeds"]]["text"] == ", ".join(map(str, seeds)), name
    assert not log.external and not log.errors and not log.failed, (log.external, log.errors, log.failed)


def test_no_code_cell_or_table_of_a_chapter_is_wider_than_its_column(book, server, open_page, shots):
    wide = {}
    for name in _chapters(book):
        page, _ = open_page(f"{server}/book/executed/{name}.html")
        if name in PHOTOGRAPHED:
            page.screenshot(path=str(shots / PHOTOGRAPHED[name]), full_page=True)
        overflow = page.evaluate("""() => Array.from(document.querySelectorAll(
                'article .cell_input pre, article .cell_output pre, article .cmg-tables'))
            .filter(box => box.offsetParent !== null)
            .map(box => [box.scrollWidth - box.clientWidth, box.textContent.trim().slice(0, 60)])
            .filter(([px, _]) => px > 1)""")
        if overflow:
            wide[name] = overflow
        page.context.close()
    assert not wide, f"code cells, outputs or tables wider than their column (px past the edge, start): {wide}"
