"""Per-position outputs -> detections -> spots and the evaluator's dense form (numpy only).

One half's per-position output is ``[frames at 2 fps, 17]`` (after displacement
refinement, before NMS: what ensembles average). The inference config chooses the
NMS (Soft-NMS with the paper's pow2 decay, or hard) and its per-class windows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from astra.classes import FRAMES_PER_SECOND, NUM_CLASSES
from astra.config import InferenceConfig
from astra.postprocess.nms import Detections, NMSError, Order, detections_to_spots, hard_nms, soft_nms
from astra.submission import Spots


def detect(per_position: np.ndarray, inference: InferenceConfig, *, order: Order = "selection") -> Detections:
    """Soft-NMS (or hard NMS) of one half with the per-class windows of ``inference``.

    ``order``: each class's detections in selection order, or in frame order (cheaper; see
    :func:`astra.postprocess.nms.soft_nms`).
    """
    windows, threshold = inference.nms_windows_seconds, inference.nms_threshold
    if inference.nms == "soft":
        return soft_nms(per_position, windows, FRAMES_PER_SECOND, threshold, order=order)
    if inference.nms == "hard":
        return hard_nms(per_position, windows, FRAMES_PER_SECOND, threshold, order=order)
    raise NMSError(f"inference.nms: unknown NMS {inference.nms!r}")


def detections_to_dense(
    detections: Detections, num_frames: int, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Detections as the evaluator's dense form: ``[num_frames, C]``, -1 where nothing was kept."""
    dense = np.full((num_frames, num_classes), -1.0, dtype=np.float32)
    dense[detections.frame, detections.class_index] = detections.score
    return dense


def dense_detections(per_position: np.ndarray, inference: InferenceConfig) -> np.ndarray:
    """One half: per-position output ``[F, C]`` -> kept detections in dense form ``[F, C]``."""
    # The dense form has no order: the cheaper frame order serves.
    detections = detect(per_position, inference, order="frame")
    return detections_to_dense(detections, per_position.shape[0], per_position.shape[1])


def decode_game(halves: Mapping[int, np.ndarray], inference: InferenceConfig) -> Spots:
    """A game's per-position outputs (``{1: [F1, C], 2: [F2, C]}``) -> its spots, ready to write."""
    return Spots.concatenate(
        [detections_to_spots(detect(scores, inference), half) for half, scores in sorted(halves.items())]
    )
