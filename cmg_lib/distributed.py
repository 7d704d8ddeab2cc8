"""Data-parallel plumbing in one place: the process group, row gathering and buffer reductions.

Every function is a no-op (or the identity) in a single process, so the model, the codebook and the loop call them
unconditionally. ``config.train.batch_size`` is the global batch: with W processes each takes ``batch_size / W``
rows, and :func:`gather_rows` / :func:`all_reduce_` make the objective and the codebook those of one process on the
concatenated batch (tests/test_ddp.py).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def is_distributed() -> bool:
    """Whether an initialised process group with more than one process exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class RankFailed(RuntimeError):
    """Another rank failed a step that every rank must pass (:meth:`ProcessGroup.together`)."""


class ProcessGroup:
    """Process-group facts; :meth:`join` joins a torchrun launch (env RANK / WORLD_SIZE) or an existing group."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, owned: bool = False):
        self.rank, self.world, self.local_rank, self.owned = rank, world, local_rank, owned

    @classmethod
    def join(cls, device: str) -> "ProcessGroup":
        group = cls()
        if dist.is_available() and dist.is_initialized():
            group.rank, group.world = dist.get_rank(), dist.get_world_size()
        elif dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            group.rank, group.world, group.owned = dist.get_rank(), dist.get_world_size(), True
        group.local_rank = int(os.environ.get("LOCAL_RANK", group.rank))
        return group

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run the block on every rank, then agree on its outcome (one all-reduce of a flag): an error is raised
        on the rank where it happened and :class:`RankFailed` naming ``what`` and that rank on every other one,
        so no rank is left waiting in a later collective for one that stopped. In one process: the block."""
        error = None
        try:
            yield
        except Exception as err:        # an interrupt (BaseException) is not waited for: it ends the process
            error = err
        if self.active:
            device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
            failed = torch.tensor([self.rank if error is not None else -1], device=device)
            dist.all_reduce(failed, op=dist.ReduceOp.MAX)
            if error is None and int(failed) >= 0:
                raise RankFailed(f"rank {int(failed)} failed {what}; rank {self.rank} stops too (rank "
                                 f"{int(failed)}'s error says why)")
        if error is not None:
            raise error

    def close(self) -> None:
        """Leave the process group if :meth:`join` created it."""
        if self.owned:
            dist.destroy_process_group()
            self.owned = False


def gather_rows(x: Tensor) -> Tensor:
    """Rows of ``x`` from every rank, concatenated in rank order (identity without an initialised process group).

    Differentiable: ``torch.distributed.nn.functional.all_gather`` sums the gradients of every rank's copy of the
    global loss into each rank's own rows in backward, i.e. ``world`` times the single-process gradient, which
    DDP's averaging over ``world`` ranks turns back into exactly the single-process gradient. Integer tensors (code
    indices) are gathered without autograd. Needs equal row counts on every rank (``pretrain`` drops last batches).
    """
    if not is_distributed():
        return x
    if x.requires_grad:
        import torch.distributed.nn.functional as dist_fn     # imports torch.distributed.nn: only when gathering
        return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_(tensor: Tensor, op: str = "sum") -> Tensor:
    """All-reduce ``tensor`` in place across processes (``op`` in sum/max/min); a no-op in a single process."""
    if op not in _REDUCE_OPS:
        raise ValueError(f"all_reduce_ op must be one of {tuple(_REDUCE_OPS)}, got {op!r}")
    if is_distributed():
        dist.all_reduce(tensor, op=_REDUCE_OPS[op])
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy; a no-op in a single process."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def training_device(name: str, group: ProcessGroup) -> torch.device:
    """The device of this process: ``cuda`` becomes ``cuda:<local rank>`` under DDP, else the current GPU
    (``torch.cuda.set_device`` needs an index)."""
    if name.startswith("cuda") and ":" not in name:
        name = f"cuda:{group.local_rank if group.active else torch.cuda.current_device()}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def local_batch_size(batch_size: int, group: ProcessGroup, rows: int) -> int:
    if batch_size % group.world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the world size {group.world}")
    local = batch_size // group.world
    if rows // group.world < local:
        raise ValueError(f"dataset has {rows} rows, fewer than one batch of {batch_size}")
    return local


def data_parallel(model: torch.nn.Module, group: ProcessGroup, device: torch.device) -> torch.nn.Module:
    """``model`` itself, or under DDP its wrapper; the contrastive terms then see every rank's rows
    (``UniCode.global_batch``) and DDP leaves the CLUB estimators and the codebook buffers alone."""
    model.global_batch = group.active
    if not group.active:
        return model
    ignore = [f"club.{n}" for n, _ in (model.club.named_parameters() if model.club is not None else [])]
    ignore += [f"codebook.{n}" for n, _ in model.codebook.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False, find_unused_parameters=False)
