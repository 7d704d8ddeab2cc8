"""Numeric precision of training: float32, or bf16 autocast where the hardware runs it natively.

``train.precision="bf16"`` autocasts matmuls, convolutions and LSTMs to bf16 on CUDA or on a CPU with native bf16
(AVX512-BF16 or AMX through oneDNN); the codebook and its EMA statistics stay float32 (``SharedCodebook``).
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); without it CPU bf16 is emulated, slower
    than float32, and some kernels (the LSTMs) are missing."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str, device: torch.device) -> None:
    """``bf16`` autocast needs CUDA or a CPU with native bf16 (``cpu_has_native_bf16``); raise a clear error else."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "bf16":
        return
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision='bf16' autocast runs on 'cpu' or 'cuda', got device {device}")
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise ValueError("precision='bf16' on the CPU needs native bf16 support (AVX512-BF16 or AMX, oneDNN); this "
                         "CPU has none: use precision='fp32' or a CUDA device")


def autocast(precision: str, device: torch.device):
    """bf16 autocast on the training device (matmuls, convolutions, LSTMs in bf16; the codebook stays float32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
