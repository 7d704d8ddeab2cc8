"""Pre-training loop of Uni-Code (released ``pretrain.py``, upstream_spec sections 2.2-2.4), checkpoints that resume
exactly, single-process or DistributedDataParallel, and the ``pretrain`` command.

Per batch, in the released HEAD order (upstream_spec 2.2): one model forward (MM-EMA update and reset bookkeeping
inside the codebook), ``club_steps`` Adam steps of the CLUB estimators on the detached (quantized, specific) pairs,
then the CLUB mi terms with the *updated* estimators, the main loss backward, ``clip_grad_norm_(grad_clip)`` per
released module group, and one Adam step. The learning rate follows ``MultiStepLR`` stepped once per epoch.

``config.train.batch_size`` is the global batch: under DDP each of the W processes takes ``batch_size / W`` rows of
the same seeded permutation, so the data seen per step is the same as in one process.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import Config
from .model import UniCode, build_model

CHECKPOINT_FORMAT = "cmg-checkpoint/1"
REQUIRED_KEYS = ("format", "config", "step", "epoch", "model", "optimizers", "rng", "metrics", "version")


# ---------------------------------------------------------------------------------------------------- data order
class EpochSampler(Sampler[int]):
    """Deterministic shuffled order: epoch e uses ``randperm(n)`` of a generator seeded ``seed + e`` (no global
    RNG). Rank r of W takes every W-th row of the first ``W * (n // W)``; ``start(epoch, skip)`` begins an epoch
    after ``skip`` local rows (how a resumed run continues mid-epoch)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.n // self.world - self.skip

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g)[: self.world * (self.n // self.world)]
        return iter(order[self.rank:: self.world][self.skip:].tolist())


# ---------------------------------------------------------------------------------------------------- distributed
class _Dist:
    """Process-group facts; ``init`` joins a torchrun launch (env RANK / WORLD_SIZE) or an existing group."""

    def __init__(self):
        self.rank, self.world, self.local_rank, self.owned = 0, 1, 0, False

    @classmethod
    def init(cls, device: str) -> "_Dist":
        d = cls()
        if dist.is_available() and dist.is_initialized():
            d.rank, d.world = dist.get_rank(), dist.get_world_size()
        elif dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            d.rank, d.world, d.owned = dist.get_rank(), dist.get_world_size(), True
        d.local_rank = int(os.environ.get("LOCAL_RANK", d.rank))
        return d

    @property
    def active(self) -> bool:
        return self.world > 1

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce (mean) the gradients of parameters outside the DDP wrapper, in one flat message."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.active or not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()


# ---------------------------------------------------------------------------------------------------- RNG state
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _rng_state(loader_gen: torch.Generator) -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state(), "loader": loader_gen.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------- checkpoints
def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace``: a crash never leaves a partial file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict after checking its format and that every required key is present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a cmg checkpoint (expected a dict, got {type(ckpt).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks key(s) {missing}; a {CHECKPOINT_FORMAT} file has "
                         f"{list(REQUIRED_KEYS)}")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} has format {ckpt['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    return ckpt


def _load_model_state(model: UniCode, state: dict, path) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"checkpoint {path} does not match its config's model: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UniCode:
    """Rebuild the model from the stored config alone; eval mode, with ``.config``, ``.step``, ``.metrics``."""
    ckpt = read_checkpoint(path, map_location)
    config = Config.from_dict(ckpt["config"])          # ValueError naming any unknown config field
    model = build_model(config).to(map_location)
    _load_model_state(model, ckpt["model"], path)
    model.step, model.metrics = int(ckpt["step"]), dict(ckpt["metrics"])
    return model.eval()


# ---------------------------------------------------------------------------------------------------- monitoring
class _Window:
    """Running means of the loss terms and code usage over the steps since the last log entry."""

    def __init__(self, modalities: tuple[str, ...], codebook_size: int):
        self.modalities, self.size = modalities, codebook_size
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.usage = torch.zeros(len(self.modalities), self.size, dtype=torch.float64)
        self.agree = torch.zeros(2, dtype=torch.float64)           # (samples whose modes agree, samples)
        self.latest: dict[str, float] = {}
        self.resets = 0.0

    def add(self, terms: dict[str, float], indices: dict[str, torch.Tensor], stats: dict[str, float]) -> None:
        """Accumulate one step: loss terms and CPC accuracies are averaged, codebook resets summed, the
        codebook's own reset-window usage (``window_*``) kept from the latest step."""
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        for k, v in stats.items():
            if k.startswith("cpc_acc/"):
                self.sums[k] = self.sums.get(k, 0.0) + v
            elif k.startswith("window_"):
                self.latest[k] = v
        self.resets += stats.get("resets", 0.0)
        self.steps += 1
        idx = torch.stack([indices[m].detach().cpu() for m in self.modalities])           # (M, B, T)
        offsets = torch.arange(len(self.modalities)).view(-1, 1, 1) * self.size
        self.usage += torch.bincount((idx + offsets).reshape(-1), minlength=self.usage.numel()).view_as(self.usage)
        per_sample = torch.zeros(*idx.shape[:2], self.size).scatter_add_(2, idx, torch.ones(idx.shape))
        modes = per_sample.argmax(-1)                                  # (M, B) most frequent code, lowest on ties
        self.agree += torch.tensor([float((modes == modes[0]).all(dim=0).sum()), float(modes.shape[1])],
                                   dtype=torch.float64)

    def state(self) -> dict:
        return {"sums": dict(self.sums), "steps": self.steps, "usage": self.usage.clone(), "agree": self.agree.clone(),
                "latest": dict(self.latest), "resets": self.resets}

    def load(self, state: dict) -> None:
        self.sums, self.steps, self.latest = dict(state["sums"]), int(state["steps"]), dict(state["latest"])
        self.usage, self.agree, self.resets = state["usage"].clone(), state["agree"].clone(), float(state["resets"])

    def summary(self, d: _Dist) -> dict[str, float]:
        if d.active:
            dist.all_reduce(self.usage)
            dist.all_reduce(self.agree)
        out = {k: v / max(self.steps, 1) for k, v in self.sums.items()}
        out.update(self.latest, resets=self.resets)
        used = self.usage > 0
        for i, m in enumerate(self.modalities):
            p = self.usage[i] / self.usage[i].sum().clamp_min(1)
            out[f"perplexity/{m}"] = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
            out[f"active_codes/{m}"] = int(used[i].sum())
        out["shared_codes"] = float(used.all(0).sum() / used.any(0).sum().clamp_min(1))
        out["mode_agreement"] = float(self.agree[0] / self.agree[1].clamp_min(1))
        return out


# ---------------------------------------------------------------------------------------------------- the loop
def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); without it CPU bf16 is emulated, slower
    than float32, and some kernels (the LSTMs) are missing."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str, device: torch.device) -> None:
    """``bf16`` autocast needs CUDA or a CPU with native bf16 (``cpu_has_native_bf16``); raise a clear error else."""
    if precision != "bf16":
        return
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision='bf16' autocast runs on 'cpu' or 'cuda', got device {device}")
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise ValueError("precision='bf16' on the CPU needs native bf16 support (AVX512-BF16 or AMX, oneDNN); this "
                         "CPU has none: use precision='fp32' or a CUDA device")


def _autocast(precision: str, device: torch.device):
    """bf16 autocast on the training device (matmuls, convolutions, LSTMs in bf16; the codebook stays float32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _move(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def snapshot_name(step: int) -> str:
    """File name of the checkpoint saved at optimiser step ``step`` (``ckpt_every`` / ``snapshot_steps``)."""
    return f"step-{int(step):07d}.pt"


def pretrain(config: Config, dataset: Dataset, out_dir: str | os.PathLike | None = None, steps: int | None = None,
             resume: str | os.PathLike | None = None, progress: bool = True,
             log_fn: Callable[[dict], None] | None = None) -> tuple[UniCode, list[dict]]:
    """Pre-train Uni-Code on ``dataset`` (items: dicts with the configured modalities); return ``(model, history)``.

    ``steps`` (or ``config.train.max_steps``) stops after that many optimiser steps in total, else after
    ``config.train.epochs`` epochs. ``out_dir``: checkpoints ``epoch-<e>.pt`` after each epoch (unless
    ``epoch_ckpts`` is off), ``step-<s>.pt`` every ``ckpt_every`` steps and at each of ``snapshot_steps``, and
    ``final.pt`` (rank 0 only). ``resume``: a checkpoint to continue exactly from
    (parameters, codebook, optimisers, scheduler, RNG states and data position). ``history``: one dict per
    ``log_every`` steps with the window means of every term and the codebook health (per-modality perplexity and
    active codes, ``shared_codes`` = fraction of used codes that every modality chose, ``mode_agreement`` = share of
    clips whose most frequent code agrees across modalities).
    """
    tc = config.train
    device_name = tc.device
    check_precision(tc.precision, torch.device(device_name))
    d = _Dist.init(device_name)
    if device_name.startswith("cuda") and d.active and ":" not in device_name:
        device_name = f"cuda:{d.local_rank}"
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if tc.batch_size % d.world:
        raise ValueError(f"batch_size {tc.batch_size} must be divisible by the world size {d.world}")
    local_bs = tc.batch_size // d.world
    if len(dataset) // d.world < local_bs:
        raise ValueError(f"dataset has {len(dataset)} rows, fewer than one batch of {tc.batch_size}")

    seed_everything(tc.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_model(config).to(device)
    main_opt, club_opt, scheduler = make_optimizers(model, config)
    club_params = model.club_parameters()
    loader_gen = torch.Generator().manual_seed(tc.seed)
    sampler = EpochSampler(len(dataset), tc.seed, d.rank, d.world)
    loader = DataLoader(dataset, batch_size=local_bs, sampler=sampler, drop_last=True, num_workers=tc.num_workers,
                        generator=loader_gen, pin_memory=device.type == "cuda")
    per_epoch = (len(dataset) // d.world) // local_bs

    step, epoch, in_epoch, history, monitor = 0, 0, 0, [], None
    if resume is not None:
        ckpt = read_checkpoint(resume, "cpu")
        if Config.from_dict(ckpt["config"]).model != config.model:
            raise ValueError(f"cannot resume {resume}: its model config differs from the one given")
        _load_model_state(model, ckpt["model"], resume)
        main_opt.load_state_dict(ckpt["optimizers"]["main"])
        scheduler.load_state_dict(ckpt["optimizers"]["scheduler"])
        if club_opt is not None:
            club_opt.load_state_dict(ckpt["optimizers"]["club"])
        _set_rng_state(ckpt["rng"], loader_gen)
        step, epoch = int(ckpt["step"]), int(ckpt["epoch"])
        in_epoch = int(ckpt.get("position", {}).get("batch", 0))
        history = list(ckpt.get("history", []))
        monitor = ckpt.get("monitor")
    total = steps if steps is not None else tc.max_steps
    total = total if total is not None else tc.epochs * per_epoch

    net = model
    model.global_batch = d.active              # contrastive terms over every rank's rows (UniCode.global_batch)
    if d.active:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ignore = [f"club.{n}" for n, _ in (model.club.named_parameters() if model.club is not None else [])]
        ignore += [f"codebook.{n}" for n, _ in model.codebook.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(model, ignore)
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
                  find_unused_parameters=False)
    groups = list(model.clip_groups().values())
    window = _Window(model.modalities, config.model.codebook_size)
    if monitor is not None and d.rank == 0:          # a resumed run continues the open logging window too
        window.load(monitor)                         # (under DDP: rank 0's part of it; the others start empty)
    out_dir = Path(out_dir) if out_dir is not None else None
    is_main = d.rank == 0

    def save(name: str) -> None:
        if out_dir is None or not is_main:
            return
        optimizers = {"main": main_opt.state_dict(), "scheduler": scheduler.state_dict()}
        if club_opt is not None:
            optimizers["club"] = club_opt.state_dict()
        from . import __version__
        _atomic_save({"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "step": step, "epoch": epoch,
                      "position": {"epoch": epoch, "batch": in_epoch}, "model": model.state_dict(),
                      "optimizers": optimizers, "rng": _rng_state(loader_gen),
                      "metrics": history[-1] if history else {}, "history": history, "monitor": window.state(),
                      "version": __version__},
                     out_dir / name)

    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=step, disable=not (progress and is_main), desc="pretrain", dynamic_ncols=True)
    try:
        while step < total:
            sampler.start(epoch, in_epoch * local_bs)
            for batch in loader:
                terms, indices, stats = _train_step(model, net, _move(batch, device), main_opt, club_opt, club_params,
                                             groups, d, tc, config.model.club_steps, device)
                step, in_epoch = step + 1, in_epoch + 1
                window.add(terms, indices, stats)
                if step % tc.log_every == 0 or step == total:
                    entry = {"step": step, "epoch": epoch, "lr": main_opt.param_groups[0]["lr"],
                             **window.summary(d)}
                    window.reset()
                    if is_main:
                        history.append(entry)
                        if log_fn is not None:
                            log_fn(entry)
                    bar.set_postfix(loss=f"{entry['loss']:.3f}")
                bar.update(1)
                if in_epoch == per_epoch:
                    scheduler.step()
                    epoch, in_epoch = epoch + 1, 0
                    if tc.epoch_ckpts:
                        save(f"epoch-{epoch - 1}.pt")
                if (tc.ckpt_every and step % tc.ckpt_every == 0) or step in tc.snapshot_steps:
                    save(snapshot_name(step))
                if step >= total:
                    break
        save("final.pt")
    finally:
        bar.close()
        model.global_batch = False             # a model used after training runs on one process's rows
        if d.owned:
            dist.destroy_process_group()
    model.step, model.metrics = step, history[-1] if history else {}
    return model, history


def make_optimizers(model: UniCode, config: Config) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None,
                                                             torch.optim.lr_scheduler.MultiStepLR]:
    """Main Adam (``lr``, no weight decay, default betas, released) with its per-epoch ``MultiStepLR``, and the CLUB
    Adam (``club_lr``; one Adam over the estimators equals the released three, Adam being per-parameter) or None."""
    tc = config.train
    # fused=True: one kernel per tensor (CPU and CUDA) instead of ~8 elementwise passes; on the 120 M parameters of
    # the paper presets the unfused CPU Adam alone costs ~1/3 of a batch-2 step.
    main_opt = torch.optim.Adam(model.main_parameters(), lr=tc.lr, fused=True)
    club_params = model.club_parameters()
    club_opt = torch.optim.Adam(club_params, lr=config.model.club_lr, fused=True) if club_params else None
    scheduler = torch.optim.lr_scheduler.MultiStepLR(main_opt, milestones=list(tc.milestones), gamma=tc.lr_gamma)
    return main_opt, club_opt, scheduler


def train_step(model: UniCode, batch: dict, main_opt: torch.optim.Optimizer,
               club_opt: torch.optim.Optimizer | None, config: Config) -> dict[str, float]:
    """One full single-process training step (what ``pretrain`` runs per batch); returns the logged terms."""
    device = model.codebook.embedding.device
    check_precision(config.train.precision, device)
    terms, _, _ = _train_step(model, model, _move(batch, device), main_opt, club_opt, model.club_parameters(),
                              list(model.clip_groups().values()), _Dist(), config.train, config.model.club_steps,
                              device)
    return terms


def _train_step(model: UniCode, net: torch.nn.Module, batch: dict, main_opt, club_opt, club_params, groups,
                d: _Dist, tc, club_steps: int, device: torch.device) -> tuple[dict[str, float], dict, dict]:
    """One released-order step; returns the logged terms (floats), the code indices and the forward's stats."""
    model.train()
    with _autocast(tc.precision, device):
        out = net(batch, include_mi=False)
    terms = dict(out.terms)
    if club_opt is not None:
        for i in range(club_steps):
            learn = model.club_loss_and_grads(out.club_inputs)      # = zero_grad; club_loss(...).backward()
            d.average_grads(club_params)
            club_opt.step()
            if i == club_steps - 1:
                terms["club_nll"] = float(learn.detach())
        for p in club_params:                          # the mi terms train the main networks only
            p.requires_grad_(False)
        with _autocast(tc.precision, device):
            mi = model.mi_terms(out)
        loss = out.loss + torch.stack([v.to(out.loss.dtype) for v in mi.values()]).sum()
        terms.update({k: float(v.detach()) for k, v in mi.items()})
    else:
        loss = out.loss
    main_opt.zero_grad(set_to_none=True)
    loss.backward()
    for p in club_params:
        p.requires_grad_(True)
    for params in groups:
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
    main_opt.step()
    terms["loss"] = float(loss.detach())
    if not math.isfinite(terms["loss"]):
        raise FloatingPointError(f"non-finite loss {terms['loss']} at this step; terms: {terms}")
    return terms, out.indices, out.stats


# ---------------------------------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    """Add ``pretrain`` to ``python -m cmg_lib``."""
    p = subparsers.add_parser("pretrain", help="pre-train Uni-Code (or a Table 1 method) and write checkpoints")
    p.add_argument("--preset", required=True, help="config preset, e.g. tiny or paper_avt")
    p.add_argument("--method", default="unicode", help="Table 1 method (cmg_lib.config.METHODS)")
    p.add_argument("--data", default="avdigits", help="'avdigits' or a folder of official features")
    p.add_argument("--out", required=True, help="output folder for checkpoints")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: the config's epochs)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. model.beta=0.5")
    p.add_argument("--resume", default=None, help="checkpoint to continue from")
    p.add_argument("--scale", choices=("smoke", "default", "full"), default=None, help="AV-Digits build scale")
    p.add_argument("--pretrain-size", choices=("24k", "40k", "81k"), default=None)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    p.set_defaults(func=_cli_pretrain)


def _cli_pretrain(args) -> int:
    from .config import preset
    from .data import load_dataset
    overrides = list(args.set)
    overrides.append(f"data.source={args.data}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.scale is not None:
        overrides.append(f"data.scale={args.scale}")
    if args.pretrain_size is not None:
        overrides.append(f"data.pretrain_size={args.pretrain_size}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    config = preset(args.preset, args.method, overrides)
    dataset = load_dataset(args.data, "pretrain", config.data.pretrain_size, scale=config.data.scale)
    pretrain(config, dataset, out_dir=args.out, steps=args.steps, resume=args.resume)
    print(f"checkpoint: {Path(args.out) / 'final.pt'}")
    return 0
