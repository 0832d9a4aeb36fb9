"""Validation's audio inputs pooled once per half (``train.validation_audio_from_half``).

``astra.inference.predict_half`` cuts each window's decibels out of the half ``[B, 128, T * 100]``,
floors them 80 dB under the window's maximum and pools them (``AudioFrontEnd.prepare_decibels``):
windows overlap (50 s every 8 s: each frame lies in 6 of them), so every frame is copied, floored
and pooled 6 times. Where no value of a window's pooled frames lies under its floor, the floor
changes nothing, and the window's input is the pool of the half's decibels on the same tiles: one
pool of the half (one per tile phase the window starts fall on: frame ``100 s`` lies on the pool's
grid of ``p`` frames or ``100 s mod p`` past it) serves all of them. The other windows take the
front end's own pass. ``predict_half_pooled`` is ``predict_half`` with these inputs: the same windows,
the same batches, the same values (the average pool sums each tile in one fixed order, wherever the
tile lies; tests/training/test_speed_switches.py checks the outputs against ``predict_half``).
"""

from __future__ import annotations

import numpy as np
import torch

from astra.config import ClipConfig, InferenceConfig
from astra.data.clips import inference_window_starts, slice_audio_frames
from astra.data.dataset import AUDIO_FRAMES_PER_SECOND, Half
from astra.inference import half_decibels, predict_half, predict_windows
from astra.model import AstraModel, AudioFrontEnd
from astra.training.pooled_audio import HalfPools


def pools_from_half(model: AstraModel) -> bool:
    """Whether the model's audio inputs can be taken from a pooled half: audio that is pooled in
    ``prepare`` (``AudioFrontEnd.pools_early``)."""
    frontend = model.audio_frontend
    return frontend is not None and frontend.pools_early


@torch.no_grad()
def predict_half_pooled(
    model: AstraModel,
    half: Half,
    clips: ClipConfig,
    inference: InferenceConfig,
    *,
    device: torch.device,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """``predict_half(model, half, ..., with_audio=True)``, its audio inputs pooled once per half.

    A model whose audio is not pooled in ``prepare`` goes to ``predict_half`` itself.
    """
    if not pools_from_half(model):
        return predict_half(
            model, half, clips, inference, with_audio=True, device=device, batch_size=batch_size,
            autocast_dtype=autocast_dtype,
        )  # fmt: skip
    frontend = model.audio_frontend
    assert frontend is not None
    starts = inference_window_starts(
        half.num_seconds, clips.clip_seconds, int(clips.inference_stride_seconds)
    )
    inputs = WindowAudioInputs(
        half_decibels(half, frontend), frontend, starts * AUDIO_FRAMES_PER_SECOND, device=device
    )
    return predict_windows(
        model, half, clips, inference, starts, inputs.windows,
        device=device, batch_size=batch_size, autocast_dtype=autocast_dtype,
    )  # fmt: skip


class WindowAudioInputs:
    """The audio inputs ``[N, *frontend.input_shape]`` of windows starting at frames ``first_frames``
    of a half whose decibels (before any floor) are ``decibels`` ``[mel_bins, usable frames]``:
    from the half's pools (``HalfPools``) where the floor does not bind, from the window's own pass
    elsewhere.

    Frames past the usable ones repeat the last, as ``slice_audio_frames`` pads them.
    """

    def __init__(
        self, decibels: np.ndarray, frontend: AudioFrontEnd, first_frames: np.ndarray, *, device: torch.device
    ) -> None:
        if not frontend.pools_early:
            raise ValueError("the front end does not pool in prepare: its windows need their own pass")
        self.frontend = frontend
        self.device = device
        self.decibels = decibels
        self.pools = HalfPools(decibels, frontend, first_frames, device=device)
        self.first_frames = self.pools.first_frames
        self.floor_binds = self.pools.floor_binds
        self.clip_frames = frontend.clip_frames
        self.usable_frames = decibels.shape[1]

    def windows(self, start: int, stop: int) -> torch.Tensor:
        """The inputs of windows ``start .. stop - 1``, ``[stop - start, *input_shape]`` on the device."""
        rows = [self.pools.pooled_input(index) for index in range(start, stop)]
        binds = self.floor_binds[start:stop]
        if binds.any():
            own = slice_audio_frames(
                self.decibels, self.first_frames[start:stop][binds], self.clip_frames, self.usable_frames
            )
            prepared = self.frontend.prepare_decibels(torch.from_numpy(own).to(self.device))
            for index, row in zip(np.flatnonzero(binds), prepared, strict=True):
                rows[index] = row
        return torch.stack([row for row in rows if row is not None])
