"""Evaluation: the official SoccerNet-v2 average-mAP, fast and exact (numpy only, no torch).

``evaluate_spots`` and ``evaluate_dense`` score in-memory predictions (inside training
and search); ``evaluate_files`` scores a predictions folder or submission zip against
the label files, as ``astra evaluate`` does; ``KeyedLabels`` scores detections given as
arrays against labels keyed once (for scoring the same labels many times); ``evaluate_files_metrics`` and
``evaluate_spots_metrics`` give several metrics from one reading of the inputs;
``score_outputs`` decodes per-position outputs with an inference config (NMS and its
windows) and scores them.
"""

from astra.evaluation.average_map import (
    METRICS,
    AverageMAP,
    EvaluationError,
    KeyedLabels,
    deltas_of_metric,
    evaluate_dense,
    evaluate_files,
    evaluate_files_metrics,
    evaluate_spots,
    evaluate_spots_metrics,
)
from astra.evaluation.outputs import Outputs, score_outputs

__all__ = [
    "METRICS",
    "AverageMAP",
    "EvaluationError",
    "KeyedLabels",
    "Outputs",
    "deltas_of_metric",
    "evaluate_dense",
    "evaluate_files",
    "evaluate_files_metrics",
    "evaluate_spots",
    "evaluate_spots_metrics",
    "score_outputs",
]
