"""Sphinx extension: switch thebe off in the built book.

jupyter-book 1.x always loads ``sphinx_thebe``, which writes its configuration (``const THEBE_JS_URL = ...``) into
every page, twice, so every page logs ``Identifier 'THEBE_JS_URL' has already been declared``; it also adds a
thebe config block, its CSS and JS, and a CDN URL. The book has no launch button, so this extension disconnects
all of sphinx_thebe's event handlers and drops its CSS and JS (listed in ``_config.yml``'s ``local_extensions``).
"""
from __future__ import annotations

THEBE_MODULE = "sphinx_thebe"
THEBE_ASSETS = ("sphinx-thebe.css", "sphinx-thebe.js")


def _is_thebe(handler) -> bool:
    return getattr(handler, "__module__", "").split(".")[0] == THEBE_MODULE


def disconnect_thebe(app) -> int:
    """Disconnect every sphinx_thebe event handler from ``app`` and drop its assets; returns the handlers removed."""
    removed = 0
    for listeners in list(app.events.listeners.values()):
        for listener in list(listeners):
            if _is_thebe(listener.handler):
                app.disconnect(listener.id)
                removed += 1
    app.registry.css_files = [(f, a) for f, a in app.registry.css_files if f not in THEBE_ASSETS]
    app.registry.js_files = [(f, a) for f, a in app.registry.js_files if f not in THEBE_ASSETS]
    return removed


def drop_thebe_assets(app, pagename, templatename, context, doctree) -> None:
    """``html-page-context`` handler: the HTML builder copied thebe's CSS before the extension could remove it."""
    for key in ("css_files", "script_files"):
        if key in context:
            # in place: later handlers (sphinx.ext.mathjax) append to this same list
            context[key][:] = [f for f in context[key] if _basename(getattr(f, "filename", f)) not in THEBE_ASSETS]


def _basename(filename) -> str:
    return str(filename).rsplit("/", 1)[-1]


def setup(app):
    # local extensions are set up after jupyter-book's own, so sphinx_thebe's handlers are connected by now
    app.connect("builder-inited", disconnect_thebe, priority=0)
    # early: the event stops at the first handler that returns a template name
    app.connect("html-page-context", drop_thebe_assets, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
