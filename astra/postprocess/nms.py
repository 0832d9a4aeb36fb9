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

The selection is sequential, but only frames closer than ``h`` interact. A frame
that is the maximum of every frame within ``2 * reach`` of it (``reach = ceil(h) - 1``,
the farthest offset a decay changes) is selected by the plain loop, with its current
score, before any frame within ``2 * reach``: before any selection whose decay could
touch what its own decay touches. So every class is cut into blocks of ``2 * reach + 1``
frames, and each step selects the maximum of every block that beats its two neighbouring
blocks (ties to the earlier frame), in all classes of similar reaches at once; only the blocks
that a decay touched get their maxima again. Every score sees the same multiplications
in the same order as in the plain loop, so the result is identical to it, bit for bit
(tests/postprocess/test_nms.py; test_nms_previous.py against the implementation with one
selection per step that this replaced), in about ten steps on noise above the threshold
everywhere, where that took one per selection.
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
Order = Literal["selection", "frame"]
ORDERS: tuple[str, ...] = ("selection", "frame")


class NMSError(ValueError):
    """Per-position outputs or NMS settings that cannot be used; the message says which value."""


@dataclass(frozen=True)
class Detections:
    """Kept detections of one half, grouped by class, each class in selection order (or frame order).

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
    *,
    order: Order = "selection",
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
        order: ``"selection"``: each class's detections by decreasing score, ties to the earlier
            frame (the order of the plain loop); ``"frame"``: each class's by frame, which
            skips a sort, for callers to whom the order does not matter (the evaluator's).

    Returns:
        The kept detections, sorted by class, then in ``order``.
    """
    if decay not in DECAYS:
        raise NMSError(f"unknown decay {decay!r}; expected one of {', '.join(DECAYS)}")
    return _suppress(per_position, windows_seconds, frames_per_second, threshold, decay, order)


def hard_nms(
    per_position: np.ndarray,
    windows_seconds: Sequence[float],
    frames_per_second: float = FRAMES_PER_SECOND,
    threshold: float = 0.01,
    *,
    order: Order = "selection",
) -> Detections:
    """Hard NMS per class: keep the maximum, remove every score within ``|offset| < window / 2``, repeat.

    The same support as the Soft-NMS decay, with the factor 0 throughout: kept
    detections of one class are at least ``window / 2`` apart and keep their
    original scores. Arguments and result as :func:`soft_nms`.
    """
    return _suppress(per_position, windows_seconds, frames_per_second, threshold, "hard", order)


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
    order: str = "selection",
) -> Detections:
    if order not in ORDERS:
        raise NMSError(f"unknown order {order!r}; expected one of {', '.join(ORDERS)}")
    scores = _checked_scores(per_position)
    num_classes = scores.shape[1]
    half_windows_frames = _half_windows_frames(windows_seconds, num_classes, frames_per_second)
    if not (math.isfinite(threshold) and threshold > 0):
        # A threshold of 0 would keep selecting the zeros that the decay leaves behind.
        raise NMSError(f"threshold must be a positive number, got {threshold!r}")

    # reach[c]: the farthest offset a decay of class c changes (|o| < h).
    reach = np.ceil(half_windows_frames).astype(np.int64) - 1
    # Classes whose blocks are of similar widths are selected together: one class's block
    # serves for another's reach when it is no wider than twice that.
    group = np.ceil(np.log2(2 * reach + 1)).astype(np.int64)
    kept_class: list[np.ndarray] = []
    kept_frame: list[np.ndarray] = []
    kept_score: list[np.ndarray] = []
    numbers = sorted(set(group.tolist()))
    for number in numbers:
        classes = np.flatnonzero(group == number)
        group_reach = int(reach[classes].max())
        offsets = np.arange(-group_reach, group_reach + 1)
        # Each class's own factors: 1 past its own reach.
        factors = np.stack([decay_factors(offsets, half_windows_frames[c], decay) for c in classes])
        row, frame, score = _select(scores, classes, factors, group_reach, threshold)
        kept_class.append(classes[row].astype(np.int16))
        kept_frame.append(frame)
        kept_score.append(score)
    frames = np.concatenate(kept_frame)
    if frames.size == 0:
        return _empty_detections()
    classes = np.concatenate(kept_class)
    kept_scores = np.concatenate(kept_score)
    # Each group's detections are by class, then frame. Selection scores never increase, and
    # ties go to the earlier frame: by decreasing score, stably, is the selection order; then
    # by class, stably (a radix sort of int16: it costs little).
    if order == "selection":
        by = np.argsort(-kept_scores, kind="stable")
        if num_classes > 1:
            by = by[np.argsort(classes[by], kind="stable")]
    elif len(numbers) > 1:  # the groups' classes interleave
        by = np.argsort(classes, kind="stable")
    else:
        return Detections(frame=frames, class_index=classes, score=kept_scores)
    return Detections(frame=frames[by], class_index=classes[by], score=kept_scores[by])


def _select(
    scores: np.ndarray, classes: np.ndarray, factors: np.ndarray, reach: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The selection on the ``classes`` of ``[F, C]`` scores, whose decays reach ``reach`` or less.

    ``factors``: ``[N, 2 * reach + 1]`` each class's decay factor at offsets ``-reach..reach``.
    Returns the row (in ``classes``), the frame and the score of each selection, by row then frame.
    """
    block = 2 * reach + 1
    num_rows, num_frames = classes.size, scores.shape[0]
    # One empty block at each end of a row: every block has two neighbours, no decay leaves the row.
    num_blocks = -(-num_frames // block) + 2
    width = num_blocks * block
    padded = np.zeros((num_rows, width), dtype=np.float64)
    # A class's column of [F, C] scores is read once (strided, it costs as much as reading all
    # the classes). Scores under the threshold can never be selected: they are zeroed like
    # dropped ones, compared on the float64 copy as the decays compare them.
    inside = padded[:, block : block + num_frames]
    inside[...] = scores[:, classes].T
    np.multiply(inside, inside >= threshold, out=inside)
    if not np.isfinite(padded).all():
        raise NMSError("per-position outputs hold NaN or infinite scores")
    flat = padded.reshape(-1)
    if reach == 0:
        # A decay changes only the maximum itself (to 0): every score is selected as it is.
        best = np.flatnonzero(flat > 0)
        return best // width, best % width - block, flat[best]
    blocks = padded.reshape(-1, block)  # [N * B, block], views of the same scores
    best_in_block = blocks.argmax(axis=1)  # the earliest maximum of each block
    block_max = blocks[np.arange(blocks.shape[0]), best_in_block]
    live = np.flatnonzero(block_max > 0)  # blocks holding a score to select (never a row's end blocks)
    window = np.arange(-reach, reach + 1)
    # Each selection's score at its place (selected scores are at least the threshold, > 0):
    # read back in row and frame order at the end, with no sort.
    kept = np.zeros(flat.size, dtype=np.float64)
    while live.size:
        score = block_max[live]
        # A block's maximum is selected when it beats the block before and is not beaten by the next.
        chosen = live[(score > block_max[live - 1]) & (score >= block_max[live + 1])]
        best = chosen * block + best_in_block[chosen]  # flat index of the selected scores
        kept[best] = block_max[chosen]
        # The decays of selections two blocks apart or more change disjoint scores.
        touched = best[:, None] + window[None, :]
        decayed = flat[touched]
        decayed *= factors[0] if num_rows == 1 else factors[chosen // num_blocks]
        np.multiply(decayed, decayed >= threshold, out=decayed)  # scores are >= 0: x or 0
        flat[touched] = decayed
        # The window [best - reach, best + reach] is one block long: it touches at most two.
        changed = np.concatenate([(best - reach) // block, (best + reach) // block])
        first = blocks[changed].argmax(axis=1)
        best_in_block[changed] = first
        block_max[changed] = flat[changed * block + first]
        live = live[block_max[live] > 0]

    best = np.flatnonzero(kept > 0)  # (a boolean's nonzero is several times faster than a float's)
    return best // width, best % width - block, kept[best]


def _checked_scores(per_position: np.ndarray) -> np.ndarray:
    scores = np.asarray(per_position)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise NMSError(f"per-position outputs must be [num_frames, classes], got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise NMSError(f"per-position outputs must be floating-point scores, got {scores.dtype}")
    return scores  # finiteness is checked in _select, on the copy it makes of every class


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
