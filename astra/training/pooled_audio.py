"""Audio inputs pooled once per half, for training clips and validation windows alike.

A front end that pools in ``prepare`` (``AudioFrontEnd.pools_early``: the small preset's 8 frames
x 4 mel bins) turns a clip's mel power into decibels, floors them 80 dB under the clip's maximum
and averages them over tiles. Where no value of the tiles a clip reads lies under its floor, the
floor changes nothing, and the clip's input is the pool of the half's decibels on the same
tiles: one pool of the half per tile phase (a clip starting at frame ``f`` reads the grid of
``p``-frame tiles that starts at ``f mod p``) serves every clip that starts on it. The average
pool sums each tile in one fixed order wherever the tile lies, so these inputs are those of the
clip's own pass, bit for bit (tests/training/test_speed_switches.py). Clips where the floor binds
are left to their own pass.

``HalfPools`` is that core; ``ClipAudioFromHalves`` serves the training clips of
``train.training_audio_from_half`` (the validation windows' counterpart is
``astra.training.validation_audio.WindowAudioInputs``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from astra.data.dataset import AUDIO_FRAMES_PER_SECOND, Half
from astra.inference import half_decibels
from astra.model import AudioFrontEnd
from astra.model.audio_frontend import DYNAMIC_RANGE_DB


class HalfPools:
    """Pools of a half's decibels ``[mel_bins, usable frames]`` (before any floor) for clips of the
    front end's length starting at frames ``first_frames``.

    ``floor_binds[i]``: whether clip ``i``'s floor (80 dB under the maximum of all its frames,
    as ``floor_dynamic_range`` takes it) lies above a value the pool reads; ``pooled_input(i)``
    is clip ``i``'s input where it does not. Frames past the usable ones repeat the last, as
    ``slice_audio_frames`` pads them.
    """

    def __init__(
        self, decibels: np.ndarray, frontend: AudioFrontEnd, first_frames: np.ndarray, *, device: torch.device
    ) -> None:
        if not frontend.pools_early:
            raise ValueError("the front end does not pool in prepare: its clips need their own pass")
        self.first_frames = np.asarray(first_frames, dtype=np.int64)
        clip_frames = frontend.clip_frames
        usable_frames = decibels.shape[1]
        frames, bins = frontend.input_pool
        self.pool_frames = frames
        used_frames = frontend.num_patches * frontend.patch_frames  # the frames the pool reads
        self.tiles = used_frames // frames
        # The half, padded to the last clip's end with its last frame (a view where none is needed).
        end = int(self.first_frames.max()) + clip_frames
        extended = decibels
        if end > usable_frames:
            padding = np.broadcast_to(decibels[:, -1:], (decibels.shape[0], end - usable_frames))
            extended = np.concatenate([decibels, padding], axis=1)
        # Each clip's floor and whether it binds, in float32 as torch has it.
        frame_max = extended.max(axis=0)
        frame_min = extended.min(axis=0)
        self.floor_binds = np.empty(len(self.first_frames), dtype=bool)
        for index, first in enumerate(self.first_frames):
            floor = np.float32(frame_max[first : first + clip_frames].max()) - np.float32(DYNAMIC_RANGE_DB)
            self.floor_binds[index] = bool(frame_min[first : first + used_frames].min() < floor)
        # One pool of the half per tile phase of the clips that take their input from it.
        self.pooled: dict[int, torch.Tensor] = {}
        half = torch.from_numpy(np.ascontiguousarray(extended)).to(device)
        for phase in sorted({int(f) % frames for f in self.first_frames[~self.floor_binds]}):
            tiles = (half.shape[1] - phase) // frames
            grid = half[:, phase : phase + tiles * frames]
            # [mel_bins / q, tiles]: AudioFrontEnd.pool's average over q mel bins x p frames.
            self.pooled[phase] = nn.functional.avg_pool2d(grid[None, None], (bins, frames))[0, 0]

    def pooled_input(self, index: int) -> torch.Tensor | None:
        """Clip ``index``'s input ``[*input_shape]`` (a view of the half's pool), or None where its
        floor binds."""
        if self.floor_binds[index]:
            return None
        first = int(self.first_frames[index])
        phase = first % self.pool_frames
        tile = (first - phase) // self.pool_frames
        return self.pooled[phase][:, tile : tile + self.tiles]


class ClipAudioFromHalves:
    """The pooled audio inputs of training clips (``train.training_audio_from_half``).

    Built once per training run: each half's mel power is read and turned into decibels once
    (``astra.inference.half_decibels``, which names a non-finite frame's file), and pooled for
    clips starting on any of its seconds. ``clip_input(half_index, start_second)`` is the clip's
    input, or None where the clip's floor binds (the loader then takes the clip's own pass).
    The pools hold ``mel_bins / q x frames / p`` values per tile phase of a half: 1/32 of its
    mel power at 8 x 4 per phase.
    """

    def __init__(self, halves: Sequence[Half], frontend: AudioFrontEnd) -> None:
        self.halves: list[HalfPools] = []
        for half in halves:
            decibels = half_decibels(half, frontend)
            starts = np.arange(half.num_seconds, dtype=np.int64) * AUDIO_FRAMES_PER_SECOND
            self.halves.append(HalfPools(decibels, frontend, starts, device=torch.device("cpu")))

    def clip_input(self, half_index: int, start_second: int) -> torch.Tensor | None:
        return self.halves[half_index].pooled_input(start_second)
