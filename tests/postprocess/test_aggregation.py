"""Window aggregation: max per (frame, class), displacement, threshold, edges, overlapping windows."""

from __future__ import annotations

import numpy as np
import pytest

from astra.postprocess.aggregation import AggregationError, aggregate_windows

NUM_CLASSES = 3


def windows(num_windows: int, num_positions: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Empty ``[W, L, C+1]`` scores (all background) and zero displacement."""
    scores = np.zeros((num_windows, num_positions, NUM_CLASSES + 1), dtype=np.float32)
    scores[:, :, 0] = 1.0
    return scores, np.zeros_like(scores)


def reference_aggregate(
    scores: np.ndarray,
    displacement: np.ndarray,
    starts_seconds: np.ndarray,
    num_frames: int,
    outputs_per_second: float,
    threshold: float,
) -> np.ndarray:
    """One vote at a time, as docs/model.md states it, with the documented edge rules."""
    out = np.zeros((num_frames, scores.shape[2] - 1), dtype=np.float32)
    for w in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            own_frame = (float(starts_seconds[w]) * outputs_per_second + j) * 2 / outputs_per_second
            if not 0 <= own_frame < num_frames:
                continue
            for c in range(1, scores.shape[2]):
                if scores[w, j, c] > threshold:
                    position = (
                        float(starts_seconds[w]) * outputs_per_second + j - float(displacement[w, j, c])
                    )
                    frame = min(max(round(position * 2 / outputs_per_second), 0), num_frames - 1)
                    out[frame, c - 1] = max(out[frame, c - 1], scores[w, j, c])
    return out


def test_a_vote_lands_on_its_frame_and_the_background_is_dropped() -> None:
    scores, displacement = windows(1)
    scores[0, 4, 2] = 0.7
    out = aggregate_windows(scores, displacement, [3.0], num_frames=40)
    assert out.shape == (40, NUM_CLASSES) and out.dtype == np.float32
    expected = np.zeros((40, NUM_CLASSES), dtype=np.float32)
    expected[3 * 2 + 4, 1] = 0.7
    np.testing.assert_array_equal(out, expected)


def test_overlapping_windows_keep_the_max_per_frame_and_class() -> None:
    # Window 0 starts at 0 s, window 1 at 2 s: position j of window 1 is position j + 4 of window 0.
    scores, displacement = windows(2)
    scores[0, 6, 1] = 0.3
    scores[1, 2, 1] = 0.9
    scores[0, 7, 1] = 0.8
    scores[1, 3, 1] = 0.2
    scores[1, 3, 3] = 0.5
    out = aggregate_windows(scores, displacement, [0.0, 2.0], num_frames=20)
    assert out[6, 0] == pytest.approx(0.9)
    assert out[7, 0] == pytest.approx(0.8)
    assert out[7, 2] == pytest.approx(0.5)
    assert np.count_nonzero(out) == 3


def test_displacement_moves_the_vote() -> None:
    scores, displacement = windows(1)
    scores[0, 5, 1] = 0.6
    displacement[0, 5, 1] = 2.4  # the action is 2.4 positions before: round(5 - 2.4) = 3
    out = aggregate_windows(scores, displacement, [0.0], num_frames=20)
    assert np.flatnonzero(out[:, 0]).tolist() == [3]
    no_refinement = aggregate_windows(scores, None, [0.0], num_frames=20)
    assert np.flatnonzero(no_refinement[:, 0]).tolist() == [5]


def test_scores_at_or_under_the_threshold_cast_no_vote() -> None:
    scores, displacement = windows(1)
    scores[0, [1, 2, 3], 1] = [0.01, 0.0101, 0.005]
    out = aggregate_windows(scores, displacement, [0.0], num_frames=20, score_threshold=0.01)
    assert np.flatnonzero(out[:, 0]).tolist() == [2]


def test_displaced_votes_are_clamped_to_the_half() -> None:
    scores, displacement = windows(2)
    scores[0, 1, 1] = 0.4
    displacement[0, 1, 1] = 6.0  # frame -5
    scores[1, 8, 2] = 0.6
    displacement[1, 8, 2] = -9.0  # frame 4*2 + 8 + 9 = 25, past the last frame 19
    out = aggregate_windows(scores, displacement, [0.0, 4.0], num_frames=20)
    assert out[0, 0] == pytest.approx(0.4)
    assert out[19, 1] == pytest.approx(0.6)
    assert np.count_nonzero(out) == 2


def test_positions_past_the_end_of_the_half_are_padding() -> None:
    # A 5-s window (10 positions) starting at 8 s over a 10-s half: positions 4..9 are padding.
    scores, displacement = windows(1)
    scores[0, :, 1] = 0.5
    displacement[0, 6, 1] = 3.0  # a padded position, even when displaced into the half
    out = aggregate_windows(scores, displacement, [8.0], num_frames=20)
    assert np.flatnonzero(out[:, 0]).tolist() == [16, 17, 18, 19]


def test_one_output_per_second_votes_on_every_other_frame() -> None:
    scores, displacement = windows(1)
    scores[0, 3, 1] = 0.5
    scores[0, 6, 1] = 0.7
    displacement[0, 6, 1] = 0.25  # (2 + 6 - 0.25) s -> frame round(15.5) = 16 (half to even)
    out = aggregate_windows(scores, displacement, [2.0], num_frames=40, outputs_per_second=1)
    assert np.flatnonzero(out[:, 0]).tolist() == [10, 16]
    assert out[16, 0] == pytest.approx(0.7)


@pytest.mark.parametrize("outputs_per_second", [2, 1])
def test_agrees_with_one_vote_at_a_time_on_random_windows(outputs_per_second: int) -> None:
    rng = np.random.default_rng(outputs_per_second)
    num_windows, num_positions, num_frames = 7, 20, 70
    scores = (rng.random((num_windows, num_positions, NUM_CLASSES + 1)) ** 4).astype(np.float32)
    displacement = rng.normal(0, 4, size=scores.shape).astype(np.float32)
    starts = np.sort(rng.choice(np.arange(-2, 36) / 2, size=num_windows))
    out = aggregate_windows(scores, displacement, starts, num_frames, outputs_per_second, 0.05)
    expected = reference_aggregate(scores, displacement, starts, num_frames, outputs_per_second, 0.05)
    np.testing.assert_array_equal(out, expected)
    assert np.count_nonzero(out) > 20


def test_float16_outputs_are_accepted() -> None:
    scores, displacement = windows(1)
    scores[0, 2, 3] = 0.75
    out = aggregate_windows(scores.astype(np.float16), displacement.astype(np.float16), [0.0], num_frames=20)
    assert out.dtype == np.float32 and out[2, 2] == 0.75


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s, d, t, n: (s[:, :, 0], d, t, n), "background channel"),
        (lambda s, d, t, n: (s, d[:, :5], t, n), "displacement shape"),
        (lambda s, d, t, n: (s, d, t[:1], n), "window starts"),
        (lambda s, d, t, n: (s, d, [0.0, np.nan], n), "finite"),
        (lambda s, d, t, n: (s, d, t, 0), "num_frames"),
        (lambda s, d, t, n: (s, np.full_like(d, np.nan), t, n), "NaN"),
    ],
)
def test_bad_input_raises_a_clear_error(change, message: str) -> None:
    scores, displacement = windows(2)
    scores[:, :, 1] = 0.5
    with pytest.raises(AggregationError, match=message):
        aggregate_windows(*change(scores, displacement, np.array([0.0, 2.0]), 20))
