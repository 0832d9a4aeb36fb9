"""The statistics of the P1 report on numbers worked out by hand, and the bootstrap on tiny games."""

from __future__ import annotations

import math

import numpy as np
import pytest

from astra.data.labels import Annotations
from astra.evaluation.average_map import evaluate_dense
from astra.protocols.statistics import (
    EXACT_SIGN_FLIPS_UP_TO,
    SAMPLED_SIGN_FLIPS,
    bootstrap_indices,
    difference_interval,
    mean_and_std,
    mean_interval,
    resampled_a_maps,
    sign_flip_p_value,
    smallest_p_value,
)


def test_a_constant_positive_difference_over_five_seeds_has_p_two_in_thirty_two() -> None:
    # Of the 32 sign patterns only "all +" and "all -" reach |mean| = 0.01.
    assert sign_flip_p_value([0.01] * 5) == pytest.approx(2 / 32)
    assert smallest_p_value(5) == pytest.approx(2 / 32)


def test_the_p_value_of_three_differences_counted_by_hand() -> None:
    # The 8 sums of +-1 +-2 +-0.5: 3.5, 2.5, -0.5, -1.5, 1.5, 0.5, -2.5, -3.5. The observed one is
    # 2.5: four of the eight are at least as far from 0.
    assert sign_flip_p_value([1.0, 2.0, -0.5]) == pytest.approx(4 / 8)
    assert sign_flip_p_value([-1.0, -2.0, 0.5]) == pytest.approx(4 / 8)  # two-sided: symmetric


def test_no_difference_has_p_one_and_one_pair_can_show_nothing() -> None:
    assert sign_flip_p_value([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_p_value([0.3]) == 1.0
    assert smallest_p_value(1) == 1.0


def test_above_the_exact_limit_the_patterns_are_sampled_with_a_seed() -> None:
    n = EXACT_SIGN_FLIPS_UP_TO + 1
    p = sign_flip_p_value([0.01] * n, seed=4)
    assert p == sign_flip_p_value([0.01] * n, seed=4)
    # Only the all-equal patterns reach the observed mean: a few hits in 65,536 draws at most.
    assert 1 / (1 + SAMPLED_SIGN_FLIPS) <= p < 1e-3
    assert smallest_p_value(n) == 1 / (1 + SAMPLED_SIGN_FLIPS)


def test_bad_differences_are_refused() -> None:
    with pytest.raises(ValueError, match="paired differences"):
        sign_flip_p_value([])
    with pytest.raises(ValueError, match="finite"):
        sign_flip_p_value([0.1, math.nan])


def test_mean_and_sample_standard_deviation() -> None:
    assert mean_and_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sqrt(((1-2)^2 + 0 + (3-2)^2) / 2)
    mean, std = mean_and_std([0.4])
    assert mean == 0.4 and math.isnan(std)


def test_bootstrap_indices_are_deterministic_for_a_seed() -> None:
    first = bootstrap_indices(7, 50, seed=3)
    assert first.shape == (50, 7) and first.min() >= 0 and first.max() < 7
    np.testing.assert_array_equal(first, bootstrap_indices(7, 50, seed=3))
    assert not np.array_equal(first, bootstrap_indices(7, 50, seed=4))
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_indices(7, 0, seed=3)


FRAMES = 600  # 5 minutes at 2 frames per second


def _game(events: list[tuple[int, int, int]]) -> Annotations:
    """Annotations of (half, second, class) events, all visible."""
    return Annotations(
        half=np.array([h for h, _, _ in events], dtype=np.int8),
        position_ms=np.array([1000 * s for _, s, _ in events], dtype=np.int64),
        class_index=np.array([c for _, _, c in events], dtype=np.int16),
        visible=np.ones(len(events), dtype=bool),
    )


def _detections(spots: list[tuple[int, int, int, float]]) -> list[np.ndarray]:
    """Dense detections of (half, second, class, score) spots; -1 elsewhere."""
    halves = [np.full((FRAMES, 17), -1.0), np.full((FRAMES, 17), -1.0)]
    for half, second, class_index, score in spots:
        halves[half - 1][2 * second, class_index] = score
    return halves


LABELS = {
    "a": _game([(1, 10, 0), (1, 100, 3), (2, 50, 3)]),
    "b": _game([(1, 20, 5), (2, 200, 0)]),
    "c": _game([(2, 30, 3), (2, 250, 12)]),
}
GAMES = list(LABELS)
# A run that finds most events (some a few seconds off), and one that finds fewer.
GOOD = {
    "a": _detections([(1, 10, 0, 0.9), (1, 102, 3, 0.8), (2, 50, 3, 0.4)]),
    "b": _detections([(1, 20, 5, 0.7), (2, 150, 0, 0.6)]),
    "c": _detections([(2, 31, 3, 0.95), (2, 250, 12, 0.5), (1, 80, 12, 0.3)]),
}
POOR = {
    "a": _detections([(1, 40, 0, 0.9), (1, 100, 3, 0.2)]),
    "b": _detections([(1, 60, 5, 0.7)]),
    "c": _detections([(1, 30, 3, 0.95)]),
}


def test_the_identity_resample_scores_as_the_evaluator_and_a_repeated_game_as_itself() -> None:
    identity = np.arange(len(GAMES))[None, :]
    (score,) = resampled_a_maps(LABELS, GOOD, GAMES, identity)
    assert score == pytest.approx(evaluate_dense(LABELS, GOOD).a_mAP, abs=1e-12)
    # Game "a" drawn three times: precision and recall are those of "a" alone.
    (repeated,) = resampled_a_maps(LABELS, GOOD, GAMES, np.array([[0, 0, 0]]))
    alone = evaluate_dense({"a": LABELS["a"]}, {"a": GOOD["a"]}).a_mAP
    assert repeated == pytest.approx(alone, abs=1e-12)


def test_the_bootstrap_interval_of_identical_rows_is_zero() -> None:
    indices = bootstrap_indices(len(GAMES), 40, seed=0)
    scores = np.stack([resampled_a_maps(LABELS, GOOD, GAMES, indices)] * 3)  # three identical seeds
    assert difference_interval(scores, scores.copy()) == (0.0, 0.0)


def test_the_bootstrap_interval_is_deterministic_and_puts_the_better_run_above() -> None:
    def interval(seed: int) -> tuple[float, float]:
        indices = bootstrap_indices(len(GAMES), 60, seed=seed)
        good = resampled_a_maps(LABELS, GOOD, GAMES, indices)[None]
        poor = resampled_a_maps(LABELS, POOR, GAMES, indices)[None]
        return difference_interval(good, poor)

    low, high = interval(seed=5)
    assert (low, high) == interval(seed=5)
    assert 0 < low <= high
    low_single, high_single = mean_interval(
        resampled_a_maps(LABELS, GOOD, GAMES, bootstrap_indices(len(GAMES), 60, seed=5))[None]
    )
    assert 0 <= low_single <= evaluate_dense(LABELS, GOOD).a_mAP <= high_single <= 1


def test_intervals_of_runs_on_other_resamples_are_refused() -> None:
    with pytest.raises(ValueError, match="same resamples"):
        difference_interval(np.zeros((2, 10)), np.zeros((2, 11)))
