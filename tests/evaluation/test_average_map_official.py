"""Parity with the official evaluator (``SoccerNet.Evaluation.ActionSpotting``, pip package
``soccernet``): all six values, to 1e-9, on files full of its corner cases.

The official evaluator needs about 2 s (tight) and 5 s (loose) whatever the number of
games, so each fast test scores several games at once; the sweep over many seeds is slow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from astra.evaluation import evaluate_files

KEYS = (
    "a_mAP",
    "a_mAP_per_class",
    "a_mAP_visible",
    "a_mAP_per_class_visible",
    "a_mAP_unshown",
    "a_mAP_per_class_unshown",
)


def assert_same_values(ours: dict[str, Any], official: dict[str, Any]) -> None:
    assert set(ours) == set(KEYS)
    for key in KEYS:
        np.testing.assert_allclose(
            np.asarray(ours[key], dtype=np.float64),
            np.asarray(official[key], dtype=np.float64),
            rtol=0,
            atol=1e-9,
            err_msg=key,
        )


@pytest.mark.parametrize("metric", ["tight", "loose"])
def test_random_games_score_as_with_the_official_evaluator(
    random_case: Callable[..., Any], official: Callable[..., dict[str, Any]], metric: str
) -> None:
    case = random_case(seed=7, num_games=5)
    ours = evaluate_files(case.labels_root, case.predictions_root, metric=metric)
    assert_same_values(ours.to_dict(), official(case.labels_root, case.predictions_root, metric))
    # Not a vacuous comparison: some predictions hit, some miss, in every variant.
    assert 0 < ours.a_mAP < 1 and 0 < ours.a_mAP_visible < 1 and 0 < ours.a_mAP_unshown < 1


def test_one_tolerance_has_no_average_and_no_rescaling_as_official(
    random_case: Callable[..., Any], official: Callable[..., dict[str, Any]]
) -> None:
    case = random_case(seed=8, num_games=3)
    ours = evaluate_files(case.labels_root, case.predictions_root, metric="at2")
    assert_same_values(ours.to_dict(), official(case.labels_root, case.predictions_root, "at2"))


def test_a_wider_tolerance_can_score_lower_with_competing_events_as_official(
    tmp_path: Path, official: Callable[..., dict[str, Any]]
) -> None:
    """Greedy matching in time order: with 2 s, the first event takes the best prediction
    that the second one needed, and the second one then has none (with 1 s both match)."""
    game = "league/2016-2017/2017-01-01 - 20-00 A 1 - 0 B"
    frame = 200  # frames at 2 per second
    events = [(frame, "visible"), (frame + 3, "visible")]
    predictions = [(frame, "0.5"), (frame + 2, "0.9")]
    _write_game(tmp_path, game, events, predictions)
    labels, results = tmp_path / "labels", tmp_path / "predictions"
    at_one_second = evaluate_files(labels, results, metric="at1")
    at_two_seconds = evaluate_files(labels, results, metric="at2")
    assert at_one_second.a_mAP > at_two_seconds.a_mAP
    assert_same_values(at_one_second.to_dict(), official(labels, results, "at1"))
    assert_same_values(at_two_seconds.to_dict(), official(labels, results, "at2"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 112))
@pytest.mark.parametrize("metric", ["tight", "loose"])
def test_many_random_cases_score_as_with_the_official_evaluator(
    random_case: Callable[..., Any], official: Callable[..., dict[str, Any]], seed: int, metric: str
) -> None:
    case = random_case(seed=seed, num_games=1 + seed % 4)
    ours = evaluate_files(case.labels_root, case.predictions_root, metric=metric)
    assert_same_values(ours.to_dict(), official(case.labels_root, case.predictions_root, metric))


def _write_game(
    root: Path, game: str, events: list[tuple[int, str]], predictions: list[tuple[int, str]]
) -> None:
    """One game, events and predictions of class Foul in half 1, given as (frame, ...)."""
    annotations = [
        {"gameTime": "1 - 01:40", "label": "Foul", "position": str(frame * 500), "visibility": visibility}
        for frame, visibility in events
    ]
    entries = [
        {"label": "Foul", "position": str(frame * 500), "half": "1", "confidence": score}
        for frame, score in predictions
    ]
    (root / "labels" / game).mkdir(parents=True)
    (root / "labels" / game / "Labels-v2.json").write_text(json.dumps({"annotations": annotations}))
    (root / "predictions" / game).mkdir(parents=True)
    (root / "predictions" / game / "results_spotting.json").write_text(json.dumps({"predictions": entries}))
