"""Shared fixtures: seeded fake batches and datasets with a config's modality shapes (no real data needed)."""
from __future__ import annotations

import pytest
import torch


def fake_batch(config, batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 features ``(batch, T, *feature_shape)`` for every configured modality, plus a label."""
    g = torch.Generator().manual_seed(seed)
    out = {s.name: torch.randn(batch, config.model.segments, *s.feature_shape, generator=g)
           for s in config.model.modalities}
    out["label"] = torch.arange(batch)
    return out


class FakeDataset(torch.utils.data.Dataset):
    """``n`` fixed random items in the batch contract (modalities + ``label`` + ``index``)."""

    def __init__(self, config, n: int = 16, seed: int = 0):
        self.rows = fake_batch(config, n, seed)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**{k: v[i] for k, v in self.rows.items()}, "index": torch.tensor(i)}


@pytest.fixture
def make_batch():
    return fake_batch


@pytest.fixture
def make_dataset():
    return FakeDataset


@pytest.fixture(scope="session")
def avdigits_smoke(tmp_path_factory):
    """The smoke-scale AV-Digits build (seed 0), built once per test session into a temp cache; returns its root."""
    from cmg_lib.data.avdigits.build import ensure_built

    root = tmp_path_factory.mktemp("avdigits_cache")
    ensure_built("smoke", 0, root)
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    """The test models are tiny: intra-op threads only add oversubscription on a 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
