"""Build the cmg-book: embedded data, executed notebooks, then a strict Jupyter Book (1.x) HTML build.

``make book SCALE=S`` runs ``python tools/build_book.py --scale S``, which does, in order:

1. ``python -m cmg_lib data build --scale S`` (the AV-Digits dataset, built once and cached by the data package);
2. vendors the ipywidgets browser code (``@jupyter-widgets/html-manager`` and ``requirejs``, via ``npm pack``) into
   the git-ignored ``widgets_static/`` folder, so widget pages work offline and behind a CSP (``_config.yml`` points
   myst-nb's ``nb_ipywidgets_js`` at it; a root ``_static/`` is avoided because jupyter-book 1.x injects every
   ``.js`` file found there into every page);
3. executes every notebook that ``_toc.yml`` lists as ``book/executed/<name>`` from ``notebooks/<name>.ipynb`` with
   papermill (kernel ``python3``; parameters ``scale``, ``data``, ``seeds``, ``device``, ``cache_dir``), into
   ``book/executed/`` (Sphinx always excludes ``_build/``, so executed notebooks cannot live there);
4. prints the time each notebook took;
5. ``jupyter-book build . -W -n --keep-going`` with execution off (``_config.yml``): any warning fails the build.

A failing notebook stops the build with a message naming the notebook and the cell; the partially executed copy
(with the traceback in place) is left in ``book/executed/`` for inspection.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXECUTED_DIR = ROOT / "book" / "executed"
WIDGETS_DIR = ROOT / "widgets_static" / "widgets"
# Browser side of ipywidgets 8 in static pages (myst-nb's default URLs point at these versions on a CDN).
NPM_PACKAGES = {"html-manager": "@jupyter-widgets/html-manager@1.0.6", "requirejs": "requirejs@2.3.7"}
SCALES = ("smoke", "default", "full")


class BuildError(RuntimeError):
    """A build step failed; the message says which and what to do."""


def toc_notebooks(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """Names of the executed notebooks the table of contents lists (``book/executed/<name>``), in book order."""
    names = re.findall(r"file:\s*book/executed/([\w.-]+?)(?:\.ipynb)?\s*$", toc_path.read_text(), flags=re.M)
    for name in names:
        if not (NOTEBOOK_DIR / f"{name}.ipynb").exists():
            raise BuildError(f"_toc.yml lists book/executed/{name} but notebooks/{name}.ipynb does not exist")
    return names


def toc_documents(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """Every non-notebook document (``root`` and ``file`` entries) that ``_toc.yml`` names."""
    entries = re.findall(r"(?:root|file):\s*([\w./-]+)\s*$", toc_path.read_text(), flags=re.M)
    return [e for e in entries if not e.startswith("book/executed/")]


def build_data(scale: str) -> None:
    """Build (or reuse) the embedded AV-Digits dataset at ``scale`` through the library's CLI."""
    cmd = [sys.executable, "-m", "cmg_lib", "data", "build", "--scale", scale]
    print(f"[book] data: {' '.join(cmd[1:])}", flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise BuildError(f"building the AV-Digits dataset failed: `python -m cmg_lib data build --scale {scale}`")


def vendor_widget_js(target: Path = WIDGETS_DIR) -> Path:
    """Put ``embed-amd.js`` (+ its chunks) and ``require.js`` into ``target`` with ``npm pack``; skip if present.

    Source maps (``*.map``) are left out; they only help debugging and double the size.
    """
    if (target / "embed-amd.js").exists() and (target / "require.js").exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError("npm was not found on PATH; it is needed once to vendor the ipywidgets browser code "
                         f"({', '.join(NPM_PACKAGES.values())}) into widgets_static/. Install Node.js/npm "
                         "(e.g. `apt-get install npm`) and run `make book` again.")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cmg-npm-") as tmp:
        tmp = Path(tmp)
        for name, spec in NPM_PACKAGES.items():
            print(f"[book] npm pack {spec}", flush=True)
            run = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True)
            tarballs = list(tmp.glob("*.tgz"))
            if run.returncode != 0 or not tarballs:
                raise BuildError(f"`npm pack {spec}` failed (is the npm registry reachable?):\n{run.stderr.strip()}")
            unpack = tmp / name
            with tarfile.open(tarballs[0]) as tar:
                tar.extractall(unpack, filter="data")
            tarballs[0].unlink()
            if name == "html-manager":
                for f in (unpack / "package" / "dist").iterdir():
                    if f.is_file() and not f.name.endswith(".map"):
                        shutil.copy2(f, target / f.name)
            else:
                shutil.copy2(unpack / "package" / "require.js", target / "require.js")
    if not (target / "embed-amd.js").exists():
        raise BuildError(f"{NPM_PACKAGES['html-manager']} did not contain dist/embed-amd.js")
    return target


def notebook_parameters(scale: str, seeds: list[int] | None, device: str, cache_dir: str) -> dict:
    """The papermill parameters every notebook's ``parameters`` cell declares."""
    return {"scale": scale, "data": "avdigits", "seeds": seeds, "device": device, "cache_dir": cache_dir}


def execute_notebooks(names: list[str], parameters: dict, timeout: int | None = None) -> list[tuple[str, float]]:
    """Run each notebook with papermill into ``book/executed/``; return ``(name, seconds)`` per notebook.

    Raises BuildError naming the notebook and cell on the first failure.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    times = []
    for name in names:
        src, dst = NOTEBOOK_DIR / f"{name}.ipynb", EXECUTED_DIR / f"{name}.ipynb"
        print(f"[book] executing notebooks/{name}.ipynb", flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name="python3",
                                progress_bar=False, cwd=str(NOTEBOOK_DIR), execution_timeout=timeout,
                                log_output=False, record_timing=False)
        except PapermillExecutionError as err:
            raise BuildError(f"notebook notebooks/{name}.ipynb failed in cell {err.cell_index + 1} "
                             f"(execution count [{err.exec_count}] of book/executed/{name}.ipynb, which counts the "
                             f"injected parameters cell): {err.ename}: {err.evalue}\n"
                             f"cell source:\n{_indent(err.source)}\n"
                             f"the partially executed notebook is book/executed/{name}.ipynb") from None
        except Exception as err:  # kernel death, missing kernelspec, timeouts
            raise BuildError(f"notebook notebooks/{name}.ipynb could not be executed: "
                             f"{type(err).__name__}: {err}") from None
        times.append((name, time.perf_counter() - start))
    return times


def jupyter_book_build(strict: bool = True) -> None:
    """``jupyter-book build .`` (strict: ``-W -n --keep-going``) with the same interpreter as this script."""
    missing = [d for d in toc_documents() if not any((ROOT / f"{d}{ext}").exists() for ext in ("", ".md", ".ipynb"))]
    if missing:
        raise BuildError(f"_toc.yml names documents that do not exist: {missing}")
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(ROOT)] + (["-W", "-n", "--keep-going"] if strict else [])
    print("[book] jupyter-book build . " + " ".join(cmd[5:]), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise BuildError("jupyter-book build failed (warnings count as errors); see the messages above")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds expects comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default", choices=SCALES, help="dataset and compute scale")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the scale's budget)")
    parser.add_argument("--device", default="cpu", help="torch device for the notebooks (cpu, cuda, cuda:1)")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="execute only this notebook (repeatable); the others keep their last executed copy")
    parser.add_argument("--skip-data", action="store_true", help="do not (re)build the dataset")
    parser.add_argument("--skip-execute", action="store_true", help="use the notebooks already in book/executed")
    parser.add_argument("--no-strict", action="store_true", help="let warnings pass (local previews only)")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell time limit in seconds")
    args = parser.parse_args(argv)

    cache_dir = os.environ.get("CMG_CACHE", str(ROOT / ".cache"))
    os.environ["CMG_CACHE"] = cache_dir
    os.environ.setdefault("PYTHONHASHSEED", "0")
    start = time.perf_counter()
    try:
        names = toc_notebooks()
        if args.only:
            unknown = sorted(set(args.only) - set(names))
            if unknown:
                raise BuildError(f"--only {unknown}: not listed in _toc.yml; listed are {names}")
        if not args.skip_data:
            build_data(args.scale)
        vendor_widget_js()
        times = []
        if not args.skip_execute:
            params = notebook_parameters(args.scale, _seeds(args.seeds), args.device, cache_dir)
            print(f"[book] notebook parameters: {json.dumps(params)}", flush=True)
            times = execute_notebooks(args.only or names, params, args.timeout)
        absent = [n for n in names if not (EXECUTED_DIR / f"{n}.ipynb").exists()]
        if absent:
            raise BuildError(f"no executed copy of {absent} in book/executed/; run without --skip-execute/--only")
        if times:
            print("[book] notebook execution times:")
            for name, sec in times:
                print(f"    {name:<28s} {sec:7.1f} s")
            print(f"    {'total':<28s} {sum(s for _, s in times):7.1f} s", flush=True)
        jupyter_book_build(strict=not args.no_strict)
    except BuildError as err:
        print(f"[book] ERROR: {err}", file=sys.stderr)
        return 1
    print(f"[book] done in {time.perf_counter() - start:.0f} s: {ROOT / '_build' / 'html' / 'index.html'} "
          "(serve over http: `make serve`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
