"""The build's figures decode each half once for both metrics: the same as score_outputs per metric."""

from __future__ import annotations

import numpy as np

from astra.classes import NUM_CLASSES
from astra.config import InferenceConfig
from astra.data.labels import Annotations
from astra.ensemble.build import _figures
from astra.evaluation.outputs import score_outputs


def test_figures_equal_score_outputs_for_each_metric() -> None:
    rng = np.random.default_rng(0)
    labels, outputs = {}, {}
    for g in range(3):
        count = 40
        half = np.sort(rng.integers(1, 3, count)).astype(np.int8)
        labels[f"league/season/game{g}"] = Annotations(
            half=half,
            position_ms=rng.integers(0, 600_000, count).astype(np.int64),
            class_index=rng.integers(0, NUM_CLASSES, count).astype(np.int16),
            visible=rng.random(count) > 0.2,
        )
        outputs[f"league/season/game{g}"] = {
            h: np.clip(rng.normal(0.02, 0.05, (1200, NUM_CLASSES)), 0, 1).astype(np.float32) for h in (1, 2)
        }
    inference = InferenceConfig()
    figures = _figures(labels, outputs, inference)
    tight = score_outputs(labels, outputs, inference, "tight")
    loose = score_outputs(labels, outputs, inference, "loose")
    assert figures["tight"] == tight.a_mAP and figures["loose"] == loose.a_mAP
    assert figures["visible"] == tight.a_mAP_visible and figures["unshown"] == tight.a_mAP_unshown
    assert figures["per_class"] == [float(v) for v in tight.a_mAP_per_class]
