"""Score per-position outputs: decode each half with an inference config, then the official a-mAP.

The one function that training's validation, the search (trials and their NMS windows)
and the ensembles call to turn ``{game: {half: [frames, 17]}}`` into a score. Numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from astra.config import InferenceConfig
from astra.data.labels import Annotations
from astra.evaluation.average_map import AverageMAP, EvaluationError, evaluate_dense
from astra.postprocess.decode import dense_detections

# {game: {half: [frames at 2 fps, 17]}}: the per-position outputs of a split.
Outputs = Mapping[str, Mapping[int, np.ndarray]]


def score_outputs(
    labels: Mapping[str, Annotations],
    outputs: Outputs,
    inference: InferenceConfig,
    metric: str | Sequence[float] = "tight",
    *,
    allow_missing: bool = False,
) -> AverageMAP:
    """The Average-mAP of ``outputs`` decoded with ``inference`` (NMS and windows) against ``labels``.

    Every game of ``labels`` must have outputs for both halves (unless ``allow_missing``:
    then a game without outputs scores as no detections); outputs of other games are not used.
    """
    detections: dict[str, list[np.ndarray]] = {}
    for game in labels:
        if game not in outputs:
            continue  # evaluate_dense names the missing games, or scores them empty
        halves = outputs[game]
        if sorted(halves) != [1, 2]:
            raise EvaluationError(f"game {game!r}: expected outputs of halves 1 and 2, got {sorted(halves)}")
        detections[game] = [dense_detections(np.asarray(halves[half]), inference) for half in (1, 2)]
    return evaluate_dense(labels, detections, metric, allow_missing=allow_missing)
