"""Soft-NMS and hard NMS against the implementation they replaced, on many random cases.

``previous_suppress`` is ``astra.postprocess.nms._suppress`` as it was before the blocked
selection (one ``argmax`` over the whole padded row per selection; itself checked bit for bit
against the plain loop of docs/model.md in test_nms.py), kept here verbatim but for the input
checks. The cases are what makes the new selection work differently: runs thousands of frames
long (noise above the threshold everywhere), ties and plateaus, windows under one frame and
wider than the run, every decay and hard NMS. Equal means equal: the same frames, classes and
float64 scores in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from astra.postprocess.nms import Detections, decay_factors, hard_nms, soft_nms


def previous_suppress(
    per_position: np.ndarray,
    windows_seconds: Sequence[float],
    frames_per_second: float,
    threshold: float,
    decay: str,
) -> Detections:
    scores = np.asarray(per_position, dtype=np.float64)
    half_windows_frames = np.asarray(windows_seconds, dtype=np.float64) * frames_per_second / 2

    # reach[c]: the farthest offset a decay of class c changes (|o| < h).
    reach = np.ceil(half_windows_frames).astype(np.int64) - 1
    max_reach = int(reach.max())
    offsets = np.arange(-max_reach, max_reach + 1)
    factors = np.stack([decay_factors(offsets, h, decay) for h in half_windows_frames])  # [C, 2R+1]

    run_class, run_first, run_last = _previous_independent_runs(scores, threshold, reach)
    if run_class.size == 0:
        return Detections(np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0))
    kept_run: list[np.ndarray] = []
    kept_frame: list[np.ndarray] = []
    kept_score: list[np.ndarray] = []
    # Runs of similar lengths are padded together, so one long run does not widen them all.
    lengths = run_last - run_first + 1
    width_class = np.ceil(np.log2(lengths)).astype(np.int64)
    for width in np.unique(width_class):
        runs = np.flatnonzero(width_class == width)
        run, frame, score = _previous_suppress_runs(
            scores, runs, run_class[runs], run_first[runs], lengths[runs], factors, max_reach, threshold
        )
        kept_run.append(run)
        kept_frame.append(frame)
        kept_score.append(score)
    frames = np.concatenate(kept_frame)
    classes = run_class[np.concatenate(kept_run)]
    kept_scores = np.concatenate(kept_score)
    # Selection scores never increase, and ties go to the earlier frame: this order is the selection order.
    order = np.lexsort((frames, -kept_scores, classes))
    return Detections(
        frame=frames[order].astype(np.int64),
        class_index=classes[order].astype(np.int16),
        score=kept_scores[order],
    )


def _previous_suppress_runs(
    scores: np.ndarray,
    runs: np.ndarray,
    run_class: np.ndarray,
    run_first: np.ndarray,
    run_length: np.ndarray,
    factors: np.ndarray,
    max_reach: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The selection loop on a batch of runs, one row each, padded by ``max_reach`` on both sides.

    Returns the run id, the frame and the score of each selection.
    """
    width = int(run_length.max()) + 2 * max_reach
    columns = np.arange(int(run_length.max()))
    inside = columns[None, :] < run_length[:, None]
    frame_of = np.minimum(run_first[:, None] + columns[None, :], scores.shape[0] - 1)
    values = np.zeros((runs.size, width), dtype=np.float64)
    # Scores under the threshold inside a run can never be selected: zero them like dropped ones.
    run_scores = np.where(inside, scores[frame_of, run_class[:, None]], 0.0)
    values[:, max_reach : max_reach + columns.size] = np.where(run_scores >= threshold, run_scores, 0.0)

    row_factors = factors[run_class]  # [N, 2R+1]
    window = np.arange(2 * max_reach + 1)
    alive = np.arange(runs.size)
    kept_row: list[np.ndarray] = []
    kept_column: list[np.ndarray] = []
    kept_score: list[np.ndarray] = []
    while alive.size:
        best = np.argmax(values, axis=1)
        rows = np.arange(alive.size)
        best_score = values[rows, best]
        selected = best_score >= threshold
        if not selected.all():
            # A run whose maximum is under the threshold is done: drop its row.
            alive, values, row_factors = alive[selected], values[selected], row_factors[selected]
            best, best_score = best[selected], best_score[selected]
            rows = np.arange(alive.size)
            if not alive.size:
                break
        kept_row.append(alive)
        kept_column.append(best)
        kept_score.append(best_score)
        # The window of the maximum at column b starts at b - R: inside the padding, never out of bounds.
        window_columns = best[:, None] - max_reach + window[None, :]
        decayed = values[rows[:, None], window_columns] * row_factors
        values[rows[:, None], window_columns] = np.where(decayed >= threshold, decayed, 0.0)

    row = np.concatenate(kept_row)
    frame = run_first[row] + np.concatenate(kept_column) - max_reach
    return runs[row], frame, np.concatenate(kept_score)


def _previous_independent_runs(
    scores: np.ndarray, threshold: float, reach: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each class into runs that no decay crosses.

    Returns ``[N]`` class, first frame and last frame of each run of
    above-threshold frames in which consecutive ones are at most ``reach[c]`` apart.
    """
    frame, class_index = np.nonzero(scores >= threshold)
    if frame.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    order = np.lexsort((frame, class_index))
    frame, class_index = frame[order], class_index[order]
    starts_run = np.ones(frame.size, dtype=bool)
    same_class = class_index[1:] == class_index[:-1]
    starts_run[1:] = ~same_class | (frame[1:] - frame[:-1] > reach[class_index[1:]])
    first = np.flatnonzero(starts_run)
    last = np.append(first[1:] - 1, frame.size - 1)
    return class_index[first].astype(np.int64), frame[first].astype(np.int64), frame[last].astype(np.int64)


DECAYS = ("pow2", "linear", "sqrt", "hard")


def random_case(seed: int) -> tuple[np.ndarray, list[float], float, float]:
    """Scores ``[F, C]``, windows, frame rate and threshold of one case; the kind varies with the seed."""
    rng = np.random.default_rng(seed)
    kind = seed % 6
    num_frames = int(rng.integers(1, 400)) if kind < 3 else int(rng.integers(1000, 6000))
    num_classes = int(rng.integers(1, 5))
    if kind in (0, 3):
        # Noise above the threshold almost everywhere: a selection every few frames.
        scores = np.clip(rng.normal(0.03, 0.03, (num_frames, num_classes)), 0, 1)
    elif kind in (1, 4):
        # Few distinct values: ties between and within blocks, plateaus longer than a window.
        levels = rng.choice([0.0, 0.005, 0.01, 0.02, 0.05, 0.25, 0.5, 1.0], size=(num_frames, num_classes))
        lengths = rng.integers(1, 40, size=num_classes)
        scores = np.stack(
            [np.repeat(levels[:: lengths[c], c], lengths[c])[:num_frames] for c in range(num_classes)], axis=1
        )
    else:
        # Bumps over a floor mostly under the threshold, as a trained model's outputs.
        scores = np.exp(rng.normal(np.log(1e-3), 1.3, (num_frames, num_classes)))
        for c in range(num_classes):
            for centre in rng.uniform(0, num_frames, rng.poisson(1 + num_frames / 200)):
                bump = rng.uniform(0.05, 1) * np.exp(-0.5 * ((np.arange(num_frames) - centre) / 3) ** 2)
                scores[:, c] = np.maximum(scores[:, c], bump)
        scores = np.clip(scores, 0, 1)
    if seed % 4 == 1:
        scores = np.round(scores * 64) / 64  # more ties
    # Windows from under one frame to wider than the half, some fractional.
    windows = rng.choice([0.3, 0.5, 1.0, 1.2, 2.0, 3.7, 5.0, 9.0, 20.0, 40.0, 61.5], num_classes).tolist()
    frames_per_second = float(rng.choice([2.0, 1.0, 25 / 12]))
    threshold = float(rng.choice([0.01, 0.01, 0.02, 0.25]))
    dtype = np.float16 if seed % 5 == 2 else np.float32
    return scores.astype(dtype), windows, frames_per_second, threshold


def as_arrays(detections: Detections) -> tuple[list[int], list[int], list[float]]:
    return detections.frame.tolist(), detections.class_index.tolist(), detections.score.tolist()


def current(
    scores: np.ndarray, windows: list[float], frames_per_second: float, threshold: float, decay: str
) -> Detections:
    if decay == "hard":
        return hard_nms(scores, windows, frames_per_second, threshold)
    return soft_nms(scores, windows, frames_per_second, threshold, decay=decay)  # type: ignore[arg-type]


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("seed", range(48))
def test_equal_to_the_previous_implementation(seed: int, decay: str) -> None:
    scores, windows, frames_per_second, threshold = random_case(seed)
    ours = current(scores, windows, frames_per_second, threshold, decay)
    previous = previous_suppress(scores, windows, frames_per_second, threshold, decay)
    assert ours.frame.dtype == previous.frame.dtype and ours.score.dtype == previous.score.dtype
    assert as_arrays(ours) == as_arrays(previous)


@pytest.mark.parametrize("decay", DECAYS)
def test_equal_on_the_window_search_layout(decay: str) -> None:
    """One class, many noisy halves end to end with gaps, every window the search may try."""
    rng = np.random.default_rng(3)
    halves = [np.clip(rng.normal(0.03, 0.03, (int(rng.integers(500, 1500)), 1)), 0, 1) for _ in range(6)]
    gap = np.zeros((83, 1))
    column = np.concatenate([piece for half in halves for piece in (half, gap)]).astype(np.float32)
    for window in (1.0, 1.6, 2.2, 7.3, 13.0, 24.9, 40.0):
        ours = current(column, [window], 2.0, 0.01, decay)
        assert as_arrays(ours) == as_arrays(previous_suppress(column, [window], 2.0, 0.01, decay))


def test_equal_where_a_block_maximum_ties_its_neighbours() -> None:
    """Equal maxima one block apart (block = 2 * reach + 1 frames): the earlier one goes first."""
    for reach in (1, 2, 5, 9):
        block = 2 * reach + 1
        window = 2.0 * (reach + 1)  # h = reach + 1 frames at 1 fps
        for spacing in range(1, 3 * block):
            scores = np.full((8 * block, 1), 0.02, dtype=np.float32)
            scores[block + 3 :: spacing, 0] = 0.5
            scores[block + 3 + spacing // 2 :: 2 * spacing + 1, 0] = 0.25
            for decay in DECAYS:
                ours = current(scores, [window], 1.0, 0.01, decay)
                assert as_arrays(ours) == as_arrays(previous_suppress(scores, [window], 1.0, 0.01, decay))
