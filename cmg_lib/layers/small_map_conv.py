"""``SmallMapConv``: the stride-1 convolutions of the video branch (released ``Video_Encoder`` / ``Video_Decoder``,
book/differences.md#architecture) on tiny, wide channels-last maps, written as GEMMs.

The maps are 7x7 down to 3x3 and the channels up to 2048; there a general convolution kernel (oneDNN, NCHW or
NHWC) runs 2-3x below GEMM speed on CPU, and these layers are ~90 % of a paper-shape training step. The two
tap-wise paths have their own backward (``torch.autograd.Function``) that writes each tap's weight gradient
straight into one gradient tensor: through autograd, the per-tap weight views (``unbind`` / ``split``) made the
backward copy the whole weight gradient once more (``stack`` / ``cat`` of 38-151 MB per layer; ~0.3 s of a ~2.9 s
batch-8 step, torch profiler).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

GEMM_MIN_CHANNEL_PRODUCT = 512 * 512   # below this Cin*Cout torch's own convolution is faster on CPU (measured)


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The autocast dtype active for ``x``'s device (e.g. bf16), or None: a custom backward runs outside autocast,
    so the forward records it and the backward casts its GEMM operands to it."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def _to(dtype: torch.dtype | None, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """The tensors cast to ``dtype`` (None: unchanged; None entries stay None)."""
    return tuple(t if dtype is None or t is None else t.to(dtype) for t in tensors)


def _mm_into(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out[...] = a @ b`` written in place; through a temporary only when the GEMM runs in another dtype (bf16
    autocast) than ``out`` (the float32 gradient)."""
    if out.dtype == a.dtype == b.dtype:
        torch.mm(a, b, out=out)
    else:
        out.copy_(a @ b)


@functools.lru_cache(maxsize=None)
def transposed_tap_mask(size: tuple[int, int], kernel: int, padding: int) -> Tensor:
    """``(Ho*Wo, k*k)`` 0/1: which taps of a stride-1 transposed convolution on a ``size`` map reach each (cropped)
    output position, i.e. read an input position ``o + padding - tap`` inside the map. A channel that is constant
    over the map contributes ``c @ sum_{reaching taps} W[tap]`` at each output position."""
    (h, w), k, p = size, kernel, padding
    ho, wo = h + k - 1 - 2 * p, w + k - 1 - 2 * p
    mask = torch.zeros(ho, wo, k, k)
    for oy in range(ho):
        for ox in range(wo):
            for dy in range(k):
                for dx in range(k):
                    mask[oy, ox, dy, dx] = float(0 <= oy + p - dy < h and 0 <= ox + p - dx < w)
    return mask.view(ho * wo, k * k)


def tap_windows(size: tuple[int, int], kernel: int, padding: int) -> list[tuple[int, int, int, int, int]]:
    """The real (tap, output window) pairs of a zero-padded stride-1 convolution on a ``size`` map:
    ``(tap, oy0, oy1, ox0, ox1)`` per tap whose shifted window reads at least one input position (input rows
    ``oy0 + dy - padding ...``), a tap that covers every output position first."""
    (h, w), k, p = size, kernel, padding
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    windows = []
    for dy in range(k):
        oy0, oy1 = max(0, p - dy), min(ho, h + p - dy)
        for dx in range(k):
            ox0, ox1 = max(0, p - dx), min(wo, w + p - dx)
            if oy0 < oy1 and ox0 < ox1:
                windows.append((dy * k + dx, oy0, oy1, ox0, ox1))
    windows.sort(key=lambda win: win[1:] != (0, ho, 0, wo))
    return windows


class _PaddedTapConv(torch.autograd.Function):
    """``out[window_t] += x[shifted window_t] @ W[t]`` over the real (tap, window) pairs; ``W (k*k, Cin, Cout)``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, kernel: int, padding: int) -> Tensor:
        n, h, w, _ = x.shape
        ho, wo = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
        windows = tap_windows((h, w), kernel, padding)
        out = None
        for tap, oy0, oy1, ox0, ox1 in windows:
            dy, dx = divmod(tap, kernel)
            part = x[:, oy0 + dy - padding:oy1 + dy - padding, ox0 + dx - padding:ox1 + dx - padding] @ weight[tap]
            if out is None and (oy0, oy1, ox0, ox1) == (0, ho, 0, wo):
                out = part
                continue
            if out is None:
                out = x.new_zeros(n, ho, wo, weight.shape[-1])
            out[:, oy0:oy1, ox0:ox1] += part
        ctx.save_for_backward(x, weight)
        ctx.conv = (kernel, padding, windows, _autocast_dtype(x))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x_saved, weight_saved = ctx.saved_tensors
        kernel, padding, windows, dtype = ctx.conv
        x, weight, grad_out = _to(dtype, x_saved, weight_saved, grad_out)
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = torch.zeros_like(x_saved) if need_x else None
        grad_w = None
        if need_w:        # taps without a real window (none for the released paddings) keep a zero gradient
            every_tap = len(windows) == weight.shape[0]
            grad_w = torch.empty_like(weight_saved) if every_tap else torch.zeros_like(weight_saved)
        cin, cout = weight.shape[1:]
        for tap, oy0, oy1, ox0, ox1 in windows:
            dy, dx = divmod(tap, kernel)
            rows, cols = slice(oy0 + dy - padding, oy1 + dy - padding), slice(ox0 + dx - padding, ox1 + dx - padding)
            g = grad_out[:, oy0:oy1, ox0:ox1].reshape(-1, cout)
            if need_w:
                _mm_into(grad_w[tap], x[:, rows, cols].reshape(-1, cin).t(), g)
            if need_x:
                grad_x[:, rows, cols] += (g @ weight[tap].t()).view(x.shape[0], oy1 - oy0, ox1 - ox0, cin)
        return grad_x, grad_w, None, None


class _TransposedTapConv(torch.autograd.Function):
    """Transposed convolution as GEMM then col2im: ``cols = x @ W_map (+ constant @ W_const)`` with
    ``W (Cc + C, k*k*Cout)``, each tap's slice of ``cols`` added into its shifted window, then the padding cropped."""

    @staticmethod
    def forward(ctx, x: Tensor, constant: Tensor | None, weight: Tensor, kernel: int, padding: int) -> Tensor:
        n, h, w, c = x.shape
        cc, k = weight.shape[0] - c, kernel
        cout = weight.shape[1] // (k * k)
        cols = x @ weight[cc:]
        if constant is not None:
            cols += (constant @ weight[:cc])[:, None, None]
        cols = cols.view(n, h, w, k * k, cout)
        full = x.new_zeros(n, h + k - 1, w + k - 1, cout)
        for tap in range(k * k):
            dy, dx = divmod(tap, k)
            full[:, dy:dy + h, dx:dx + w] += cols[:, :, :, tap]
        ctx.save_for_backward(x, constant, weight)
        ctx.conv = (kernel, padding, _autocast_dtype(x))
        p = padding
        return full[:, p:full.shape[1] - p, p:full.shape[2] - p] if p else full

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, constant, weight_saved = ctx.saved_tensors
        k, p, dtype = ctx.conv
        x, constant, weight, grad_out = _to(dtype, x, constant, weight_saved, grad_out)
        n, h, w, c = x.shape
        cc, cout = weight.shape[0] - c, grad_out.shape[-1]
        full = F.pad(grad_out, (0, 0, p, p, p, p)) if p else grad_out
        grad_cols = grad_out.new_empty(n, h, w, k * k, cout)          # im2col of the output gradient
        for tap in range(k * k):
            dy, dx = divmod(tap, k)
            grad_cols[:, :, :, tap] = full[:, dy:dy + h, dx:dx + w]
        grad_cols = grad_cols.view(n * h * w, k * k * cout)
        need_x, need_c, need_w = ctx.needs_input_grad[:3]
        grad_x = (grad_cols @ weight[cc:].t()).view(n, h, w, c) if need_x else None
        per_map = grad_cols.view(n, h * w, -1).sum(dim=1) if constant is not None else None
        grad_c = per_map @ weight[:cc].t() if constant is not None and need_c else None
        grad_w = torch.empty_like(weight_saved) if need_w else None
        if need_w:
            _mm_into(grad_w[cc:], x.reshape(-1, c).t(), grad_cols)
            if constant is not None:
                _mm_into(grad_w[:cc], constant.t(), per_map)
        return grad_x, grad_c, grad_w, None, None


class SmallMapConv(nn.Module):
    """Stride-1 ``Conv2d`` / ``ConvTranspose2d`` on channels-last maps ``(N, H, W, C)``, as GEMMs.

    Measured on an idle 2-core CPU (torch 2.13.0):
    * unpadded convolution = im2col: the k*k shifted windows concatenated along channels,
      ``(N, Ho, Wo, k*k*Cin) @ W (k*k*Cin, Cout)``, one GEMM;
    * zero-padded convolution = one GEMM per tap over the input window that tap really reads (``_PaddedTapConv``):
      im2col of a padded map multiplies the padding zeros too, 32 of the 81 (tap, position) pairs of a 3x3 conv
      with padding 1 on a 3x3 map (the released residual block at 2048 channels), 56 of 225 on a 5x5 map
      (measured: that residual conv's forward+backward 1.86 s -> 1.1 s per batch-8 step);
    * transposed convolution = GEMM then col2im (``_TransposedTapConv``): ``(N, H, W, Cin) @ W (Cin, k*k*Cout)``,
      each tap's slice added into its shifted output window (no multiplication by inserted zeros).
    Same function and default initialisation as ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (uniform +-1/sqrt(fan),
    fan = Cin*k*k, resp. Cout*k*k as torch computes it for transposed weights); the weight is stored in GEMM
    layout ``(k, k, Cin, Cout)``, resp. ``(Cin, k, k, Cout)``, and the input needs no layout conversion (features
    arrive as ``(B, T, H, W, C)``). Python loops run over the k*k taps only. Narrow layers (Cin*Cout below
    ``GEMM_MIN_CHANNEL_PRODUCT``, e.g. AV-Digits' 64-128 channels) call torch's convolution on the channels-last
    view instead, which is faster there (measured CPU time of the AV-Digits grid stack, 640 frames: 0.33 s vs 0.57 s).
    ``impl="torch"`` (``ModelConfig.conv_impl``) uses torch's convolution for every layer: the same function and
    parameters, for GPUs (cuDNN) and for the released-equivalent float64 timing of ``benchmarks/pretrain_step.py``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, padding: int = 0, bias: bool = True,
                 transposed: bool = False, impl: str = "gemm"):
        super().__init__()
        if impl not in ("gemm", "torch"):
            raise ValueError(f"impl must be 'gemm' or 'torch', got {impl!r}")
        if not 0 <= padding <= kernel - 1:
            raise ValueError(f"padding must be in [0, kernel-1] = [0, {kernel - 1}], got {padding}")
        self.kernel, self.padding, self.transposed = kernel, padding, transposed
        self.in_channels, self.out_channels, self.impl = in_channels, out_channels, impl
        shape = (in_channels, kernel, kernel, out_channels) if transposed else (kernel, kernel, in_channels,
                                                                                out_channels)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        bound = 1.0 / math.sqrt((out_channels if transposed else in_channels) * kernel * kernel)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def out_size(self, size: int) -> int:
        k, p = self.kernel, self.padding
        return size + k - 1 - 2 * p if self.transposed else size - k + 1 + 2 * p

    def forward(self, x: Tensor, constant: Tensor | None = None) -> Tensor:
        """``x (N, H, W, C)`` -> ``(N, H', W', Cout)``. ``constant (N, Cc)``, optional: channels that are the same at
        every position (the decoder's quantized code), placed before ``x``'s channels (``Cc + C = in_channels``).
        A transposed GEMM layer multiplies them once per map instead of once per position (exact: every input
        position feeds every tap); the other paths broadcast and concatenate them."""
        n, h, w, c = x.shape
        cc = 0 if constant is None else constant.shape[-1]
        if cc + c != self.in_channels or (constant is not None and constant.shape != (n, cc)):
            raise ValueError(f"expected {self.in_channels} input channels (last axis, constant channels "
                             f"included), got x {tuple(x.shape)}"
                             + ("" if constant is None else f" and constant {tuple(constant.shape)}"))
        k, p = self.kernel, self.padding
        gemm = self.impl == "gemm" and self.in_channels * self.out_channels >= GEMM_MIN_CHANNEL_PRODUCT
        if constant is not None and self.transposed and not gemm and k > 1:
            return self._transposed_with_constant(x, constant)
        if constant is not None and not (self.transposed and gemm and k > 1):
            x = torch.cat([constant[:, None, None].expand(-1, h, w, -1), x], dim=-1)
            constant = None
        if k == 1 and self.impl == "gemm":
            out = x @ self.weight.view(self.in_channels, self.out_channels)
        elif not gemm:
            # narrow layers (AV-Digits): torch's convolution is faster; run it on the channels-last view
            nchw = x.permute(0, 3, 1, 2)
            if self.transposed:
                out = F.conv_transpose2d(nchw, self.weight.permute(0, 3, 1, 2), padding=p)
            else:
                out = F.conv2d(nchw, self.weight.permute(3, 2, 0, 1), padding=p)
            out = out.permute(0, 2, 3, 1)
        elif self.transposed:
            out = _TransposedTapConv.apply(x, constant, self.weight.view(self.in_channels, -1), k, p)
        elif p == 0:
            ho, wo = self.out_size(h), self.out_size(w)
            cols = torch.cat([x[:, dy:dy + ho, dx:dx + wo] for dy in range(k) for dx in range(k)], dim=-1)
            out = cols @ self.weight.view(-1, self.out_channels)
        else:
            out = _PaddedTapConv.apply(x, self.weight.view(k * k, self.in_channels, self.out_channels), k, p)
        return out if self.bias is None else out + self.bias

    def _transposed_with_constant(self, x: Tensor, constant: Tensor) -> Tensor:
        """Torch's transposed convolution on the map channels only, plus the constant channels' contribution
        ``constant @ W_eff`` with ``W_eff[o] = sum of the taps reaching output position o``
        (``transposed_tap_mask``): the same function as concatenating ``constant`` at every position, with the
        constant channels' share of the FLOPs (half of them in the decoder's first layer, D = S) gone."""
        n, h, w, _ = x.shape
        cc, k, p = constant.shape[-1], self.kernel, self.padding
        ho, wo = self.out_size(h), self.out_size(w)
        out = F.conv_transpose2d(x.permute(0, 3, 1, 2), self.weight[cc:].permute(0, 3, 1, 2), padding=p)
        mask = transposed_tap_mask((h, w), k, p).to(device=x.device, dtype=self.weight.dtype)
        taps = self.weight[:cc].reshape(cc, k * k, self.out_channels)
        effective = torch.matmul(mask, taps)                                       # (cc, Ho*Wo, Cout)
        out = out.permute(0, 2, 3, 1) + (constant @ effective.reshape(cc, -1)).view(n, ho, wo, self.out_channels)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, padding={self.padding}, "
                f"transposed={self.transposed}, bias={self.bias is not None}, impl={self.impl}")
