"""The results files an ensemble writes (astra.submission._results_bytes): byte for byte what
``json.dumps`` of the document writes, as the function did before it was written from a template."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astra.classes import CLASSES
from astra.submission import Spots, _results_bytes


def previous_results_bytes(game: str, spots: Spots) -> bytes:
    seconds = (spots.position_ms // 1000).tolist()
    predictions = [
        {
            "gameTime": f"{half} - {second // 60}:{second % 60:02d}",
            "label": CLASSES[class_index],
            "position": str(position),
            "half": str(half),
            "confidence": repr(confidence),
        }
        for half, second, position, class_index, confidence in zip(
            spots.half.tolist(),
            seconds,
            spots.position_ms.tolist(),
            spots.class_index.tolist(),
            spots.confidence.tolist(),
            strict=True,
        )
    ]
    document = {"UrlLocal": game, "predictions": predictions}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


@pytest.mark.parametrize("count", [0, 1, 5, 3000])
@pytest.mark.parametrize(
    "game", ["england_epl/2016-2017/2017-01-14 - 20-30 Leicester 0 - 3 Chelsea", 'a/"é\\ü\t']
)
def test_bytes_equal_json_dumps(count: int, game: str) -> None:
    rng = np.random.default_rng(count)
    confidence = rng.random(count)
    confidence[::3] *= 1e-7  # exponents in repr
    confidence[1::7] = 1.0
    spots = Spots(
        rng.integers(1, 3, count),
        rng.integers(0, 8_000_000, count),  # past 100 minutes too
        rng.integers(0, len(CLASSES), count),
        confidence,
    )
    assert _results_bytes(game, spots, "test") == previous_results_bytes(game, spots)
