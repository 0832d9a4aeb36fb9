"""Soft-NMS and hard NMS: invariants, and agreement with a plain loop written from docs/model.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

from astra.classes import NUM_CLASSES, PAPER_SOFT_NMS_WINDOWS_SECONDS
from astra.postprocess.nms import Detections, NMSError, decay_factors, hard_nms, soft_nms

THRESHOLD = 0.01


def reference_nms(
    per_position: np.ndarray,
    windows_seconds: list[float],
    frames_per_second: float = 2,
    threshold: float = THRESHOLD,
    decay: str = "pow2",
) -> list[tuple[int, int, float]]:
    """Straight from docs/model.md, one score at a time: per class, take the max (earliest on ties),
    keep it, multiply every score with |offset| < window/2 by the decay factor, drop those
    under the threshold, repeat while the max is at or above the threshold."""
    num_frames, num_classes = per_position.shape
    kept = []
    for c in range(num_classes):
        scores = [float(value) for value in per_position[:, c]]
        half_window = windows_seconds[c] * frames_per_second / 2
        while True:
            best = 0
            for frame in range(num_frames):
                if scores[frame] > scores[best]:
                    best = frame
            if scores[best] < threshold:
                break
            kept.append((best, c, scores[best]))
            for frame in range(num_frames):
                offset = abs(frame - best)
                if offset < half_window:
                    ratio = offset / half_window
                    factor = {"pow2": ratio * ratio, "linear": ratio, "sqrt": math.sqrt(ratio), "hard": 0.0}[
                        decay
                    ]
                    scores[frame] = scores[frame] * factor
                    if scores[frame] < threshold:
                        scores[frame] = 0.0
    return kept


def as_tuples(detections: Detections) -> list[tuple[int, int, float]]:
    return list(
        zip(
            detections.frame.tolist(), detections.class_index.tolist(), detections.score.tolist(), strict=True
        )
    )


def random_outputs(seed: int, num_frames: int = 90, num_classes: int = 3) -> tuple[np.ndarray, list[float]]:
    """Sparse bumpy scores, some quantized so that ties occur, and random (fractional) windows."""
    rng = np.random.default_rng(seed)
    scores = rng.random((num_frames, num_classes)) ** 3
    scores[rng.random((num_frames, num_classes)) < 0.4] = 0
    if seed % 2:
        scores = np.round(scores * 8) / 8
    windows = rng.uniform(0.4, 25, size=num_classes).tolist()
    return scores.astype(np.float32), windows


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("decay", ["pow2", "linear", "sqrt", "hard"])
def test_agrees_exactly_with_the_plain_loop(seed: int, decay: str) -> None:
    scores, windows = random_outputs(seed)
    detections = hard_nms(scores, windows) if decay == "hard" else soft_nms(scores, windows, decay=decay)
    # Bit for bit: the same frames in the same order, and the same float64 scores.
    assert as_tuples(detections) == reference_nms(scores, windows, decay=decay)


def test_agrees_with_the_plain_loop_on_paper_windows_and_another_rate() -> None:
    rng = np.random.default_rng(7)
    scores = (rng.random((160, NUM_CLASSES)) ** 4).astype(np.float32)
    windows = list(PAPER_SOFT_NMS_WINDOWS_SECONDS)
    for frames_per_second in (2, 1, 25 / 12):
        detections = soft_nms(scores, windows, frames_per_second=frames_per_second, threshold=0.05)
        expected = reference_nms(scores, windows, frames_per_second, threshold=0.05)
        assert as_tuples(detections) == expected


@pytest.mark.parametrize("seed", range(6))
def test_soft_nms_keeps_at_most_the_input_in_selection_order(seed: int) -> None:
    scores, windows = random_outputs(seed, num_frames=200)
    detections = soft_nms(scores, windows)
    for c in range(scores.shape[1]):
        mine = detections.class_index == c
        frames, kept_scores = detections.frame[mine], detections.score[mine]
        assert frames.size <= np.count_nonzero(scores[:, c] >= THRESHOLD)
        assert np.unique(frames).size == frames.size
        # Decays only lower scores; the first selection of a class is its maximum, unchanged.
        assert np.all(kept_scores <= scores[frames, c])
        assert np.all(kept_scores >= THRESHOLD)
        assert np.all(np.diff(kept_scores) <= 0)
        if frames.size:
            assert kept_scores[0] == scores[:, c].max()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("suppress", [soft_nms, hard_nms])
def test_frame_order_keeps_the_same_detections_by_class_then_frame(seed: int, suppress) -> None:
    # Windows of one width (one group of classes) and of several (the groups interleave classes).
    scores, windows = random_outputs(seed, num_frames=300, num_classes=6)
    if seed % 2:
        windows = [windows[0]] * 6
    by_selection = suppress(scores, windows)
    by_frame = suppress(scores, windows, order="frame")
    assert sorted(as_tuples(by_frame)) == sorted(as_tuples(by_selection))
    keys = by_frame.class_index.astype(np.int64) * scores.shape[0] + by_frame.frame
    assert np.all(np.diff(keys) > 0)
    assert by_frame.frame.dtype == np.int64 and by_frame.class_index.dtype == np.int16


def test_an_unknown_order_is_named() -> None:
    with pytest.raises(NMSError, match="unknown order 'time'"):
        soft_nms(np.ones((4, 1), np.float32), [2.0], order="time")


@pytest.mark.parametrize("seed", range(6))
def test_hard_nms_keeps_separated_peaks_with_their_scores(seed: int) -> None:
    scores, windows = random_outputs(seed, num_frames=200)
    detections = hard_nms(scores, windows)
    for c, window_seconds in enumerate(windows):
        mine = detections.class_index == c
        frames = detections.frame[mine]
        np.testing.assert_array_equal(detections.score[mine], scores[frames, c])
        gaps = np.abs(frames[:, None] - frames[None, :])[~np.eye(frames.size, dtype=bool)]
        assert np.all(gaps >= window_seconds * 2 / 2)
    assert len(hard_nms(scores, windows)) <= np.count_nonzero(scores >= THRESHOLD)


@pytest.mark.parametrize("seed", range(4))
def test_hard_nms_is_idempotent(seed: int) -> None:
    scores, windows = random_outputs(seed, num_frames=200)
    first = hard_nms(scores, windows)
    survivors = np.zeros_like(scores)
    survivors[first.frame, first.class_index] = first.score
    assert as_tuples(hard_nms(survivors, windows)) == as_tuples(first)


@pytest.mark.parametrize("decay", ["pow2", "linear", "sqrt"])
def test_a_single_peak_survives_alone(decay: str) -> None:
    scores = np.zeros((60, 2), dtype=np.float32)
    scores[30, 1] = 0.8
    for detections in (soft_nms(scores, [5, 5], decay=decay), hard_nms(scores, [5, 5])):
        assert as_tuples(detections) == [(30, 1, pytest.approx(0.8))]


def test_a_bump_leaves_its_peak_then_the_shoulders_that_decay_least() -> None:
    scores = np.zeros((40, 1), dtype=np.float32)
    scores[17:24, 0] = [0.1, 0.3, 0.6, 0.9, 0.6, 0.3, 0.1]
    assert as_tuples(hard_nms(scores, [4])) == [(20, 0, pytest.approx(0.9))]
    # Window 4 s = 4 frames each side: after the peak, 0.6 -> 0.6/16, 0.3 -> 0.3/4, 0.1 -> 0.1*9/16.
    # Frame 18 (0.075, earliest of a tie) is next; it drops 17 and 19; 22 is 4 frames away, untouched.
    soft = soft_nms(scores, [4])
    assert soft.frame.tolist() == [20, 18, 22]
    assert soft.score.tolist() == pytest.approx([0.9, 0.3 / 4, 0.3 / 4])


def test_per_class_windows_are_honoured() -> None:
    # Two equal peaks 6 frames (3 s) apart, in two classes with windows of 4 s and 14 s.
    scores = np.zeros((50, 2), dtype=np.float32)
    scores[[20, 26], :] = [[0.9, 0.9], [0.8, 0.8]]
    hard = hard_nms(scores, [4, 14])
    assert hard.frame[hard.class_index == 0].tolist() == [20, 26]
    assert hard.frame[hard.class_index == 1].tolist() == [20]
    soft = soft_nms(scores, [4, 14])
    assert soft.score[soft.class_index == 0].tolist() == pytest.approx([0.9, 0.8])
    assert soft.score[soft.class_index == 1].tolist() == pytest.approx([0.9, 0.8 * (6 / 14) ** 2])


def test_peaks_at_the_edges_of_the_half() -> None:
    scores = np.zeros((30, 1), dtype=np.float32)
    scores[[0, 1, 28, 29], 0] = [0.9, 0.5, 0.4, 0.7]
    assert as_tuples(hard_nms(scores, [3])) == [(0, 0, pytest.approx(0.9)), (29, 0, pytest.approx(0.7))]
    soft = soft_nms(scores, [3])
    # 1 and 28 are decayed by (1/3)^2 and kept after both peaks, in order of their decayed scores.
    assert soft.frame.tolist() == [0, 29, 1, 28]
    assert soft.score[2:].tolist() == pytest.approx([0.5 / 9, 0.4 / 9])


def test_threshold_is_inclusive_and_nothing_under_it_is_kept() -> None:
    scores = np.zeros((40, 1), dtype=np.float32)
    scores[[5, 25], 0] = [0.25, 0.2499]
    detections = soft_nms(scores, [2], threshold=0.25)
    assert detections.frame.tolist() == [5]
    assert len(soft_nms(np.zeros((40, 3), dtype=np.float32), [5, 5, 5])) == 0


def test_detection_arrays_have_the_documented_types() -> None:
    scores, windows = random_outputs(0)
    detections = soft_nms(scores.astype(np.float16), windows)
    assert detections.frame.dtype == np.int64
    assert detections.class_index.dtype == np.int16
    assert detections.score.dtype == np.float64
    empty = soft_nms(np.zeros((10, 3), dtype=np.float32), windows)
    assert (empty.frame.dtype, empty.class_index.dtype, empty.score.dtype) == (np.int64, np.int16, np.float64)


def test_decay_factors_are_zero_at_the_maximum_and_one_past_the_window() -> None:
    offsets = np.arange(-8, 9)
    for decay in ("pow2", "linear", "sqrt"):
        factors = decay_factors(offsets, 5.0, decay)
        assert factors[8] == 0
        assert np.all(factors[np.abs(offsets) >= 5] == 1)
        assert np.all(np.diff(factors[8:]) >= 0)
        np.testing.assert_array_equal(factors, factors[::-1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: soft_nms(s, [5, 5]), "one window per class"),
        (lambda s: soft_nms(s, [5, 5, 0]), "positive seconds"),
        (lambda s: soft_nms(s, [5, 5, 5], threshold=0), "threshold"),
        (lambda s: soft_nms(s, [5, 5, 5], decay="cubic"), "unknown decay"),
        (lambda s: soft_nms(s[:, 0], [5]), r"\[num_frames, classes\]"),
        (lambda s: soft_nms(np.where(s > 0.5, np.nan, s), [5, 5, 5]), "NaN"),
        (lambda s: hard_nms(s, [5, 5, 5], frames_per_second=0), "frames_per_second"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message: str) -> None:
    scores, _ = random_outputs(0)
    with pytest.raises(NMSError, match=message):
        call(scores)


def test_detections_become_spots_of_one_half() -> None:
    submission = pytest.importorskip("astra.submission")
    from astra.postprocess.nms import detections_to_spots

    scores = np.zeros((100, NUM_CLASSES), dtype=np.float32)
    scores[[10, 61], [2, 8]] = [0.7, 0.4]
    spots = detections_to_spots(soft_nms(scores, PAPER_SOFT_NMS_WINDOWS_SECONDS), half=2)
    assert isinstance(spots, submission.Spots)
    assert spots.half.tolist() == [2, 2]
    kept = zip(spots.position_ms.tolist(), spots.class_index.tolist(), strict=True)
    assert sorted(kept) == [(5000, 2), (30500, 8)]
    assert spots.confidence.tolist() == pytest.approx([0.7, 0.4])
