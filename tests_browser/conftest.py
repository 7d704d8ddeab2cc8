"""Fixtures of the real-browser test: the built book served on 127.0.0.1 and a headless system Chromium.

The book must already be built (``make book SCALE=smoke``); a missing build fails every test, it never skips.
``CMG_BOOK_HTML`` points at another build folder, ``CMG_CHROMIUM`` at another browser binary; screenshots go to
``CMG_SCREENSHOTS`` (default ``_build/browser``).
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("CMG_BOOK_HTML", ROOT / "_build" / "html"))
CHROMIUM = os.environ.get("CMG_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("CMG_SCREENSHOTS", ROOT / "_build" / "browser"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):       # keep pytest's output readable
        pass


@pytest.fixture(scope="session")
def book() -> Path:
    if not (BUILD / "index.html").exists():
        pytest.fail(f"no built book at {BUILD} (index.html missing): run `make book SCALE=smoke` first", pytrace=False)
    return BUILD


@pytest.fixture(scope="session")
def server(book):
    """Base URL of ``book`` served by a stdlib http.server on a free port of 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (or set CMG_CHROMIUM)", pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class PageLog:
    """What one page did: console errors, uncaught exceptions, failed and off-machine requests."""

    def __init__(self):
        self.errors: list[str] = []
        self.external: list[str] = []
        self.failed: list[str] = []


def _local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("data", "blob", "about", "file") or parsed.hostname == "127.0.0.1"


@pytest.fixture
def open_page(browser):
    """``open_page(url) -> (page, log)``: a fresh page whose requests off 127.0.0.1 are blocked and logged."""
    contexts = []

    def _open(url: str, width: int = 1280, height: int = 900):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        log = PageLog()

        def route(r):
            if _local(r.request.url):
                r.continue_()
            else:
                log.external.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: log.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: log.errors.append(f"exception: {e}"))
        page.on("response", lambda r: log.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(url, wait_until="load")
        return page, log

    yield _open
    for c in contexts:
        try:
            c.close()
        except Exception:       # already closed by the test
            pass


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
