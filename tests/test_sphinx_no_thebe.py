"""tools/sphinx_no_thebe.py removes every sphinx_thebe handler and asset from a Sphinx application."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sphinx_no_thebe  # noqa: E402


def test_disconnects_thebe_and_keeps_the_rest(tmp_path):
    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("extensions = ['sphinx_thebe']\n")
    (src / "index.rst").write_text("Title\n=====\n")
    app = Sphinx(str(src), str(src), str(tmp_path / "out"), str(tmp_path / "doctrees"), "html", status=None,
                 warning=None)
    thebe = [l for ls in app.events.listeners.values() for l in ls if sphinx_no_thebe._is_thebe(l.handler)]
    assert len(thebe) >= 3
    others = sum(len(ls) for ls in app.events.listeners.values()) - len(thebe)
    assert sphinx_no_thebe.disconnect_thebe(app) == len(thebe)
    assert sum(len(ls) for ls in app.events.listeners.values()) == others
    assert not any(f == "sphinx-thebe.css" for f, _ in app.registry.css_files)
    context = {"css_files": ["basic.css", "_static/sphinx-thebe.css"], "script_files": ["sphinx-thebe.js", "doctools.js"]}
    scripts = context["script_files"]
    sphinx_no_thebe.drop_thebe_assets(app, "index", "page.html", context, None)
    assert context == {"css_files": ["basic.css"], "script_files": ["doctools.js"]}
    assert context["script_files"] is scripts          # the same list: later handlers still add to the page
