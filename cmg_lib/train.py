"""Pre-training loop of Uni-Code (released ``pretrain.py``; book/differences.md#paper-vs-released for the objective's
choices): one readable loop, single-process or DistributedDataParallel, resuming exactly.

Per batch (:meth:`Trainer.step`): the loss of :func:`cmg_lib.step.step_loss` (one model forward with the MM-EMA
update and reset bookkeeping inside the codebook; ``club_steps`` Adam steps of the CLUB estimators on the detached
pairs, :meth:`Trainer.learn_club`; the mi terms with the *updated* estimators), its backward,
``clip_grad_norm_(grad_clip)`` per released module group, and one Adam step. The learning rate follows
``MultiStepLR`` stepped once per epoch.

``config.train.batch_size`` is the global batch: under DDP each of the W processes takes ``batch_size / W`` rows of
the same seeded permutation, so the data seen per step is the same as in one process (``cmg_lib.distributed``).
The checkpoint format is ``cmg_lib.checkpoint``'s.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from . import usage
from .checkpoint import (check_space, checkpoint_bytes, checkpoint_config, data_identity, data_mismatch,
                         load_model_state, planned_checkpoints, read_checkpoint, save_checkpoint, set_rng_state,
                         snapshot_name)
from .config import Config, TrainConfig
from .distributed import ProcessGroup, data_parallel, local_batch_size, training_device
from .model import UniCode, build_model
from .precision import autocast, check_precision
from .storage import LockHeld, check_writable, clean_stale, locked


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------- monitoring
class Monitor:
    """Running means of the loss terms and the code usage over the steps since the last log entry."""

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

    def add(self, terms: dict[str, float], codes: usage.CodeCounts, stats: dict[str, float]) -> None:
        """Accumulate one step: loss terms and CPC accuracies are averaged, codebook resets summed, the batch's code
        counts (computed by the codebook, ``CodebookOutput.usage``) added up, the codebook's own reset-window usage
        (``window_*``) kept from the latest step."""
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        for k, v in stats.items():
            if k.startswith("cpc_acc/"):
                self.sums[k] = self.sums.get(k, 0.0) + v
            elif k.startswith("window_"):
                self.latest[k] = v
        self.resets += stats.get("resets", 0.0)
        self.steps += 1
        self.usage += codes.counts.detach().cpu()
        self.agree += torch.tensor([codes.agreeing, codes.samples], dtype=torch.float64)

    def state(self) -> dict:
        return {"sums": dict(self.sums), "steps": self.steps, "usage": self.usage.clone(), "agree": self.agree.clone(),
                "latest": dict(self.latest), "resets": self.resets}

    def load(self, state: dict) -> None:
        self.sums, self.steps, self.latest = dict(state["sums"]), int(state["steps"]), dict(state["latest"])
        self.usage, self.agree, self.resets = state["usage"].clone(), state["agree"].clone(), float(state["resets"])

    def summary(self, group: ProcessGroup) -> dict[str, float]:
        """The window's means, resets and codebook health (``usage.CodeCounts.health`` of the summed counts)."""
        if group.active:
            torch.distributed.all_reduce(self.usage)
            torch.distributed.all_reduce(self.agree)
        out = {k: v / max(self.steps, 1) for k, v in self.sums.items()}
        out.update(self.latest, resets=self.resets)
        window = usage.CodeCounts(self.usage, float(self.agree[0]), float(self.agree[1]))
        out.update(window.health(self.modalities))
        return out


# ---------------------------------------------------------------------------------------------------- one step
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


@dataclass
class Trainer:
    """What one training step needs: the model (``net`` is it or its DDP wrapper), the optimisers, the process
    group and the config. :meth:`step` runs the released-order step on one (device) batch."""

    model: UniCode
    main_opt: torch.optim.Optimizer
    club_opt: torch.optim.Optimizer | None
    config: Config
    device: torch.device
    group: ProcessGroup = field(default_factory=ProcessGroup)
    net: torch.nn.Module | None = None

    def __post_init__(self):
        self.net = self.net if self.net is not None else self.model
        self.club_params = self.model.club_parameters()
        self.clip_groups = list(self.model.clip_groups().values())

    def step(self, batch: dict) -> tuple[dict[str, float], usage.CodeCounts, dict]:
        """One step; returns the logged terms (floats), the batch's code counts and the forward's stats."""
        tc = self.config.train
        self.model.train()
        with autocast(tc.precision, self.device):
            out = self.net(batch, learn_club=self.learn_club if self.club_opt is not None else None)
        self.main_opt.zero_grad(set_to_none=True)
        out.loss.backward()
        for params in self.clip_groups:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        self.main_opt.step()
        terms = out.values()
        if out.club_nll is not None:
            terms["club_nll"] = float(out.club_nll.detach())
        terms["loss"] = float(out.loss.detach())
        if not math.isfinite(terms["loss"]):
            raise FloatingPointError(f"non-finite loss {terms['loss']} at this step; terms: {terms}")
        return terms, out.code_counts, out.stats

    def learn_club(self, club_inputs: dict) -> torch.Tensor:
        """``club_steps`` Adam steps of the CLUB estimators on the detached pairs (Eq. 4's posterior, released
        ``mi_first_forward``); their objective at the last step. ``train.fast``: the batched estimators with the
        backward written out (``UniCode.club_loss_and_grads``); else ``club_loss`` through autograd."""
        for _ in range(self.config.model.club_steps):
            if self.config.train.fast:
                learn = self.model.club_loss_and_grads(club_inputs)
            else:
                self.club_opt.zero_grad(set_to_none=True)
                learn = self.model.club_loss(club_inputs)
                learn.backward()
            self.group.average_grads(self.club_params)
            self.club_opt.step()
        return learn.detach()


def train_step(model: UniCode, batch: dict, main_opt: torch.optim.Optimizer,
               club_opt: torch.optim.Optimizer | None, config: Config) -> dict[str, float]:
    """One full single-process training step (what ``pretrain`` runs per batch); returns the logged terms."""
    device = model.codebook.embedding.device
    check_precision(config.train.precision, device)
    return Trainer(model, main_opt, club_opt, config, device).step(_move(batch, device))[0]


def _move(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------- the loop
@dataclass
class TrainState:
    """Where a run is: optimiser steps taken, epoch, batches into that epoch, the log so far."""

    step: int = 0
    epoch: int = 0
    in_epoch: int = 0
    history: list[dict] = field(default_factory=list)


def pretrain(config: Config, dataset: Dataset, out_dir: str | os.PathLike | None = None, steps: int | None = None,
             resume: str | os.PathLike | None = None, progress: bool = True,
             log_fn: Callable[[dict], None] | None = None) -> tuple[UniCode, list[dict]]:
    """Pre-train Uni-Code on ``dataset`` (items: dicts with the configured modalities); return ``(model, history)``.

    ``steps`` (or ``config.train.max_steps``) stops after that many optimiser steps in total, else after
    ``config.train.epochs`` epochs. ``out_dir``: checkpoints ``epoch-<e>.pt`` after each epoch (unless
    ``epoch_ckpts`` is off), ``step-<s>.pt`` every ``ckpt_every`` steps and at each of ``snapshot_steps``, and
    ``final.pt`` (rank 0 only). ``resume``: a checkpoint to continue exactly from (parameters, codebook,
    optimisers, scheduler, RNG states and data position). ``history``: one dict per ``log_every`` steps with the
    window means of every term and the codebook health (per-modality perplexity and active codes,
    ``shared_fraction`` = fraction of used codes that every modality chose, ``mode_agreement`` = share of clips
    whose most frequent code agrees across modalities; ``usage.CodeCounts.health``).

    Everything a user can get wrong fails before the first step, in one line: a step count below 1, a device
    this machine lacks (:func:`check_device`), an ``out_dir`` that cannot take files (``storage.NotWritableError``)
    or that another live run holds (``storage.LockHeld``; the run holds ``out_dir/.run.lock`` until it returns,
    :func:`holding_out_folder`), too little free space there for the checkpoints the run will write
    (:func:`check_space`), a resume checkpoint that is damaged, already at or past the total, or trained with
    other settings or data (:func:`check_resume`). Under DDP every rank fails when rank 0 does. Every
    checkpoint stores the data identity (``checkpoint.data_identity``).
    """
    tc = config.train
    for name, value in (("steps", steps), ("train.max_steps", tc.max_steps)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be a positive number of optimiser steps, got {value}")
    check_precision(tc.precision, check_device(tc.device))
    ckpt = check_resume(resume, config, dataset) if resume is not None else None
    with holding_out_folder(out_dir, tc.device) as (out, group):
        return _train(config, dataset, out if group.is_main else None, steps, resume, ckpt, progress, log_fn, group)


def check_device(name: str) -> torch.device:
    """``name`` (``train.device``, the CLI's ``--device``) as a device this machine has; a ValueError saying
    what there is otherwise (``cuda`` without CUDA, ``cuda:N`` past the last GPU, an unknown name)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} (--device, train.device) is not one this library trains on; expected "
                         "cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
        raise ValueError(f"device {name!r} (--device, train.device) asks for CUDA, which this machine does not have "
                         f"(torch {torch.__version__}, {build}, {torch.cuda.device_count()} GPUs visible); expected "
                         "cpu here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} (--device, train.device) is past this machine's "
                         f"{torch.cuda.device_count()} GPU(s); expected cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


RUN_LOCK = ".run.lock"      # held in the out folder while a run writes there


@contextlib.contextmanager
def holding_out_folder(out_dir: str | os.PathLike | None, device: str) -> Iterator[tuple[Path | None, ProcessGroup]]:
    """For the block: ``out_dir`` probed (``storage.check_writable``), the process group joined and, on rank 0,
    the folder's run lock held; yields ``(out folder or None, group)``. When rank 0 cannot take the lock, every
    rank raises (``ProcessGroup.together``) instead of waiting for a run that never starts. Re-entrant: the CLI
    holds it while the data loads (so a busy folder is refused before that), and ``pretrain`` inside."""
    out = check_writable(out_dir) if out_dir is not None else None
    group = ProcessGroup.join(device)
    try:
        with contextlib.ExitStack() as stack:
            with group.together(f"to take the run lock of {out}"):
                if out is not None and group.is_main:
                    clean_stale(out)
                    _hold(stack, out)
            yield out, group
    finally:
        group.close()


def _hold(stack: contextlib.ExitStack, out: Path) -> None:
    """Take the out folder's run lock for the rest of ``stack``, or fail at once naming the live holder."""
    try:
        stack.enter_context(locked(out / RUN_LOCK, timeout=0))
    except LockHeld as err:
        raise LockHeld(f"out folder {out} is in use by another run (pid {err.holder.get('pid', '?')} on "
                       f"{err.holder.get('host', '?')}); wait for it or choose another --out", err.path,
                       err.holder) from None


def _train(config: Config, dataset: Dataset, out_dir: Path | None, steps: int | None, resume, ckpt: dict | None,
           progress: bool, log_fn, group: ProcessGroup) -> tuple[UniCode, list[dict]]:
    """The body of :func:`pretrain` once its inputs are checked: build, resume, loop, save (rank 0 writes)."""
    tc = config.train
    device = training_device(tc.device, group)
    local_bs = local_batch_size(tc.batch_size, group, len(dataset))
    seed_everything(tc.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_model(config).to(device)
    main_opt, club_opt, scheduler = make_optimizers(model, config)
    loader_gen = torch.Generator().manual_seed(tc.seed)
    sampler = EpochSampler(len(dataset), tc.seed, group.rank, group.world)
    loader = DataLoader(dataset, batch_size=local_bs, sampler=sampler, drop_last=True, num_workers=tc.num_workers,
                        generator=loader_gen, pin_memory=device.type == "cuda")
    per_epoch = (len(dataset) // group.world) // local_bs
    state, monitor = TrainState(), Monitor(model.modalities, config.model.codebook_size)
    if ckpt is not None:
        _resume(ckpt, resume, model, main_opt, club_opt, scheduler, loader_gen, state, monitor, group)
    total = next(s for s in (steps, tc.max_steps, tc.epochs * per_epoch) if s is not None)
    if total < 1:
        raise ValueError(f"train.epochs={tc.epochs} gives no optimiser step ({per_epoch} per epoch); expected >= 1")
    if ckpt is not None and total <= state.step:
        raise ValueError(f"cannot resume {resume} (step {state.step}) for {total} steps: the step count is the "
                         f"total including the checkpoint's, so it must exceed {state.step}")
    with group.together(f"the free-space check of {out_dir}"):
        if out_dir is not None:
            check_space(out_dir, checkpoint_bytes(model, main_opt, club_opt),
                        planned_checkpoints(tc, state.step, total, per_epoch))
    trainer = Trainer(model, main_opt, club_opt, config, device, group, net=data_parallel(model, group, device))
    identity = data_identity(config, dataset)
    epoch_loader_state = loader_gen.get_state()

    def save(name: str) -> None:
        if out_dir is not None:
            optimizers = {"main": main_opt.state_dict(), "scheduler": scheduler.state_dict(),
                          **({"club": club_opt.state_dict()} if club_opt is not None else {})}
            # mid-epoch: the loader generator as it was before this epoch's iterator drew from it, which is what a
            # resume restores before drawing again; so the file equals the uninterrupted run's, byte for byte
            loader_state = epoch_loader_state if state.in_epoch else loader_gen.get_state()
            save_checkpoint(out_dir / name, config=config, model=model, step=state.step, epoch=state.epoch,
                            optimizers=optimizers, loader_gen=loader_state, history=state.history,
                            position={"epoch": state.epoch, "batch": state.in_epoch}, monitor=monitor.state(),
                            data=identity)

    bar = tqdm(total=total, initial=state.step, disable=not (progress and group.is_main), desc="pretrain",
               dynamic_ncols=True)
    try:
        while state.step < total:
            sampler.start(state.epoch, state.in_epoch * local_bs)
            epoch_loader_state = loader_gen.get_state()
            for batch in loader:
                terms, codes, stats = trainer.step(_move(batch, device))
                state.step, state.in_epoch = state.step + 1, state.in_epoch + 1
                monitor.add(terms, codes, stats)
                if state.step % tc.log_every == 0 or state.step == total:
                    entry = {"step": state.step, "epoch": state.epoch, "lr": main_opt.param_groups[0]["lr"],
                             **monitor.summary(group)}
                    monitor.reset()
                    if group.is_main:
                        state.history.append(entry)
                        if log_fn is not None:
                            log_fn(entry)
                    bar.set_postfix(loss=f"{entry['loss']:.3f}")
                bar.update(1)
                if state.in_epoch == per_epoch:                  # epoch boundary: LR schedule, epoch checkpoint
                    scheduler.step()
                    state.epoch, state.in_epoch = state.epoch + 1, 0
                    if tc.epoch_ckpts:
                        save(f"epoch-{state.epoch - 1}.pt")
                if (tc.ckpt_every and state.step % tc.ckpt_every == 0) or state.step in tc.snapshot_steps:
                    save(snapshot_name(state.step))
                if state.step >= total:
                    break
        save("final.pt")
    finally:
        bar.close()
        model.global_batch = False             # a model used after training runs on one process's rows
    model.step, model.metrics = state.step, state.history[-1] if state.history else {}
    model.data_identity = identity
    return model, state.history














# Train fields that change what a step computes: a resumed run must keep them (the others, e.g. max_steps, epochs,
# device, log_every or checkpoint cadence, may change).
RESUME_FIXED = ("lr", "milestones", "lr_gamma", "grad_clip", "batch_size", "seed", "precision", "fast")


def check_resume(path, config: Config, dataset: Dataset) -> dict:
    """The checkpoint at ``path`` after checking that ``config`` and ``dataset`` continue it: the same model config,
    the same :data:`RESUME_FIXED` train fields and the same data (config's data section, and the dataset's
    identity where both carry one); a ValueError naming every differing field otherwise."""
    ckpt = read_checkpoint(path, "cpu")
    stored = checkpoint_config(ckpt, path)
    if stored.model != config.model:
        differ = [f"model.{k}" for k, v in stored.model.__dict__.items() if getattr(config.model, k) != v]
        raise ValueError(f"cannot resume {path}: its model config differs from the one given ({', '.join(differ)})")
    differ = [f"train.{k} ({getattr(stored.train, k)!r} -> {getattr(config.train, k)!r})" for k in RESUME_FIXED
              if getattr(stored.train, k) != getattr(config.train, k)]
    differ += [f"data.{k} ({v!r} -> {getattr(config.data, k)!r})" for k, v in stored.data.__dict__.items()
               if getattr(config.data, k) != v]
    differ += [f"data {d}" for d in data_mismatch(ckpt.get("data"), data_identity(config, dataset))]
    if differ:
        raise ValueError(f"cannot resume {path}: settings differ from the checkpoint's (stored -> given): "
                         f"{', '.join(differ)}; a resumed run must compute what the original would have: resume with the checkpoint's "
                         "values or start a new run")
    return ckpt


def _resume(ckpt: dict, path, model: UniCode, main_opt, club_opt, scheduler, loader_gen: torch.Generator,
            state: TrainState, monitor: Monitor, group: ProcessGroup) -> None:
    """Load everything a run needs to continue exactly from the checkpoint ``ckpt`` (read from ``path``)."""
    load_model_state(model, ckpt["model"], path)
    main_opt.load_state_dict(ckpt["optimizers"]["main"])
    scheduler.load_state_dict(ckpt["optimizers"]["scheduler"])
    if club_opt is not None:
        club_opt.load_state_dict(ckpt["optimizers"]["club"])
    set_rng_state(ckpt["rng"], loader_gen)
    state.step, state.epoch = int(ckpt["step"]), int(ckpt["epoch"])
    state.in_epoch = int(ckpt.get("position", {}).get("batch", 0))
    state.history = list(ckpt.get("history", []))
    if ckpt.get("monitor") is not None and group.is_main:   # the open logging window continues too (under DDP:
        monitor.load(ckpt["monitor"])                       # rank 0's part of it; the others start empty)
