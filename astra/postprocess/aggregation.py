"""Aggregate the outputs of overlapping windows into one per-position array per half.

ASTRA slides 50-s windows with a stride of 8 s over each half (docs/model.md,
"Inference and post-processing"). Position ``j`` of a window starting at
``start`` seconds, refined by the displacement head's mean ``mu`` (paper
Section 3.6: an action at position ``j`` lies at ``j - mu``), votes for the
frame ``round((start * rate + j - mu) * 2 / rate)`` at the evaluator's 2 fps;
each (frame, class) keeps the highest vote. The result is the "per-position
output" of docs/data.md, which ensembles average and Soft-NMS decodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from astra.classes import FRAMES_PER_SECOND


class AggregationError(ValueError):
    """Window outputs whose shapes or values do not fit together; the message says which."""


def aggregate_windows(
    class_scores: np.ndarray,
    displacement: np.ndarray | None,
    window_starts_seconds: Sequence[float] | np.ndarray,
    num_frames: int,
    outputs_per_second: float = 2,
    score_threshold: float = 0.01,
) -> np.ndarray:
    """Max-aggregate window outputs into the per-position output of one half.

    Args:
        class_scores: ``[W, L, C+1]`` sigmoid scores of W windows; channel 0 is
            the background and is dropped.
        displacement: ``[W, L, C+1]`` displacement means ``mu`` in output
            positions (the target is ``j - p``), or None for no refinement (mu = 0).
        window_starts_seconds: ``[W]`` start of each window in the half.
        num_frames: length of the half at 2 fps.
        outputs_per_second: output positions per second of the model (2 for
            ASTRA, 1 for the ``L_out = T`` ablation).
        score_threshold: scores at or below it cast no vote (the authors' 0.01).

    Returns:
        ``[num_frames, C]`` float32: for each frame and class the highest score
        that any window put there, 0 where none did.

    Two edge rules, both choices of ours:

    - positions whose own time lies outside the half (the padded tail of a
      last window that runs past the end) cast no vote: they saw no video;
    - a displaced frame that falls outside the half is clamped to its first or
      last frame rather than dropped: the model saw evidence of an action at
      the edge, and the evaluator clamps late labels to the last frame too.
    """
    class_scores = np.asarray(class_scores)
    starts_seconds = np.asarray(window_starts_seconds, dtype=np.float64)
    _check_inputs(class_scores, displacement, starts_seconds, num_frames, outputs_per_second)
    _, num_positions, num_channels = class_scores.shape
    num_classes = num_channels - 1
    aggregated = np.zeros((num_frames, num_classes), dtype=np.float32)

    scores = class_scores[:, :, 1:].astype(np.float32, copy=False)
    frames_per_output = FRAMES_PER_SECOND / outputs_per_second
    # Frame of each position before refinement: [W, L]; positions outside the half are padding.
    source_frames = (starts_seconds[:, None] * outputs_per_second + np.arange(num_positions)[None, :]) * (
        frames_per_output
    )
    inside_half = (source_frames >= 0) & (source_frames < num_frames)
    window_index, position_index, class_index = np.nonzero(
        (scores > score_threshold) & inside_half[:, :, None]
    )
    if window_index.size == 0:
        return aggregated

    output_positions = starts_seconds[window_index] * outputs_per_second + position_index
    if displacement is not None:
        # The displacement target is j - p (docs/model.md, "Clips and targets"): the action sits at j - mu.
        mu = np.asarray(displacement)[:, :, 1:][window_index, position_index, class_index]
        if not np.all(np.isfinite(mu)):
            raise AggregationError(
                "displacement holds NaN or infinite values where scores pass the threshold"
            )
        output_positions = output_positions - mu.astype(np.float64)
    # np.rint rounds halves to even, as Python's round() in the authors' code.
    frames = np.clip(np.rint(output_positions * frames_per_output), 0, num_frames - 1).astype(np.int64)
    np.maximum.at(aggregated, (frames, class_index), scores[window_index, position_index, class_index])
    return aggregated


def _check_inputs(
    class_scores: np.ndarray,
    displacement: np.ndarray | None,
    starts_seconds: np.ndarray,
    num_frames: int,
    outputs_per_second: float,
) -> None:
    if class_scores.ndim != 3 or class_scores.shape[2] < 2:
        raise AggregationError(
            f"class_scores must be [windows, positions, classes + 1] with a background channel, "
            f"got shape {class_scores.shape}"
        )
    if displacement is not None and np.shape(displacement) != class_scores.shape:
        raise AggregationError(
            f"displacement shape {np.shape(displacement)} differs from "
            f"class_scores shape {class_scores.shape}"
        )
    if starts_seconds.shape != (class_scores.shape[0],):
        raise AggregationError(
            f"expected {class_scores.shape[0]} window starts (one per window), "
            f"got shape {starts_seconds.shape}"
        )
    if not np.all(np.isfinite(starts_seconds)):
        raise AggregationError(f"window starts must be finite seconds, got {starts_seconds}")
    if int(num_frames) != num_frames or num_frames < 1:
        raise AggregationError(f"num_frames must be a positive integer, got {num_frames!r}")
    if not outputs_per_second > 0:
        raise AggregationError(f"outputs_per_second must be positive, got {outputs_per_second!r}")
