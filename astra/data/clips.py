"""Clips of one half and their targets (docs/model.md, "Clips and targets" and "Inference").

A clip is ``clip_seconds`` (T) consecutive seconds of one half, starting on a whole
second. The model reads T feature rows and ``T * 100`` audio frames and emits
``L = T * outputs_per_second`` output positions; output position ``j`` of a clip
starting at second ``s`` is frame ``s * outputs_per_second + j`` of the half.

Past the end of a half, clips are padded by repeating the last frame (features and
audio separately). Everything here is vectorised over clips and positions: no Python
loop runs per clip or per position.
"""

from __future__ import annotations

import numpy as np

from astra.classes import FRAMES_PER_SECOND, NUM_CLASSES
from astra.data.dataset import AUDIO_FRAMES_PER_SECOND, DataError, Half, non_finite_message
from astra.data.labels import Annotations

# Paper values (docs/model.md): 50-s clips, 2 outputs per second, r_c = 2 s, r_d = 3 s,
# training stride T/2, inference stride 8 s.
CLIP_SECONDS = 50
OUTPUTS_PER_SECOND = FRAMES_PER_SECOND
CLASS_RADIUS_SECONDS = 2.0
DISPLACEMENT_RADIUS_SECONDS = 3.0
TRAIN_STRIDE_SECONDS = CLIP_SECONDS // 2
INFERENCE_STRIDE_SECONDS = 8


def training_clip_starts(
    num_seconds: int,
    clip_seconds: int = CLIP_SECONDS,
    stride_seconds: int = TRAIN_STRIDE_SECONDS,
    *,
    phase: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The start seconds ``[N]`` int64 of the training clips of one half for one epoch.

    The half is tiled by the grid of windows ``k * stride_seconds``, ``k = 0 .. K-1``,
    where K is the fewest windows that reach the end of the half (the last one may run
    past the end and is padded). With ``n = clip_seconds / stride_seconds`` (2 in the
    paper), windows ``k`` and ``k + n`` touch without overlapping, so the grid splits into
    n non-overlapping subsets: the **phase** ``q`` in ``0 .. n-1`` selects the windows with
    ``k % n == q``, i.e. starts ``q * stride_seconds + m * clip_seconds``. Over the n
    phases, every window of the grid is seen once, and every second of the half is covered.

    Give either ``phase`` (validation: 0) or ``rng`` (training: a uniform phase drawn per
    call, so per half and per epoch). A half too short to have a window in phase ``q``
    (one no longer than a clip, for instance) gets the window at 0 instead, so that every
    half gives at least one clip per epoch.
    """
    _check_positive(num_seconds=num_seconds, clip_seconds=clip_seconds, stride_seconds=stride_seconds)
    if clip_seconds % stride_seconds != 0:
        raise ValueError(
            f"clip_seconds ({clip_seconds}) must be a multiple of stride_seconds ({stride_seconds}) "
            "for the windows to split into non-overlapping phases"
        )
    num_phases = clip_seconds // stride_seconds
    if (phase is None) == (rng is None):
        raise ValueError("give exactly one of phase (fixed, for validation) or rng (random, for training)")
    if phase is None:
        assert rng is not None
        phase = int(rng.integers(num_phases))
    elif not 0 <= phase < num_phases:
        raise ValueError(f"phase must be in 0..{num_phases - 1}, got {phase}")
    num_windows = 1 + max(0, -(-(num_seconds - clip_seconds) // stride_seconds))
    starts = np.arange(phase, num_windows, num_phases, dtype=np.int64) * stride_seconds
    return starts if starts.size else np.zeros(1, dtype=np.int64)


def inference_window_starts(
    num_seconds: int,
    clip_seconds: int = CLIP_SECONDS,
    stride_seconds: int = INFERENCE_STRIDE_SECONDS,
) -> np.ndarray:
    """The start seconds ``[N]`` int64 of the sliding inference windows over one half.

    Starts are ``0, stride, 2*stride, ...`` and one last window that ends exactly at the
    end of the half, so every second is seen and only a half shorter than one clip needs
    padding (one window at 0).
    """
    _check_positive(num_seconds=num_seconds, clip_seconds=clip_seconds, stride_seconds=stride_seconds)
    last_start = max(0, num_seconds - clip_seconds)
    regular = np.arange(0, last_start, stride_seconds, dtype=np.int64)
    return np.append(regular, np.int64(last_start))


def slice_clips(
    half: Half,
    starts_seconds: np.ndarray,
    clip_seconds: int = CLIP_SECONDS,
    *,
    with_audio: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read clips of ``half``: features ``[N, T, D]`` float32 and audio ``[N, 128, T*100]`` float32 or None.

    Only the rows and frames of the clips are read from the memory maps (all N clips are
    held in memory: slice a long list of starts in batches). Past the end of the half, the
    last second (features) or the last aligned audio frame is repeated. Audio is aligned on
    the start: frames past ``num_seconds * 100`` are cut, a shorter recording is padded with
    its last frame. Raises :class:`DataError` naming the file and the second when what was
    read holds NaN or inf.
    """
    starts = _check_starts(starts_seconds, half.num_seconds, half.features_path)
    _check_positive(clip_seconds=clip_seconds)
    # [N, T] second of the half behind each clip second, the last one repeated past the end.
    seconds = np.minimum(starts[:, None] + np.arange(clip_seconds), half.num_seconds - 1)
    features = np.asarray(half.features[seconds], dtype=np.float32)  # [N, T, D]
    finite = np.isfinite(features).all(axis=2)  # [N, T]
    if not finite.all():
        bad_clip, bad_second = np.unravel_index(np.argmin(finite), finite.shape)
        raise DataError(non_finite_message(half.features_path, int(seconds[bad_clip, bad_second])))
    if not with_audio:
        return features, None
    recording, usable_frames = usable_audio(half)
    first_frames = starts * AUDIO_FRAMES_PER_SECOND
    audio = slice_audio_frames(recording, first_frames, clip_seconds * AUDIO_FRAMES_PER_SECOND, usable_frames)
    finite_frames = np.isfinite(audio).all(axis=1)  # [N, T*100]
    if not finite_frames.all():
        bad_clip, bad_frame = np.unravel_index(np.argmin(finite_frames), finite_frames.shape)
        frame = int(min(first_frames[bad_clip] + bad_frame, usable_frames - 1))
        assert half.audio_path is not None
        raise DataError(non_finite_message(half.audio_path, frame // AUDIO_FRAMES_PER_SECOND, frame))
    return features, audio


def encode_targets(
    annotations: Annotations,
    starts_seconds: np.ndarray,
    clip_seconds: int = CLIP_SECONDS,
    outputs_per_second: int = OUTPUTS_PER_SECOND,
    class_radius_seconds: float = CLASS_RADIUS_SECONDS,
    displacement_radius_seconds: float = DISPLACEMENT_RADIUS_SECONDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets of clips of one half: classification and displacement, each ``[N, L, C+1]`` float32.

    ``L = clip_seconds * outputs_per_second``; channel 0 is background, channel ``c + 1`` is
    class ``c``. An action at ``position_ms`` sits on output frame
    ``p = floor(position_ms * outputs_per_second / 1000)`` of the half (the official
    evaluator's ``int(2 * ms / 1000)`` at 2 per second), i.e. ``p - start * rate`` in a clip.

    - classification: class channel 1 on frames ``j`` with ``|j - p| <= r_c * rate``;
      background 1 exactly where no class channel is 1.
    - displacement: ``j - p`` (signed, output frames) on ``|j - p| <= r_d * rate``, NaN
      ("no target") elsewhere and always on the background channel. When actions of one
      class compete for a frame, the nearer one wins; at equal distance, the earlier one
      (positive displacement).

    Actions outside a clip still mark the clip frames within their radii. "Not shown"
    actions are targets like the visible ones. Labels past the end of the half's features
    (``annotations.past_end``, within the tolerance of ``astra.data.dataset``) mark nothing,
    as in the authors' loader. ``annotations`` must be those of the half.
    """
    _check_positive(clip_seconds=clip_seconds, outputs_per_second=outputs_per_second)
    if class_radius_seconds < 0 or displacement_radius_seconds < 0:
        raise ValueError(
            f"radii must be non-negative, got class {class_radius_seconds} s, "
            f"displacement {displacement_radius_seconds} s"
        )
    starts = np.asarray(starts_seconds)
    if starts.ndim != 1 or not np.issubdtype(starts.dtype, np.integer):
        raise ValueError(f"starts_seconds must be a 1-D integer array, got {starts.dtype} {starts.shape}")
    num_outputs = clip_seconds * outputs_per_second
    num_clips = starts.shape[0]
    classification = np.zeros((num_clips, num_outputs, NUM_CLASSES + 1), dtype=np.float32)
    displacement = np.full((num_clips, num_outputs, NUM_CLASSES + 1), np.nan, dtype=np.float32)
    if num_clips == 0:
        return classification, displacement

    # Work on the half-level frame axis covering all clips, [first, first + span), then cut
    # each clip out of it: memory grows with the half, not with clips x actions x positions.
    first = int(starts.min()) * outputs_per_second
    span = int(starts.max()) * outputs_per_second + num_outputs - first
    annotations = annotations.within_features()
    action_frames = annotations.position_ms.astype(np.int64) * outputs_per_second // 1000  # [A]
    action_classes = annotations.class_index.astype(np.int64)  # [A]
    # A small tolerance keeps e.g. r = 1.5 s at 2 per second at exactly 3 frames.
    class_radius = int(np.floor(class_radius_seconds * outputs_per_second + 1e-9))
    displacement_radius = int(np.floor(displacement_radius_seconds * outputs_per_second + 1e-9))

    half_classification = np.zeros((span, NUM_CLASSES), dtype=np.float32)
    frames, classes, offsets = _marked_frames(action_frames, action_classes, class_radius, first, span)
    half_classification[frames, classes] = 1.0

    half_displacement = np.full((span, NUM_CLASSES), np.nan, dtype=np.float32)
    frames, classes, offsets = _marked_frames(action_frames, action_classes, displacement_radius, first, span)
    # Nearest action first, then the earlier one (positive offset j - p) on a tie; keep the
    # first candidate of each (frame, class).
    cell = frames * NUM_CLASSES + classes
    order = np.lexsort((-offsets, np.abs(offsets), cell))
    _, first_of_cell = np.unique(cell[order], return_index=True)
    winners = order[first_of_cell]
    half_displacement[frames[winners], classes[winners]] = offsets[winners]

    # [N, L] index of each clip position on the half-level axis.
    positions = starts[:, None] * outputs_per_second - first + np.arange(num_outputs)
    classification[:, :, 1:] = half_classification[positions]
    classification[:, :, 0] = 1.0 - classification[:, :, 1:].max(axis=2)
    displacement[:, :, 1:] = half_displacement[positions]
    return classification, displacement


def usable_audio(half: Half) -> tuple[np.ndarray, int]:
    """A half's mel power ``[128, frames]`` and how many of its frames are used.

    The usable audio is the recording cut to the visual length; where it is shorter, its
    last frame pads the clips (``slice_audio_frames``). The loader refuses audio covering
    less than ``astra.data.dataset.MIN_AUDIO_COVERAGE`` of its half, so this padding
    makes up for the few seconds by which real recordings differ from their halves.
    """
    if half.audio is None:
        raise DataError(
            f"{half.features_path}: audio requested, but half {half.half} of {half.game!r} "
            "was opened without audio"
        )
    return half.audio, min(half.audio.shape[1], half.num_audio_frames)


def slice_audio_frames(
    audio: np.ndarray, first_frames: np.ndarray, num_frames: int, usable_frames: int
) -> np.ndarray:
    """Clips ``[N, 128, num_frames]`` float32 of ``audio`` ``[128, frames]`` from ``first_frames`` ``[N]``.

    Frames at or past ``usable_frames`` repeat frame ``usable_frames - 1``. ``audio`` is a
    half's mel power (``usable_audio``) or anything computed from it frame by frame.
    """
    base = min(int(first_frames.min()), usable_frames - 1)
    end = int(first_frames.max()) + num_frames
    if end - base <= 2 * len(first_frames) * num_frames:
        # Clips close together (one clip, or consecutive inference windows): read their span
        # once as rows of contiguous frames, pad it, and cut the clips out of a window view.
        # An element-wise gather of the same frames is about 4 times slower.
        span = np.asarray(audio[:, base : min(end, usable_frames)], dtype=np.float32)  # [128, S]
        if span.shape[1] < end - base:
            padding = np.broadcast_to(span[:, -1:], (span.shape[0], end - base - span.shape[1]))
            span = np.concatenate([span, padding], axis=1)
        windows = np.lib.stride_tricks.sliding_window_view(span, num_frames, axis=1)  # [128, S', F]
        return windows.transpose(1, 0, 2)[first_frames - base]  # [N, 128, F], one copy
    # Clips far apart: gather only their frames rather than everything between them.
    frames = np.minimum(first_frames[:, None] + np.arange(num_frames), usable_frames - 1)  # [N, F]
    clips = np.asarray(audio[:, frames], dtype=np.float32)  # [128, N, F]
    return np.ascontiguousarray(clips.transpose(1, 0, 2))


def _marked_frames(
    action_frames: np.ndarray, action_classes: np.ndarray, radius: int, first: int, span: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (frame, class, offset j - p) within ``radius`` of an action, on the axis ``[first, first+span)``.

    Returns three ``[M]`` int64 arrays: the frame relative to ``first``, the class and the
    offset; candidates off the axis are dropped.
    """
    offsets = np.arange(-radius, radius + 1, dtype=np.int64)  # [W]
    frames = action_frames[:, None] + offsets[None, :] - first  # [A, W]
    inside = (frames >= 0) & (frames < span)
    classes = np.broadcast_to(action_classes[:, None], frames.shape)
    return frames[inside], classes[inside], np.broadcast_to(offsets, frames.shape)[inside]


def _check_starts(starts_seconds: np.ndarray, num_seconds: int, path: object) -> np.ndarray:
    starts = np.asarray(starts_seconds)
    if starts.ndim != 1 or not np.issubdtype(starts.dtype, np.integer):
        raise ValueError(f"starts_seconds must be a 1-D integer array, got {starts.dtype} {starts.shape}")
    if starts.size and (starts.min() < 0 or starts.max() >= num_seconds):
        raise ValueError(
            f"clip starts must lie in 0..{num_seconds - 1} s, the half of {path}; "
            f"got {int(starts.min())}..{int(starts.max())}"
        )
    return starts.astype(np.int64, copy=False)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value}")
