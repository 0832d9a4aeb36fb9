"""Training clips as a torch Dataset over memory-mapped halves.

An epoch's plan (which clip of which half) is drawn in the main process from
the seed and the epoch number, so that it is the same on every worker and
under every number of data-loading processes; items only slice memory maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from astra.config import ClipConfig
from astra.data.clips import encode_targets, slice_clips, training_clip_starts
from astra.data.dataset import Half
from astra.training.pooled_audio import ClipAudioFromHalves


def epoch_plan(
    halves: Sequence[Half],
    clips: ClipConfig,
    *,
    seed: int,
    epoch: int,
    max_clips: int = 0,
) -> np.ndarray:
    """``[N, 2]`` int64 rows (half index, start second) for one epoch, shuffled.

    Each half contributes the non-overlapping clips of one random phase (docs/model.md, "Clips and targets");
    ``max_clips > 0`` keeps a random subset of that many.
    """
    rng = np.random.default_rng([seed, epoch])
    rows = [
        np.stack([np.full(len(starts), index), starts], axis=1)
        for index, half in enumerate(halves)
        for starts in [
            training_clip_starts(
                half.num_seconds, clips.clip_seconds, int(clips.train_stride_seconds), rng=rng
            )
        ]
    ]
    plan = np.concatenate(rows).astype(np.int64)
    plan = plan[rng.permutation(len(plan))]
    if max_clips > 0:
        plan = plan[:max_clips]
    return plan


def shard(plan: np.ndarray, rank: int, world_size: int, batch_size: int) -> np.ndarray:
    """This worker's rows: every world_size-th, cut to whole batches equal on every worker."""
    per_worker = len(plan) // world_size
    per_worker -= per_worker % batch_size
    return plan[rank::world_size][:per_worker]


class ClipDataset(torch.utils.data.Dataset):
    """Item ``i`` of a plan: ``(features [T, D], audio [mels, T*100] or empty, class, displacement)``.

    The targets are ``[L, C+1]`` each (NaN: no displacement target). With ``prepare_audio`` (the
    model's ``prepare_audio``, ``train.prepare_audio_in_loader``) the audio is what it returns for
    the clip, ``[*input_shape]``: the model's audio input, which the training step then skips
    preparing. It is element-wise, per-clip maxima and pools of each clip: clip by clip, the same
    values as for the batch. With ``pooled_audio`` (``train.training_audio_from_half``) a clip
    whose input its half's pools hold takes it from there (the same values, bit for bit), the
    others their own ``prepare_audio``.
    """

    def __init__(
        self,
        halves: Sequence[Half],
        plan: np.ndarray,
        clips: ClipConfig,
        *,
        with_audio: bool,
        prepare_audio: Callable[[torch.Tensor], torch.Tensor] | None = None,
        pooled_audio: ClipAudioFromHalves | None = None,
    ) -> None:
        self.halves = halves
        self.plan = plan
        self.clips = clips
        self.with_audio = with_audio
        self.prepare_audio = prepare_audio if with_audio else None
        if pooled_audio is not None and self.prepare_audio is None:
            raise ValueError("pooled audio inputs need prepare_audio for the clips whose floor binds")
        self.pooled_audio = pooled_audio if with_audio else None

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | torch.Tensor, np.ndarray, np.ndarray]:
        half_index, start = self.plan[index]
        half = self.halves[int(half_index)]
        starts = np.array([start], dtype=np.int64)
        pooled = None
        if self.pooled_audio is not None:
            pooled = self.pooled_audio.clip_input(int(half_index), int(start))
        with_audio = self.with_audio and pooled is None
        features, audio = slice_clips(half, starts, self.clips.clip_seconds, with_audio=with_audio)
        classification, displacement = encode_targets(
            half.annotations,
            starts,
            self.clips.clip_seconds,
            self.clips.outputs_per_second,
            self.clips.class_radius_seconds,
            self.clips.displacement_radius_seconds,
        )
        if pooled is not None:
            return features[0], pooled, classification[0], displacement[0]
        if audio is None:
            return features[0], np.zeros(0, dtype=np.float32), classification[0], displacement[0]
        if self.prepare_audio is not None:
            with torch.no_grad():
                return (
                    features[0],
                    self.prepare_audio(torch.from_numpy(audio))[0],
                    classification[0],
                    displacement[0],
                )
        return features[0], audio[0], classification[0], displacement[0]
