"""Would training several pre-training seeds as one stacked model beat training them one after another? (not a test)

Two measurements on random inputs of a preset's shapes, with ``--threads`` torch threads:

1. The bound for any stacked model: a full training step at batch ``S x B`` against ``S`` steps at batch ``B``.
   A model that stacks ``S`` seeds does the same arithmetic as one model at batch ``S x B`` with the same number of
   kernel launches; its kernels (batched GEMMs, grouped convolutions) are at best as fast as that model's. So
   ``S x step(B) / step(S x B)`` is the most stacking can gain.
2. A real stacked model of the part with most of a step's FLOPs: the video-specific encoder and decoder (the
   convolution stack on the 5x5 / 3x3 maps) of ``S`` seeds, forward + backward of their reconstruction loss, run
   one after another against stacked with ``torch.func`` (``stack_module_state`` + ``vmap``: batched GEMMs and
   grouped convolutions); the gradients of both are compared first.

    python benchmarks/stacked_seeds.py --preset book_av --seeds 3 --threads 1
    python benchmarks/stacked_seeds.py --preset released_av --seeds 3 --threads 2 --steps 10
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_step import step_seconds  # noqa: E402

from cmg_lib.presets import PRESETS, preset  # noqa: E402
from cmg_lib.model import build_model  # noqa: E402
from cmg_lib.train import seed_everything  # noqa: E402


def median_ms(fn, steps: int) -> float:
    """Median milliseconds of ``fn()`` over ``steps`` calls after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


class GridBranch(nn.Module):
    """One seed's video-specific encoder and decoder, with the reconstruction loss they are trained on."""

    def __init__(self, model, name: str):
        super().__init__()
        self.specific, self.decoder = model.specific[name], model.decoders[name]

    def forward(self, x, code):
        specific, _ = self.specific(x)
        return self.decoder.loss(self.decoder(code, specific), x)


def grid_branch_ms(cfg, seeds: int, batch: int, steps: int) -> tuple[float, float, float]:
    """(one after another ms, stacked ms, largest gradient difference) for ``seeds`` seeds' grid branch."""
    from torch.func import functional_call, stack_module_state, vmap

    name = next(s.name for s in cfg.model.modalities if s.kind == "grid")
    spec = cfg.model.spec(name)
    branches = []
    for seed in range(seeds):
        seed_everything(seed)
        branches.append(GridBranch(build_model(cfg), name))
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(seeds, batch, cfg.model.segments, *spec.feature_shape, generator=g)
    codes = torch.randn(seeds, batch, cfg.model.segments, cfg.model.hidden_dim, generator=g)

    def one_after_another():
        for branch, x, code in zip(branches, xs, codes):
            branch.zero_grad(set_to_none=True)
            branch(x, code).backward()

    params, buffers = stack_module_state(branches)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    skeleton = copy.deepcopy(branches[0]).to("meta")

    def stacked():
        for p in params.values():
            p.grad = None
        losses = vmap(lambda p, b, x, code: functional_call(skeleton, (p, b), (x, code)))(params, buffers, xs, codes)
        losses.sum().backward()

    one_after_another()
    stacked()
    named = [dict(b.named_parameters()) for b in branches]
    used = [k for k in params if params[k].grad is not None]     # e.g. a CLUB head the loss does not read
    if any((named[s][k].grad is None) != (k not in used) for k in params for s in range(seeds)):
        raise RuntimeError("the stacked and the one-after-another branches reached different parameters")
    diff = max(float((named[s][k].grad - params[k].grad[s]).abs().max()) for k in used for s in range(seeds))
    return median_ms(one_after_another, steps), median_ms(stacked, steps), diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="book_av")
    parser.add_argument("--seeds", type=int, default=3, help="pre-training seeds stacked (S)")
    parser.add_argument("--batch", type=int, default=64, help="batch per seed (B)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8, help="timed calls per measurement (median)")
    args = parser.parse_args(argv)
    if min(args.seeds, args.batch, args.threads, args.steps) < 1 or args.seeds < 2 or args.batch < 2:
        raise SystemExit(f"stacked_seeds.py: error: need --seeds >= 2, --batch >= 2, --threads >= 1, --steps >= 1; "
                         f"got {args.seeds}, {args.batch}, {args.threads}, {args.steps}")
    if args.preset not in PRESETS:
        raise SystemExit(f"stacked_seeds.py: error: unknown preset {args.preset!r}; expected one of {sorted(PRESETS)}")
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset, "unicode")
    s, b = args.seeds, args.batch
    single, wide = (1e3 * step_seconds(cfg, args.steps, batch=n) for n in (b, s * b))
    print(f"{args.preset}, {args.threads} thread(s): full step at batch {b}: {single:.1f} ms; at batch {s * b}: "
          f"{wide:.1f} ms = {wide / s:.1f} ms per {b} samples")
    print(f"bound: a model stacking {s} seeds gains at most {s * single / wide:.2f}x over training them one after "
          "another")
    if any(m.kind == "grid" for m in cfg.model.modalities):
        seq, stacked, diff = grid_branch_ms(cfg, s, b, args.steps)
        print(f"grid branch (specific encoder + decoder, fwd + bwd) of {s} seeds: one after another {seq:.1f} ms, "
              f"stacked with torch.func {stacked:.1f} ms ({seq / stacked:.2f}x); largest gradient difference "
              f"{diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
