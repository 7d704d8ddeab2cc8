"""DistributedDataParallel on CPU (gloo, 2 processes spawned with torch.multiprocessing, no torchrun).

Two regimes, both with dropout 0 and the same seed on every rank:
* ``exact``: reconstruction + commitment + MM-EMA + code reset (no in-batch contrastive term). Gradients are
  averaged across ranks and the codebook all-reduces its counts and sums, so 2 ranks x 4 rows must reproduce one
  process on the 8-row concatenated batch up to float32 summation order: |diff| < 1e-4 after 3 Adam steps
  (lr 1e-3, so each parameter moves at most 3e-3).
* ``unicode``: the full objective. CPC, CMCM and the CLUB mi bound use in-batch negatives of each rank's 4 rows,
  which differs from one process's 8 rows by design (as in any DDP contrastive training; measured: the two runs
  end about 0.5x their travelled distance apart after 3 steps), so here the check is cross-rank identity of every
  parameter and buffer (the CLUB estimators' gradients are averaged too), which is exact.
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cmg_lib.config import preset
from cmg_lib.train import pretrain

STEPS = 3
CONFIGS = {
    "exact": ("tiny", "baseline", ["model.mm_ema=true", "model.reset_code=true"]),
    "unicode": ("tiny", "unicode", []),
}


def _config(name):
    p, method, extra = CONFIGS[name]
    return preset(p, method, ["train.batch_size=8", "model.dropout=0.0", "model.reset_window=2", *extra])


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from conftest import FakeDataset
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name in CONFIGS:
            cfg = _config(name)
            model, history = pretrain(cfg, FakeDataset(cfg, n=16), steps=STEPS, progress=False)
            torch.save({"state": model.state_dict(), "history": history}, os.path.join(out_dir, f"{name}-{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return {name: [torch.load(out / f"{name}-{r}.pt", weights_only=True) for r in range(2)] for name in CONFIGS}


def _single(name, make_dataset):
    torch.set_num_threads(1)
    cfg = _config(name)
    model, history = pretrain(cfg, make_dataset(cfg, n=16), steps=STEPS, progress=False)
    return model.state_dict(), history


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ranks_hold_identical_models(ddp_runs, name):
    r0, r1 = ddp_runs[name]
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key      # codebook buffers, CLUB nets included
    assert len(r0["history"]) == 1 and r1["history"] == []               # only rank 0 logs


def test_ddp_matches_one_process_on_the_concatenated_batch(ddp_runs, make_dataset):
    state, history = _single("exact", make_dataset)
    ddp = ddp_runs["exact"][0]
    assert _max_diff(state, ddp["state"]) < 1e-4
    assert torch.allclose(state["codebook.embedding"], ddp["state"]["codebook.embedding"], atol=1e-5)
    assert abs(history[-1]["loss"] - ddp["history"][-1]["loss"]) < 1e-3 * abs(history[-1]["loss"])
