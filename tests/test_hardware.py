"""Machine facts printed beside the book's run times."""
from __future__ import annotations

import pytest

from cmg_lib.hardware import cpu_model, gemm_gflops, machine_facts, usable_cores


def test_cpu_model_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t:  Intel(R) Xeon(R)   CPU @ 2.20GHz\n")
    assert cpu_model(info) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    assert cpu_model(tmp_path / "missing") != ""


def test_gemm_rate_and_facts():
    rate = gemm_gflops(n=128, repeats=2)
    assert 0.01 < rate < 1e6
    facts = machine_facts(measure=False)
    assert facts["cores"] == usable_cores() >= 1 and facts["torch"].startswith("2.")
    assert "gemm_gflops" not in facts
    with pytest.raises(ValueError, match="n >= 1"):
        gemm_gflops(n=0)
