"""Evaluation: the official SoccerNet-v2 average-mAP, fast and exact (numpy only, no torch).

``evaluate_spots`` and ``evaluate_dense`` score in-memory predictions (inside training
and search); ``evaluate_files`` scores a predictions folder or submission zip against
the label files, as ``astra evaluate`` does.
"""

from astra.evaluation.average_map import (
    METRICS,
    AverageMAP,
    EvaluationError,
    deltas_of_metric,
    evaluate_dense,
    evaluate_files,
    evaluate_spots,
)

__all__ = [
    "METRICS",
    "AverageMAP",
    "EvaluationError",
    "deltas_of_metric",
    "evaluate_dense",
    "evaluate_files",
    "evaluate_spots",
]
