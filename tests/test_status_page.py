"""The reproducibility status page that tools/build_book.py writes from the executed notebooks."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from cmg_lib.experiments import claims

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_book  # noqa: E402
import status_page  # noqa: E402

MACHINE = {"cpu": "Test CPU 3000", "cores": 2, "gemm_gflops": 112.4, "torch": "2.13.0", "python": "3.11.7",
           "cuda": None}


def _verdicts(updates, pretrain_seeds=(0, 1, 2), head_seeds=(0,)):
    """A verdict cell's output as the kernel stores it (``claims.show``)."""
    scope = claims.Scope("smoke", updates, tuple(pretrain_seeds), tuple(head_seeds))
    data, metadata = claims.output([claims.greater("c", {0: 2.0}, {0: 1.0})], scope, "Table 1")
    return new_code_cell("ex.claims.show(...)", outputs=[new_output("display_data", data=data, metadata=metadata)])


def _executed(tmp_path, name="02_table1", seeds=None, with_run=True, verdicts=()):
    nb = new_notebook(cells=[new_markdown_cell("# Table 1: methods\n\ntext"), new_code_cell("scale = 'default'"),
                             new_code_cell("scale = 'smoke'"), *verdicts])
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[2].metadata["tags"] = ["injected-parameters"]
    nb.metadata["papermill"] = {"parameters": {"scale": "smoke", "seeds": seeds, "device": "cpu"},
                                "duration": 183.0, "end_time": "2026-12-01T10:00:00.000000",
                                "input_path": str(build_book.ROOT / "notebooks" / f"{name}.ipynb"),
                                "output_path": "/tmp/elsewhere/x.ipynb"}
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    if with_run:
        build_book.record_run(path, {"machine": MACHINE, "commit": "abc123", "executed": "2026-12-01T10:00:05Z"})
    return path


def test_record_run_hides_the_injected_cell_and_stores_the_run(tmp_path):
    nb = nbformat.read(_executed(tmp_path), as_version=4)
    assert nb.cells[2].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert "remove-cell" not in nb.cells[1].metadata["tags"]
    assert nb.metadata[status_page.RUN_KEY]["commit"] == "abc123"
    assert nb.metadata["papermill"]["input_path"] == "notebooks/02_table1.ipynb"
    assert nb.metadata["papermill"]["output_path"] == "x.ipynb"


def test_notebook_run_reads_papermill_and_the_verdict_records(tmp_path):
    run = status_page.notebook_run(_executed(tmp_path, verdicts=[_verdicts("222"), _verdicts("75 and 222")]))
    assert run["title"] == "Table 1: methods" and run["scale"] == "smoke" and run["device"] == "cpu"
    assert run["seconds"] == 183.0 and run["machine"]["cpu"] == "Test CPU 3000"
    assert [r["scope"]["updates"] for r in run["records"]] == ["222", "75 and 222"]


def test_updates_and_seeds_are_the_scope_lines_not_the_budget(tmp_path):
    run = status_page.notebook_run(_executed(tmp_path, verdicts=[
        _verdicts("75 and 222", (0, 1, 2), (0,)), _verdicts("222"), _verdicts("500", (3, 1), (4, 0)),
        _verdicts("222")]))
    assert status_page.trained(run) == {"updates": "75 and 222 / 222 / 500", "pretrain_seeds": "0, 1, 2, 3",
                                        "head_seeds": "0, 4"}
    none = status_page.notebook_run(_executed(tmp_path, "00_tour"))
    assert status_page.trained(none) == {"updates": status_page.NO_VERDICTS, "pretrain_seeds": "–",
                                         "head_seeds": "–"}


def test_render_lists_every_chapter_with_machine_and_times(tmp_path):
    runs = [status_page.notebook_run(_executed(tmp_path, verdicts=[_verdicts("372 (book_avt, 40K)")])),
            status_page.notebook_run(_executed(tmp_path, "00_tour", with_run=False))]
    page = status_page.render(runs, {"date": "2026-12-01", "commit": "abc123", "scale": "smoke", "machine": MACHINE,
                                     "data_seconds": 75.0}, timings_include="../measured_timings.md")
    assert "- built 2026-12-01 from commit `abc123`, `make book SCALE=smoke`" in page
    assert "Test CPU 3000, 2 cores, 112 GFLOP/s float32 GEMM, torch 2.13.0" in page
    assert "- dataset build: 75 s" in page and "- notebooks: 6.1 min in all" in page
    assert ("| {doc}`Table 1: methods <../executed/02_table1>` | smoke | 372 (book_avt, 40K) | 0, 1, 2 | 0 | cpu | "
            "3.0 min | 2026-12-01 10:00 | abc123 | M1 |") in page
    assert "| 00_tour |" not in page and "<../executed/00_tour>` | smoke | no verdicts | – | – | cpu | 3.0 min | " \
        "2026-12-01 10:00 | not recorded | not recorded |" in page
    assert page.rstrip().endswith("```{include} ../measured_timings.md\n```")


def test_book_parameters_carry_nothing_machine_specific():
    params = build_book.notebook_parameters("smoke", None, "cpu")
    assert params == {"scale": "smoke", "data": "avdigits", "seeds": None, "device": "cpu"}


def test_a_chapter_left_to_scale_full_gets_a_page_that_says_why_and_no_verdicts(tmp_path, monkeypatch):
    source = tmp_path / "notebooks"
    source.mkdir()
    nb = new_notebook(cells=[new_markdown_cell("# Figure 3: the codebook size\n\ntext"), new_code_cell("1 + 1")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    nbformat.write(nb, source / "06_fig3.ipynb")
    monkeypatch.setattr(build_book, "NOTEBOOK_DIR", source)
    monkeypatch.setattr(build_book, "EXECUTED_DIR", tmp_path / "executed")
    params = build_book.notebook_parameters("default", None, "cpu")
    path = build_book.write_full_only("06_fig3", params, "its runs did not fit", {"machine": MACHINE,
                                                                                  "commit": "abc123"})
    page = nbformat.read(path, as_version=4)
    assert [c.cell_type for c in page.cells] == ["markdown", "markdown"]          # no code cell ran
    assert page.cells[0].source.startswith("# Figure 3: the codebook size")
    note = page.cells[1].source
    assert "At scale `default` this chapter is not run: its runs did not fit." in note
    assert "python tools/build_book.py --scale full --only 06_fig3" in note
    run = status_page.notebook_run(path)
    assert run["full_only"] and run["records"] == [] and run["scale"] == "default" and run["seconds"] is None
    assert status_page.trained(run)["updates"] == status_page.FULL_ONLY
    row = status_page.render([run], {"date": "2026-12-05", "commit": "abc123", "scale": "default",
                                     "machine": MACHINE, "data_seconds": None})
    assert "<../executed/06_fig3>` | default | at scale full only | – | – | cpu | not recorded |" in row
    assert build_book.chapter_of("06_fig3_codebook_size") == "06"
