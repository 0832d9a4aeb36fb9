"""The build's figures read each game once and decode it for every inference and both metrics,
in one process or several: the same as score_outputs per inference and metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astra import per_position
from astra.classes import NUM_CLASSES
from astra.config import ExperimentConfig, InferenceConfig, replace
from astra.data.labels import Annotations
from astra.ensemble.build import _figures
from astra.evaluation.outputs import score_outputs


@pytest.mark.parametrize("workers", [1, 2])
def test_figures_equal_score_outputs_for_each_inference_and_metric(tmp_path: Path, workers: int) -> None:
    rng = np.random.default_rng(0)
    labels = {}
    for g in range(3):
        count = 40
        half = np.sort(rng.integers(1, 3, count)).astype(np.int8)
        game = f"league/season/game{g}"
        labels[game] = Annotations(
            half=half,
            position_ms=rng.integers(0, 600_000, count).astype(np.int64),
            class_index=rng.integers(0, NUM_CLASSES, count).astype(np.int16),
            visible=rng.random(count) > 0.2,
        )
        halves = {
            h: np.clip(rng.normal(0.02, 0.05, (1200, NUM_CLASSES)), 0, 1).astype(np.float32) for h in (1, 2)
        }
        per_position.write_game(tmp_path, game, halves)
    outputs = {game: per_position.read_game(tmp_path, game) for game in labels}  # as written (float16)
    paper = InferenceConfig()
    wide = replace(ExperimentConfig(), {"inference.nms_windows_seconds": [30.0] * NUM_CLASSES}).inference
    figures = _figures(labels, tmp_path, {"paper": paper, "wide": wide}, workers=workers)
    assert figures["paper"]["tight"] != figures["wide"]["tight"]  # each inference decoded with its own
    for name, inference in (("paper", paper), ("wide", wide)):
        tight = score_outputs(labels, outputs, inference, "tight")
        loose = score_outputs(labels, outputs, inference, "loose")
        got = figures[name]
        assert got["tight"] == tight.a_mAP and got["loose"] == loose.a_mAP
        assert got["visible"] == tight.a_mAP_visible and got["unshown"] == tight.a_mAP_unshown
        assert got["per_class"] == [float(v) for v in tight.a_mAP_per_class]
