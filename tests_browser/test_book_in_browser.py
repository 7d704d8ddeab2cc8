"""The built book in a real browser (headless Chromium over http on 127.0.0.1, no network): equations render, the
explorer's controls switch its view, no page logs an error or asks for anything off the machine, no page shows a
local path. Run with ``make browser-test`` after ``make book SCALE=smoke``."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

LOCAL_PATH = re.compile(r"(?<![\w.])/(?:tmp|work|root|home)/")
METHOD = "book/method.html"
EXPLORER = "book/executed/explorer_demo.html"
TABLE1 = "book/executed/03_table1_methods.html"


def _pages(book: Path) -> list[str]:
    return sorted(str(p.relative_to(book)) for p in book.rglob("*.html") if "_static" not in p.parts)


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
