"""Time full Uni-Code pre-training steps on random inputs of a preset's shapes (not a test).

One step = what ``cmg_lib.train.pretrain`` runs per batch: model forward (with the MM-EMA update), ``club_steps``
CLUB inner steps, the mi terms, main backward, per-module gradient clipping and Adam. One warm-up step is excluded.

    python benchmarks/pretrain_step.py --preset paper_avt --batch 8 --device cpu --steps 5
    python benchmarks/pretrain_step.py --preset paper_avt --batch 8 --steps 5 --released-replay 2
    python benchmarks/pretrain_step.py --preset paper_avt --batch 8 --steps 5 --bf16    # CPU with native bf16
    python benchmarks/pretrain_step.py --preset released_avt --batch 64 --device cpu --steps 10
    python benchmarks/pretrain_step.py --preset paper_avt --batch 80 --device cuda --steps 10 --bf16
    python benchmarks/pretrain_step.py --preset released_av --batch 64 --steps 20 --threads 2 --set model.hidden_dim=256

Besides the ``median N ms`` line it prints the FLOPs of one step (torch's ``FlopCounterMode``, one extra untimed
step), the achieved GFLOP/s, this machine's float32 GEMM rate (``gemm_rate``) and the step's ratio to that FLOP
floor (step time / (FLOPs / GEMM rate)): how far the step is from what its arithmetic alone would cost.

Reference: the released AVT step at paper shapes, batch 8, float64, measured on an idle 2-core CPU (torch 2.13.0,
2026-11-25), takes 42.6 s (0.19 samples/s); the target is 8x its samples/s. CPUs differ between machines
(the 2-core machines of this project have ranged from ~110 to ~220 GFLOP/s in float32 GEMMs), so
``--released-replay N`` also times N steps of a released-equivalent step ON THIS MACHINE: the same architecture and
loop in float64 (the released code runs in float64 and crashes in float32), torch's own convolutions
(``model.conv_impl=torch``) instead of our GEMM formulation, the released quirks, and plain (unfused, per-tensor)
Adam as in torch 1.13. It is our code, not the released one (it leaves out the released data path, which runs BERT
in the collate function), so it measures the cost of the computation the released step performs.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from cmg_lib.presets import preset
from cmg_lib.model import build_model
from cmg_lib.precision import cpu_has_native_bf16
from cmg_lib.train import make_optimizers, seed_everything, train_step

RELEASED_AVT_BATCH8_S = 42.6     # the released AVT step, paper shapes, batch 8, float64, idle 2-core CPU, 2026-11-25


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss       # KiB on Linux
    return rss_kib / 1024


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def step_flops(model, batch, main_opt, club_opt, config) -> int:
    """FLOPs of one training step as torch's ``FlopCounterMode`` counts them (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, batch, main_opt, club_opt, config)
    return int(counter.get_total_flops())


def gemm_rate(device: torch.device, size: int = 1024, repeats: int = 8) -> float:
    """Best float32 GEMM rate (FLOP/s) of ``size``-square matmuls on ``device``, the floor's yardstick."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def time_steps(model, batch, main_opt, club_opt, config, steps: int, device: torch.device) -> tuple[list, list, dict]:
    """Wall and process-CPU seconds of ``steps`` training steps after one warm-up step; the last step's terms."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    train_step(model, batch, main_opt, club_opt, config)               # warm-up (allocations, kernel choice)
    sync()
    times, cpu_times, terms = [], [], {}
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        terms = train_step(model, batch, main_opt, club_opt, config)
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times, terms


def random_batch(config, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> dict:
    g = torch.Generator().manual_seed(0)
    return {s.name: torch.randn(batch, config.model.segments, *s.feature_shape, generator=g, dtype=dtype).to(device)
            for s in config.model.modalities}


def step_seconds(config, steps: int, *, threads: int | None = None, batch: int | None = None) -> float:
    """Median seconds of one full CPU training step of ``config`` on random inputs at ``batch`` (default: the
    config's batch size), after one warm-up step; ``threads`` sets torch's intra-op threads first."""
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(0)
    model = build_model(config)
    main_opt, club_opt, _ = make_optimizers(model, config)
    data = random_batch(config, batch or config.train.batch_size, torch.device("cpu"))
    times, _, _ = time_steps(model, data, main_opt, club_opt, config, steps, torch.device("cpu"))
    return median(times)


def released_replay(args) -> list[float]:
    """Seconds per released-equivalent step on this CPU (see the module docstring)."""
    config = preset(args.preset, args.method, [f"train.batch_size={args.batch}", "model.conv_impl=torch",
                                               "model.released_quirks=true"])
    seed_everything(config.train.seed)
    model = build_model(config).double()
    main_opt = torch.optim.Adam(model.main_parameters(), lr=config.train.lr, foreach=False)
    club_params = model.club_parameters()
    club_opt = torch.optim.Adam(club_params, lr=config.model.club_lr, foreach=False) if club_params else None
    times, _, _ = time_steps(model, random_batch(config, args.batch, torch.device("cpu"), torch.float64), main_opt,
                             club_opt, config, args.released_replay, torch.device("cpu"))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper_avt")
    parser.add_argument("--method", default="unicode")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA, or a CPU with native bf16)")
    parser.add_argument("--precision", default=None, help="fp32 or bf16 (--bf16 is --precision bf16)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. model.hidden_dim=256")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count and the GEMM-rate floor")
    parser.add_argument("--released-replay", type=int, default=0, metavar="N",
                        help="also time N released-equivalent float64 steps on this machine (CPU; ~15-45 s each)")
    args = parser.parse_args(argv)
    precision = args.precision or ("bf16" if args.bf16 else "fp32")
    if precision not in ("fp32", "bf16") or (args.bf16 and precision != "bf16"):
        raise SystemExit(f"pretrain_step.py: error: unknown precision {args.precision!r}; use fp32 or bf16")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"pretrain_step.py: error: --threads must be a positive number of threads, got {args.threads}")
    if precision == "bf16" and args.device == "cpu" and not cpu_has_native_bf16():
        raise SystemExit("pretrain_step.py: error: bf16 on this CPU is emulated (no AVX512-BF16 / AMX): use fp32 "
                         "here, bf16 on CUDA or a CPU with native bf16")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"train.batch_size={args.batch}", f"train.device={args.device}", f"train.precision={precision}"]
    try:
        config = preset(args.preset, args.method, overrides + list(args.set))
    except ValueError as err:
        raise SystemExit(f"pretrain_step.py: error: {err}") from None
    device = torch.device(args.device)
    seed_everything(config.train.seed)
    model = build_model(config).to(device)
    main_opt, club_opt, _ = make_optimizers(model, config)
    batch = random_batch(config, args.batch, device)
    times, cpu_times, terms = time_steps(model, batch, main_opt, club_opt, config, args.steps, device)
    mean, med = sum(times) / len(times), median(times)
    n_params = sum(p.numel() for p in model.parameters())
    cpu_note = f" native_bf16={cpu_has_native_bf16()}" if device.type == "cpu" else ""
    print(f"preset={args.preset} method={args.method} batch={args.batch} device={args.device} "
          f"precision={precision} threads={torch.get_num_threads()}{cpu_note}"
          + (f" set={' '.join(args.set)}" if args.set else ""))
    print(f"params: {n_params / 1e6:.2f} M ({sum(p.numel() for p in model.main_parameters()) / 1e6:.2f} M main)")
    print(f"step: {mean * 1e3:.1f} ms (mean of {len(times)}; each: {', '.join(f'{t * 1e3:.0f}' for t in times)})")
    print(f"process CPU time: {sum(cpu_times) / len(cpu_times) * 1e3:.1f} ms/step (all threads; on a loaded machine "
          f"wall time exceeds CPU time / threads)")
    print(f"median {med * 1e3:.1f} ms, min {min(times) * 1e3:.1f} ms (a shared host's neighbours add noise: "
          f"prefer the median over several steps)")
    print(f"throughput: {args.batch / mean:.2f} samples/s (median step: {args.batch / med:.2f} samples/s)")
    print(f"peak memory: {peak_memory_mib(device):.0f} MiB ({'CUDA allocated' if device.type == 'cuda' else 'RSS'})")
    print(f"final loss: {terms['loss']:.4f}")
    if not args.no_flops:
        flops, rate = step_flops(model, batch, main_opt, club_opt, config), gemm_rate(device)
        floor = flops / rate
        print(f"flops: {flops / 1e9:.2f} GFLOP per step (torch FlopCounterMode), achieved {flops / med / 1e9:.1f} "
              f"GFLOP/s by the median step")
        print(f"gemm_rate: {rate / 1e9:.1f} GFLOP/s (float32 1024^3 matmul, best of 8, this machine); FLOP floor "
              f"{floor * 1e3:.1f} ms; step / floor = {med / floor:.2f}")
    if args.preset == "paper_avt" and args.device == "cpu" and args.batch == 8:
        print(f"vs the released AVT step on the reference 2-core CPU ({RELEASED_AVT_BATCH8_S} s per batch-8 step): "
              f"{RELEASED_AVT_BATCH8_S / med:.1f}x by the median step (target >= 8x)")
    if args.released_replay:
        if args.device != "cpu":
            raise SystemExit("--released-replay times the float64 CPU step; use --device cpu")
        replay = released_replay(args)
        print(f"released-equivalent float64 step on this machine: median {median(replay):.2f} s "
              f"(each: {', '.join(f'{t:.1f}' for t in replay)}); ours is {median(replay) / med:.1f}x faster "
              f"(target >= 8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
