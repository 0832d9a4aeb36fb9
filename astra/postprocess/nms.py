"""1-D Soft-NMS and hard NMS per class, turning per-position outputs into detections.

ASTRA applies Soft-NMS (Bodla et al.) in the 1-D form of Soares et al. (paper
Section 3.6; docs/model.md, "Inference and post-processing"). Per class, with
``h = window_seconds * frames_per_second / 2`` frames:

1. take the highest remaining score ``s[i]``; stop when it is under the threshold;
2. keep ``(i, s[i])``;
3. multiply ``s[i + o]`` for every ``|o| < h`` by ``decay(|o| / h)`` (pow2:
   ``(|o| / h)^2``, so the maximum itself becomes 0), and drop the scores that
   fall under the threshold.

Offsets ``|o| >= h`` are untouched: the authors' slice ``[i - h, i + h]`` gives
them the factor 1 (pow2 and linear) anyway. Ties go to the earliest frame, as
``np.argmax`` in the authors' loop.

The selection is sequential, but only frames closer than ``h`` interact. We cut
each class into independent runs of above-threshold frames (two consecutive ones
farther apart than the reach of a decay cannot affect each other, and a score
under the threshold never comes back above it) and run the loop on all runs of
all classes at once, one selection per run per step. Every score sees the same
multiplications in the same order as in the plain loop, so the result is
identical to it, bit for bit, only faster (benchmarks/postprocess_speed.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from astra.classes import FRAMES_PER_SECOND
from astra.submission import Spots

Decay = Literal["pow2", "linear", "sqrt"]
DECAYS: tuple[str, ...] = ("pow2", "linear", "sqrt")


class NMSError(ValueError):
    """Per-position outputs or NMS settings that cannot be used; the message says which value."""


@dataclass(frozen=True)
class Detections:
    """Kept detections of one half, grouped by class, each class in selection order.

    Attributes:
        frame: ``[K]`` int64, frame at ``frames_per_second`` in the half.
        class_index: ``[K]`` int16, index into ``astra.classes.CLASSES``.
        score: ``[K]`` float64, the score when the detection was kept (after the
            decays of earlier selections, for Soft-NMS). Float64 as ``Spots.confidence``:
            float32 would merge nearby decayed scores and reorder the evaluator's ties.
    """

    frame: np.ndarray
    class_index: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return int(self.frame.shape[0])


def soft_nms(
    per_position: np.ndarray,
    windows_seconds: Sequence[float],
    frames_per_second: float = FRAMES_PER_SECOND,
    threshold: float = 0.01,
    decay: Decay = "pow2",
) -> Detections:
    """1-D Soft-NMS per class with per-class windows.

    Args:
        per_position: ``[num_frames, C]`` scores of one half (aggregated, or averaged over an ensemble).
        windows_seconds: ``[C]`` full window per class, in seconds (the paper's are
            ``astra.classes.PAPER_SOFT_NMS_WINDOWS_SECONDS``).
        frames_per_second: rate of ``per_position``.
        threshold: scores under it are never kept (the authors' 0.01); must be positive.
        decay: ``"pow2"`` (the paper's), ``"linear"`` or ``"sqrt"`` (the authors'
            other options): the factor as a function of ``|offset| / (window / 2)``.

    Returns:
        The kept detections, sorted by class, then by decreasing score (the selection order).
    """
    if decay not in DECAYS:
        raise NMSError(f"unknown decay {decay!r}; expected one of {', '.join(DECAYS)}")
    return _suppress(per_position, windows_seconds, frames_per_second, threshold, decay)


def hard_nms(
    per_position: np.ndarray,
    windows_seconds: Sequence[float],
    frames_per_second: float = FRAMES_PER_SECOND,
    threshold: float = 0.01,
) -> Detections:
    """Hard NMS per class: keep the maximum, remove every score within ``|offset| < window / 2``, repeat.

    The same support as the Soft-NMS decay, with the factor 0 throughout: kept
    detections of one class are at least ``window / 2`` apart and keep their
    original scores. Arguments and result as :func:`soft_nms`.
    """
    return _suppress(per_position, windows_seconds, frames_per_second, threshold, "hard")


def detections_to_spots(
    detections: Detections, half: int, frames_per_second: float = FRAMES_PER_SECOND
) -> Spots:
    """The detections of one half as ``astra.submission.Spots``, ready for ``write_submission``."""
    return Spots.from_frames(
        half,
        detections.frame,
        detections.class_index,
        detections.score,
        frames_per_second=frames_per_second,
    )


def decay_factors(offsets: np.ndarray, half_window_frames: float, decay: str) -> np.ndarray:
    """``[K]`` float64 factor applied to the score ``offsets`` frames away from a kept maximum.

    Offsets with ``|offset| >= half_window_frames`` get 1; the kept maximum (offset 0) gets 0.
    """
    ratio = np.abs(offsets).astype(np.float64) / half_window_frames
    if decay == "pow2":
        factors = ratio * ratio
    elif decay == "linear":
        factors = ratio
    elif decay == "sqrt":
        factors = np.sqrt(ratio)
    elif decay == "hard":
        factors = np.zeros_like(ratio)
    else:
        raise NMSError(f"unknown decay {decay!r}; expected one of {', '.join(DECAYS)}")
    return np.where(ratio < 1.0, factors, 1.0)


def _suppress(
    per_position: np.ndarray,
    windows_seconds: Sequence[float],
    frames_per_second: float,
    threshold: float,
    decay: str,
) -> Detections:
    scores = _checked_scores(per_position)
    num_classes = scores.shape[1]
    half_windows_frames = _half_windows_frames(windows_seconds, num_classes, frames_per_second)
    if not (math.isfinite(threshold) and threshold > 0):
        # A threshold of 0 would keep selecting the zeros that the decay leaves behind.
        raise NMSError(f"threshold must be a positive number, got {threshold!r}")

    # reach[c]: the farthest offset a decay of class c changes (|o| < h).
    reach = np.ceil(half_windows_frames).astype(np.int64) - 1
    max_reach = int(reach.max())
    offsets = np.arange(-max_reach, max_reach + 1)
    factors = np.stack([decay_factors(offsets, h, decay) for h in half_windows_frames])  # [C, 2R+1]

    run_class, run_first, run_last = _independent_runs(scores, threshold, reach)
    if run_class.size == 0:
        return _empty_detections()
    kept_run: list[np.ndarray] = []
    kept_frame: list[np.ndarray] = []
    kept_score: list[np.ndarray] = []
    # Runs of similar lengths are padded together, so one long run does not widen them all.
    lengths = run_last - run_first + 1
    width_class = np.ceil(np.log2(lengths)).astype(np.int64)
    for width in np.unique(width_class):
        runs = np.flatnonzero(width_class == width)
        run, frame, score = _suppress_runs(
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


def _suppress_runs(
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


def _independent_runs(
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


def _checked_scores(per_position: np.ndarray) -> np.ndarray:
    scores = np.asarray(per_position)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise NMSError(f"per-position outputs must be [num_frames, classes], got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise NMSError(f"per-position outputs must be floating-point scores, got {scores.dtype}")
    scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise NMSError("per-position outputs hold NaN or infinite scores")
    return scores


def _half_windows_frames(
    windows_seconds: Sequence[float], num_classes: int, frames_per_second: float
) -> np.ndarray:
    windows = np.asarray(windows_seconds, dtype=np.float64)
    if windows.shape != (num_classes,):
        raise NMSError(
            f"expected one window per class ({num_classes}), "
            f"got {len(np.atleast_1d(windows))}: {windows_seconds}"
        )
    if not (np.all(np.isfinite(windows)) and np.all(windows > 0)):
        raise NMSError(f"windows must be positive seconds, got {list(windows_seconds)}")
    if not frames_per_second > 0:
        raise NMSError(f"frames_per_second must be positive, got {frames_per_second!r}")
    return windows * frames_per_second / 2


def _empty_detections() -> Detections:
    return Detections(
        frame=np.zeros(0, dtype=np.int64),
        class_index=np.zeros(0, dtype=np.int16),
        score=np.zeros(0, dtype=np.float64),
    )
