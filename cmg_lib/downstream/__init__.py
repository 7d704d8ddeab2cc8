"""Downstream cross-modal generalisation tasks of paper Sec. 5 on a frozen pre-trained Uni-Code model.

``run_task(task, ...)`` runs one task (``TASKS``: ave, avvp, ave_avvp, ucf_vgg, avs, retrieval) and returns its result
record (metrics in %); ``avs_predictions`` gives masks for Fig. 5; ``read_results`` / ``runs_frame`` read the
JSON-lines results; ``clear_code_cache`` drops the frozen codes kept between runs.
"""
from __future__ import annotations

from .common import clear_code_cache
from .reference import RawFeatures, raw_features
from .results import append_result, direction_label, read_results, runs_frame
from .tasks import TASKS, avs_predictions, run_task

__all__ = ["TASKS", "run_task", "RawFeatures", "raw_features", "avs_predictions", "append_result", "direction_label",
           "read_results", "runs_frame", "clear_code_cache"]
