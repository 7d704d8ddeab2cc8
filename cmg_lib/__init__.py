"""cmg_lib: a reference reproduction of Uni-Code (Xia et al., NeurIPS 2023, "Achieving Cross Modal Generalization
with Multimodal Unified Representation").

Public API (imported lazily so ``import cmg_lib`` stays fast and touches no network):

* ``preset(name, method, overrides)`` / ``PRESETS`` / ``METHODS`` / ``Config``: typed configuration (presets.py,
  config.py)
* ``build_model(config)``: the Uni-Code model for any 2-3 modalities (model.py)
* ``pretrain(config, dataset, ...)``: the pre-training loop (train.py); ``load_checkpoint(path)``: checkpoints
  (checkpoint.py)
* ``load_dataset(data, subset, split, ...)``: embedded AV-Digits or official released features (data/)
* ``run_task(task, ...)``: the downstream cross-modal generalisation protocols of Sec. 5 (downstream/)
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "preset": "cmg_lib.presets",
    "PRESETS": "cmg_lib.presets",
    "METHODS": "cmg_lib.presets",
    "Config": "cmg_lib.config",
    "ModelConfig": "cmg_lib.config",
    "TrainConfig": "cmg_lib.config",
    "build_model": "cmg_lib.model",
    "pretrain": "cmg_lib.train",
    "load_checkpoint": "cmg_lib.checkpoint",
    "load_dataset": "cmg_lib.data",
    "run_task": "cmg_lib.downstream",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cmg_lib' has no attribute {name!r}")
