"""The "Claims at a glance" page that tools/build_book.py writes from the verdict records of the executed notebooks."""
from __future__ import annotations

import sys
from pathlib import Path

from cmg_lib.experiments import claims
from cmg_lib.experiments.notebook import scale_banner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import claims_page  # noqa: E402

SEEDS = {0: 10.0, 1: 11.0, 2: 12.0}


def _run(name, title, *records):
    return {"name": name, "title": title, "records": list(records)}


def _record(verdicts, section, scale="default", updates="3000 (book_av, 24K)", pretrain=(0, 1, 2)):
    return claims.record(verdicts, claims.Scope(scale, updates, pretrain, (0,)), section)


def test_one_row_per_verdict_in_book_order_with_link_word_numbers_runs_and_section():
    holds = claims.greater("Uni-Code | beats <the> baseline", SEEDS, {0: 1.0, 1: 2.0, 2: 3.0})
    fails = claims.greater("CMCM beats Uni-Code", {0: 1.0, 1: 2.0, 2: 3.0}, SEEDS)
    unsure = claims.exceeds("shared codes", {0: 5.0, 1: -3.0, 2: 1.0})
    runs = [_run("00_tour", "Data tour"),
            _run("03_table1", "Table 1: methods", _record([holds, fails], "Sec. 5.3, Table 1")),
            _run("07_fig4", "Figure 4", _record([unsure], "Sec. 5.5, Fig. 4", updates="500"))]
    page = claims_page.render(runs)
    assert page.startswith("# Claims at a glance\n")
    assert "**3 verdicts** from 2 chapters: **1 hold**, **1 do not hold**, **1 inconclusive**." in page
    table = [line for line in page.splitlines() if line.startswith("| {doc}")]
    assert len(table) == 3
    assert table[0] == ("| {doc}`Table 1 <../executed/03_table1>` | Uni-Code \\| beats &lt;the> baseline | "
                        f"**holds** | {holds.evidence} | scale default; 3000 (book_av, 24K) updates; pre-training "
                        "seeds 0, 1, 2; head seeds 0 | Sec. 5.3, Table 1 |")
    assert "| **does not hold** |" in table[1] and "{doc}`Figure 4 <../executed/07_fig4>`" in table[2]
    assert "| **inconclusive** |" in table[2] and "500 updates" in table[2] and "Sec. 5.5, Fig. 4" in table[2]
    assert claims.HALF_WIDTH in page and "fewer than 3 pre-training seeds" in page
    assert "cmg-scale-banner" not in claims_page.render(runs, banner=scale_banner)      # the published scale


def test_a_smoke_build_shows_its_banner_and_a_build_without_verdicts_says_so():
    smoke = [_run("03_table1", "Table 1", _record([claims.greater("c", {0: 2.0}, {0: 1.0})], "Table 1", "smoke",
                                                  "6", (0,)))]
    page = claims_page.render(smoke, banner=scale_banner)
    assert page.index("# Claims at a glance") < page.index("cmg-scale-banner") < page.index("| chapter |")
    assert "these numbers test code paths, not claims" in page
    assert "No chapter of this build displayed verdicts." in claims_page.render([_run("00_tour", "Tour")])


def test_chapter_names_are_short():
    assert claims_page.short_title("Table 4 and Figure 5: query-based segmentation") == "Table 4 and Figure 5"
    assert claims_page.short_title("Why the released recipe behaves differently here") == "Why the released recipe …"
    assert claims_page.short_title("Pre-training Uni-Code") == "Pre-training Uni-Code"
