"""From a trained model to per-position outputs and detections.

Pure functions around the network: slide windows over a half
(``inference_stride_seconds``), run the model, aggregate the window outputs into
the per-position output of the half (``[frames at 2 fps, 17]``, the array that
ensembles average), then Soft-NMS turns per-position outputs into detections.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from astra.classes import FRAMES_PER_SECOND
from astra.config import ClipConfig, InferenceConfig
from astra.data.clips import inference_window_starts, slice_clips
from astra.data.dataset import Half
from astra.data.labels import Annotations
from astra.postprocess.aggregation import aggregate_windows
from astra.postprocess.nms import Detections, hard_nms, soft_nms


def num_frames_of(half: Half) -> int:
    """Length of a half's per-position output: 2 frames per second of video."""
    return half.num_seconds * FRAMES_PER_SECOND


@torch.no_grad()
def predict_half(
    model: torch.nn.Module,
    half: Half,
    clips: ClipConfig,
    inference: InferenceConfig,
    *,
    with_audio: bool,
    device: torch.device,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Per-position output of one half: ``[num_frames, C]`` float32 (0 where nothing was predicted).

    The model must be in eval mode. Windows are processed ``batch_size`` at a time.
    """
    starts = inference_window_starts(
        half.num_seconds, clips.clip_seconds, int(clips.inference_stride_seconds)
    )
    class_scores: list[np.ndarray] = []
    displacement: list[np.ndarray] = []
    for first in range(0, len(starts), batch_size):
        batch_starts = starts[first : first + batch_size]
        features, audio = slice_clips(half, batch_starts, clips.clip_seconds, with_audio=with_audio)
        features_t = torch.from_numpy(features).to(device)
        audio_t = torch.from_numpy(audio).to(device) if audio is not None else None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(features_t, audio_t)
        class_scores.append(outputs["class_scores"].float().cpu().numpy())
        displacement.append(outputs["displacement"].float().cpu().numpy())
    return aggregate_windows(
        np.concatenate(class_scores),
        np.concatenate(displacement),
        starts,
        num_frames_of(half),
        outputs_per_second=clips.outputs_per_second,
        score_threshold=inference.score_threshold,
    )


def detect(per_position: np.ndarray, inference: InferenceConfig) -> Detections:
    """Soft-NMS (or hard NMS) with the per-class windows of ``inference``."""
    if inference.nms == "soft":
        return soft_nms(
            per_position, inference.nms_windows_seconds, FRAMES_PER_SECOND, inference.nms_threshold
        )
    if inference.nms == "hard":
        return hard_nms(
            per_position, inference.nms_windows_seconds, FRAMES_PER_SECOND, inference.nms_threshold
        )
    raise ValueError(f"inference.nms: unknown NMS {inference.nms!r}")


def detections_to_dense(detections: Detections, num_frames: int, num_classes: int) -> np.ndarray:
    """Detections as the evaluator's dense form: ``[num_frames, C]``, -1 where nothing was kept."""
    dense = np.full((num_frames, num_classes), -1.0, dtype=np.float32)
    dense[detections.frame, detections.class_index] = detections.score
    return dense


def group_by_game(halves: Iterable[Half]) -> dict[str, list[Half]]:
    """Halves grouped by game, in first-seen order."""
    games: dict[str, list[Half]] = {}
    for half in halves:
        games.setdefault(half.game, []).append(half)
    return games


def game_annotations(halves: Sequence[Half]) -> Annotations:
    """The annotations of a whole game from its halves (each ``Half`` holds its own half's)."""
    parts = [h.annotations for h in halves]
    return Annotations(
        half=np.concatenate([a.half for a in parts]),
        position_ms=np.concatenate([a.position_ms for a in parts]),
        class_index=np.concatenate([a.class_index for a in parts]),
        visible=np.concatenate([a.visible for a in parts]),
    )
