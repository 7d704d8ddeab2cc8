"""Time full Uni-Code pre-training steps on random inputs of a preset's shapes (not a test).

One step = what ``cmg_lib.train.pretrain`` runs per batch: model forward (with the MM-EMA update), ``club_steps``
CLUB inner steps, the mi terms, main backward, per-module gradient clipping and Adam. One warm-up step is excluded.

    python benchmarks/pretrain_step.py --preset paper_avt --batch 8 --device cpu --steps 2
    python benchmarks/pretrain_step.py --preset tiny --batch 64 --device cpu --steps 10
    python benchmarks/pretrain_step.py --preset paper_avt --batch 80 --device cuda --steps 10 --bf16

Reference (shared/reference/anchors.md): the released AVT step at paper shapes, batch 8, float64 on this 2-core CPU
takes 42.6 s (0.19 samples/s); the target is <= 5.3 s.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from cmg_lib.config import preset
from cmg_lib.model import build_model
from cmg_lib.train import make_optimizers, seed_everything, train_step

RELEASED_AVT_BATCH8_S = 42.6     # shared/reference/anchors.md: released AVT step, paper shapes, batch 8, float64


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss       # KiB on Linux
    return rss_kib / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper_avt")
    parser.add_argument("--method", default="unicode")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"train.batch_size={args.batch}", f"train.device={args.device}"]
    if args.bf16:
        overrides.append("train.precision=bf16")
    config = preset(args.preset, args.method, overrides)
    if args.bf16 and args.device != "cuda":
        raise SystemExit("--bf16 needs --device cuda")
    device = torch.device(args.device)
    seed_everything(config.train.seed)
    model = build_model(config).to(device)
    main_opt, club_opt, _ = make_optimizers(model, config)
    g = torch.Generator().manual_seed(0)
    batch = {s.name: torch.randn(args.batch, config.model.segments, *s.feature_shape, generator=g).to(device)
             for s in config.model.modalities}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    train_step(model, batch, main_opt, club_opt, config)               # warm-up (allocations, kernel choice)
    sync()
    times, cpu_times = [], []
    for _ in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        terms = train_step(model, batch, main_opt, club_opt, config)
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    mean = sum(times) / len(times)
    median = sorted(times)[len(times) // 2] if len(times) % 2 else sum(sorted(times)[len(times) // 2 - 1:][:2]) / 2
    n_params = sum(p.numel() for p in model.parameters())
    print(f"preset={args.preset} method={args.method} batch={args.batch} device={args.device} "
          f"precision={'bf16' if args.bf16 else 'fp32'} threads={torch.get_num_threads()}")
    print(f"params: {n_params / 1e6:.2f} M ({sum(p.numel() for p in model.main_parameters()) / 1e6:.2f} M main)")
    print(f"step: {mean * 1e3:.1f} ms (mean of {len(times)}; each: {', '.join(f'{t * 1e3:.0f}' for t in times)})")
    print(f"process CPU time: {sum(cpu_times) / len(cpu_times) * 1e3:.1f} ms/step (all threads; on a loaded machine "
          f"wall time exceeds CPU time / threads)")
    print(f"median {median * 1e3:.1f} ms, min {min(times) * 1e3:.1f} ms (a shared host's neighbours add noise: "
          f"prefer the median over several steps)")
    print(f"throughput: {args.batch / mean:.2f} samples/s (median step: {args.batch / median:.2f} samples/s)")
    if args.preset == "paper_avt" and args.device == "cpu" and args.method == "unicode":
        released = 8 / RELEASED_AVT_BATCH8_S
        print(f"vs the released AVT step ({RELEASED_AVT_BATCH8_S} s per batch-8 step = {released:.2f} samples/s, "
              f"anchors.md): {args.batch / median / released:.1f}x by the median step (target >= 8x)")
    print(f"peak memory: {peak_memory_mib(device):.0f} MiB ({'CUDA allocated' if device.type == 'cuda' else 'RSS'})")
    print(f"final loss: {terms['loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
