"""The layer rule of docs/architecture.md, checked on the source: data -> model -> training -> downstream ->
experiments -> viz, and no module imports one to its right (lazy imports inside functions included). The
foundation (config, presets, storage, distributed, precision, hardware, the package root) imports no layer; cli is the
entry point above them all."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cmg_lib"
FOUNDATION = ("cmg_lib", "cmg_lib.config", "cmg_lib.presets", "cmg_lib.storage", "cmg_lib.distributed",
              "cmg_lib.precision", "cmg_lib.hardware")
LAYERS = {  # module (or package) -> rank, left to right
    "cmg_lib.data": 1,
    "cmg_lib.layers": 2, "cmg_lib.modalities": 2, "cmg_lib.codebook": 2, "cmg_lib.objectives": 2,
    "cmg_lib.usage": 2, "cmg_lib.step": 2, "cmg_lib.model": 2,
    "cmg_lib.checkpoint": 3, "cmg_lib.train": 3,
    "cmg_lib.downstream": 4,
    "cmg_lib.experiments": 5,
    "cmg_lib.viz": 6,
    "cmg_lib.cli": 7, "cmg_lib.__main__": 7,
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _rank(module: str) -> int:
    if module in FOUNDATION:
        return 0
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    raise KeyError(module)


def _imports(module: str, source: str | None = None) -> set[str]:
    """The cmg_lib modules that ``module`` (its file, or ``source``) imports anywhere (``from . import x`` counts as
    ``x``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
            found |= subs if len(subs) == len(node.names) else {target} | subs
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES and m != module}


def _to_the_right(module: str, source: str | None = None) -> list[str]:
    rank = _rank(module)
    return sorted(m for m in _imports(module, source) if _rank(m) > rank and not m.startswith(module + "."))


def test_every_module_has_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            _rank(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"place these modules in a layer of docs/architecture.md and of LAYERS here: {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_one_to_its_right(module):
    right = _to_the_right(module)
    assert not right, f"{module} (layer {_rank(module)}) imports {[(m, _rank(m)) for m in right]}"


def test_the_check_reports_imports_to_the_right_and_only_those():
    assert _to_the_right("cmg_lib.model", "def f():\n    from .train import pretrain\n") == ["cmg_lib.train"]
    assert _to_the_right("cmg_lib.config", "from .data import schema\n") == ["cmg_lib.data.schema"]
    assert _to_the_right("cmg_lib.experiments.runs", "from ..train import pretrain\nfrom ..config import X\n") == []
    assert _to_the_right("cmg_lib.data.schema", "import cmg_lib.viz.tables\n") == ["cmg_lib.viz.tables"]
