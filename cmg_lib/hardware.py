"""The machine a run happened on: CPU model, cores, measured float32 GEMM rate, torch version.

Run times only mean something next to these (the project's 2-core machines have differed twofold in GEMM rate),
so the book's reproducibility page prints them beside every notebook's time.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``, else ``"unknown CPU"``."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                name = " ".join(line.split(":", 1)[1].split())
                if name:
                    return name
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # macOS, Windows
        return os.cpu_count() or 1


def gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Measured float32 matrix-multiply rate in GFLOP/s: best of ``repeats`` ``n x n`` products (2 n^3 flops)."""
    import torch

    if n < 1 or repeats < 1:
        raise ValueError(f"gemm_gflops needs n >= 1 and repeats >= 1, got n={n}, repeats={repeats}")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    torch.mm(a, b)                   # warm-up (thread pool, first-call allocation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def machine_facts(measure: bool = True) -> dict:
    """CPU model, usable cores, torch version and threads, Python version, and (``measure``) the GEMM rate."""
    import torch

    facts = {"cpu": cpu_model(), "cores": usable_cores(), "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
             "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if measure:
        facts["gemm_gflops"] = round(gemm_gflops(), 1)
    return facts
