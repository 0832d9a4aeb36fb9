"""From a checkpoint to per-position outputs: library functions that ``astra predict``, training's
validation, the search and the ensembles call.

``load_for_inference`` rebuilds the model of a checkpoint (its weight average when the run
kept one). ``predict_half`` slides windows over a half (``clips.inference_stride_seconds``),
runs the model and aggregates the window outputs into the per-position output of the half
(``[frames at 2 fps, 17]``, the array that ensembles average); ``predict_games`` does it game
by game over a split. Decoding (Soft-NMS) and scoring are numpy-only: ``astra.postprocess``
and ``astra.evaluation.score_outputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astra.classes import FRAMES_PER_SECOND
from astra.config import ClipConfig, ConfigError, ExperimentConfig, InferenceConfig, config_from_dict, replace
from astra.data.clips import inference_window_starts, slice_audio_frames, slice_clips, usable_audio
from astra.data.dataset import AUDIO_FRAMES_PER_SECOND, DataError, Half, non_finite_message
from astra.data.labels import Annotations
from astra.model import AstraModel, AudioFrontEnd, build_model
from astra.postprocess.aggregation import aggregate_windows
from astra.training import checkpoint


def load_for_inference(
    path: str | Path,
    *,
    inference: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
) -> tuple[AstraModel, ExperimentConfig]:
    """The model of checkpoint ``path`` in eval mode on ``device``, and its config.

    ``inference`` updates the checkpoint's ``inference.*`` settings (``{"inference.nms": "hard"}``,
    dotted paths; nothing else may change at prediction time). The weights are the weight
    average when the run kept one (``train.ema_decay``). Errors name the file.
    """
    path = Path(path)
    saved = checkpoint.load(path)
    try:
        config = config_from_dict(saved["config"], source="config")
    except ConfigError as error:
        raise checkpoint.CheckpointError(f"{path}: the config stored in this checkpoint: {error}") from None
    updates = dict(inference or {})
    others = sorted(key for key in updates if not key.startswith("inference."))
    if others:
        raise ConfigError(f"{others[0]}: only inference.* settings can change at prediction time")
    config = replace(config, updates)
    device = torch.device(device) if device is not None else default_device()
    model = build_model(config.model, config.clips, load_pretrained=False)  # the checkpoint holds them
    checkpoint.load_weights(model, checkpoint.inference_weights(saved), path)
    return model.to(device).eval(), config


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predict_games(
    model: torch.nn.Module,
    halves: Sequence[Half],
    config: ExperimentConfig,
    *,
    device: torch.device,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> Iterator[tuple[str, dict[int, np.ndarray]]]:
    """``(game, {half: [frames, 17]})`` for each game of ``halves``, in first-seen order.

    One game at a time, so that a split's outputs need not all be in memory.
    """
    for game, game_halves in group_by_game(halves).items():
        yield game, {
            h.half: predict_half(
                model, h, config.clips, config.inference, with_audio=config.model.use_audio,
                device=device, batch_size=batch_size, autocast_dtype=autocast_dtype,
            )
            for h in game_halves
        }  # fmt: skip


def predict_split(
    model: torch.nn.Module,
    halves: Sequence[Half],
    config: ExperimentConfig,
    *,
    device: torch.device,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, dict[int, np.ndarray]]:
    """``{game: {half: [frames at 2 fps, 17]}}``: the per-position outputs of every game of ``halves``."""
    return dict(
        predict_games(
            model, halves, config, device=device, batch_size=batch_size, autocast_dtype=autocast_dtype
        )
    )


def num_frames_of(half: Half) -> int:
    """Length of a half's per-position output: 2 frames per second of video."""
    return half.num_seconds * FRAMES_PER_SECOND


@torch.no_grad()
def predict_half(
    model: AstraModel,
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
    # Windows overlap (6 of them cover each second at the defaults): the half's audio is turned
    # into decibels once, and the front end prepares each window's slice (its own 80-dB floor,
    # its pool), exactly its prepare of that window's mel power.
    frontend = model.audio_frontend if with_audio else None
    if with_audio and frontend is None:
        raise ValueError("with_audio: this model was built without audio (model.use_audio: false)")
    if frontend is None:
        return predict_windows(
            model, half, clips, inference, starts, lambda first, stop: None,
            device=device, batch_size=batch_size, autocast_dtype=autocast_dtype,
        )  # fmt: skip
    decibels = half_decibels(half, frontend)
    window_frames = clips.clip_seconds * AUDIO_FRAMES_PER_SECOND

    def audio_of(first: int, stop: int) -> torch.Tensor:
        window_db = slice_audio_frames(
            decibels, starts[first:stop] * AUDIO_FRAMES_PER_SECOND, window_frames, decibels.shape[1]
        )
        return frontend.prepare_decibels(torch.from_numpy(window_db).to(device))

    return predict_windows(
        model, half, clips, inference, starts, audio_of,
        device=device, batch_size=batch_size, autocast_dtype=autocast_dtype,
    )  # fmt: skip


@torch.no_grad()
def predict_windows(
    model: torch.nn.Module,
    half: Half,
    clips: ClipConfig,
    inference: InferenceConfig,
    starts: np.ndarray,
    audio_of: Callable[[int, int], torch.Tensor | None],
    *,
    device: torch.device,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """The per-position output of ``half`` from the model run on windows starting at ``starts``
    (seconds), ``batch_size`` at a time. ``audio_of(first, stop)`` gives the audio inputs of windows
    ``first .. stop - 1`` on ``device`` (None: a visual-only model); it runs under the autocast."""
    class_scores: list[np.ndarray] = []
    displacement: list[np.ndarray] = []
    for first in range(0, len(starts), batch_size):
        batch_starts = starts[first : first + batch_size]
        features, _ = slice_clips(half, batch_starts, clips.clip_seconds, with_audio=False)
        features_t = torch.from_numpy(features).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(features_t, audio_of(first, first + len(batch_starts)))
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


def half_decibels(
    half: Half, frontend: AudioFrontEnd, chunk_frames: int = 60 * AUDIO_FRAMES_PER_SECOND
) -> np.ndarray:
    """``[128, usable frames]`` float32: a half's mel power in the front end's decibels, before any floor.

    Read and converted a minute at a time. Raises :class:`DataError` naming the file and the
    frame where the recording holds NaN or inf.
    """
    recording, usable_frames = usable_audio(half)
    decibels = np.empty((recording.shape[0], usable_frames), dtype=np.float32)
    for first in range(0, usable_frames, chunk_frames):
        stop = min(first + chunk_frames, usable_frames)
        power = np.array(recording[:, first:stop], dtype=np.float32)  # a writable copy
        finite = np.isfinite(power).all(axis=0)
        if not finite.all():
            frame = first + int(np.argmin(finite))
            assert half.audio_path is not None
            raise DataError(non_finite_message(half.audio_path, frame // AUDIO_FRAMES_PER_SECOND, frame))
        decibels[:, first:stop] = frontend.decibels(torch.from_numpy(power)).numpy()
    return decibels


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
