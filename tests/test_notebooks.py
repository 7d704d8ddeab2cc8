"""Every notebook is valid nbformat, runs on kernel python3 and has one papermill ``parameters`` cell declaring the
parameters tools/build_book.py injects. (Executing the notebooks is `make book`'s job, not the unit tests'.)"""
from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))
from build_book import notebook_parameters  # noqa: E402

BOOK_PARAMETERS = set(notebook_parameters("smoke", None, "cpu"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_valid_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert BOOK_PARAMETERS <= assigned, f"parameters cell lacks {BOOK_PARAMETERS - assigned}"
    for cell in nb.cells:                 # sources are clean: outputs only ever come from papermill
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            ast.parse(TransformerManager().transform_cell(cell.source))   # magics become plain Python


def test_toc_lists_only_existing_notebooks():
    toc = (ROOT / "_toc.yml").read_text()
    for name in re.findall(r"file:\s*book/executed/([\w.-]+)", toc):
        assert (ROOT / "notebooks" / f"{name}.ipynb").exists(), name


def test_notebook_numbers_follow_the_table_of_contents():
    from build_book import toc_notebooks

    numbered = [name for name in toc_notebooks() if re.match(r"\d\d_", name)]
    assert [int(name[:2]) for name in numbered] == list(range(len(numbered))) and len(numbered) >= 10
    assert numbered[1] == "01_why_released_recipe"               # the why chapter comes second
    from cmg_lib.experiments import chapters                     # the plan's chapter keys are the file numbers
    assert {r.chapter for r in chapters.plan("smoke").runs.values()} <= {name[:2] for name in numbered[1:]}


def test_failing_notebook_stops_the_build_naming_notebook_and_cell(tmp_path, monkeypatch):
    import build_book
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("scale = 'x'"), new_code_cell("ok = 1"),
                             new_code_cell("raise ValueError('broken on purpose')")])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "bad.ipynb")
    monkeypatch.setattr(build_book, "NOTEBOOK_DIR", tmp_path / "nb")
    monkeypatch.setattr(build_book, "EXECUTED_DIR", tmp_path / "out")
    with pytest.raises(build_book.BuildError) as err:
        build_book.execute_notebooks(["bad"], {"scale": "smoke"}, timeout=120)
    text = str(err.value)
    assert "notebooks/bad.ipynb failed in cell" in text and "ValueError: broken on purpose" in text
    assert (tmp_path / "out" / "bad.ipynb").exists()         # the partial copy is kept for inspection


def test_notebooks_side_by_side_share_the_cores_and_report_the_failure(tmp_path, monkeypatch):
    import build_book
    from nbformat.v4 import new_code_cell, new_notebook

    monkeypatch.setenv("CMG_TORCH_THREADS", "restored by monkeypatch")
    (tmp_path / "nb").mkdir()
    for name, body in (("bad", "raise ValueError('broken on purpose')"),
                       ("good", "import os, torch\nfrom cmg_lib.experiments import setup\nsetup()\n"
                                "print(os.environ['CMG_TORCH_THREADS'], torch.get_num_threads())")):
        nb = new_notebook(cells=[new_code_cell("scale = 'x'"), new_code_cell(body)])
        nb.cells[0].metadata["tags"] = ["parameters"]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "nb" / f"{name}.ipynb")
    monkeypatch.setattr(build_book, "NOTEBOOK_DIR", tmp_path / "nb")
    monkeypatch.setattr(build_book, "EXECUTED_DIR", tmp_path / "out")
    with pytest.raises(build_book.BuildError, match="notebooks/bad.ipynb failed in cell"):
        build_book.execute_notebooks(["bad", "good"], {"scale": "smoke"}, timeout=120, workers=2)
    good = nbformat.read(tmp_path / "out" / "good.ipynb", as_version=4)          # the other one ran to its end
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert good.cells[-1].outputs[0]["text"].split() == [threads, threads]
    with pytest.raises(build_book.BuildError, match="at least 1"):
        build_book.execute_notebooks(["good"], {}, workers=0)


def test_notebooks_run_one_per_core_on_the_cpu_never_more_than_there_are():
    import build_book

    assert build_book.notebook_workers("cpu", notebooks=11, cores=2) == 2
    assert build_book.notebook_workers("cpu", notebooks=11, cores=16) == 11      # one kernel per notebook
    assert build_book.notebook_workers("cpu", notebooks=9, cores=8) == 8
    assert build_book.notebook_workers("cpu", notebooks=1, cores=8) == 1
    assert build_book.notebook_workers("cuda", notebooks=11, cores=16) == 2      # kernels share the GPU
    assert build_book.notebook_workers("cpu", notebooks=0, cores=4) == 1
    assert build_book.kernel_threads(2, cores=2) == 1
    assert build_book.kernel_threads(11, cores=16) == 1
    assert build_book.kernel_threads(2, cores=16) == 8
    assert build_book.kernel_threads(3, cores=2) == 1


def test_toc_naming_a_missing_notebook_is_a_clear_error(tmp_path):
    import build_book

    toc = tmp_path / "_toc.yml"
    toc.write_text("root: book/intro\nparts:\n  - chapters:\n      - file: book/executed/99_missing\n")
    with pytest.raises(build_book.BuildError, match="notebooks/99_missing.ipynb does not exist"):
        build_book.toc_notebooks(toc)


def test_papermill_text_seeds_parameter_is_named_when_wrong(tmp_path):
    """Issue 26 item 8: ``papermill ... -p seeds '[]'`` (papermill passes the text "[]") now fails naming seeds;
    "[0, 1]" as text works."""
    import papermill
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("seeds = None"),
                             new_code_cell("from cmg_lib.experiments import setup\n"
                                           "print(setup('default', seeds=seeds).seeds)")])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "seeds.ipynb")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(tmp_path / "seeds.ipynb", tmp_path / "bad.ipynb", parameters={"seeds": "[]"},
                                   progress_bar=False)
    assert err.value.evalue == ("seeds must be None (the scale's head seeds) or a non-empty list of non-negative "
                                "integers such as [0, 1, 2], got '[]'")
    papermill.execute_notebook(tmp_path / "seeds.ipynb", tmp_path / "good.ipynb", parameters={"seeds": "[0, 1]"},
                               progress_bar=False)
    good = nbformat.read(tmp_path / "good.ipynb", as_version=4)
    assert good.cells[-1].outputs[0]["text"].strip() == "[0, 1]"
