"""The audio front end: a clip's mel power -> its audio tokens ``[B, L_a, d]`` (paper, 3.2).

Data flow (shapes for the paper preset; ``p x q`` is ``model.audio_input_pool``, frames x mel bins)::

    mel power [B, 128, 100 T]
      -> prepare: decibels, floored 80 dB under each clip's maximum (pooled p x q where pools_early)
    audio input [B, 128, 100 T], or pooled [B, 128 / q, L_a * 96 / p]      (what mixup mixes)
      -> forward: temporal dropout/switch of the 10-ms steps (training) -> L_a patches [96 / p, 128 / q]
         -> band norm over the clip (model.audio_clip_norm) -> noise (model.audio_noise_std, training)
         -> backbone -> [B, L_a, d]

``prepare`` has no parameters, so that training can mix its output (the authors' order:
log-mel, mixup, temporal dropout and switch, CNN). It equals ``prepare_decibels(decibels(power))``
bit for bit: ``decibels`` is element-wise, so inference converts a whole half once and
prepares the windows cut from it (``astra.inference.predict_half``).

The pool tiles each patch (checked when the model is built), so pooling the clip and then
cutting patches equals cutting patches and pooling each; and the pool and mixup are both
linear, so mixing the pooled log-mel (32x smaller at 8 x 4, and so the mixup queue) is mixing
the log-mel. Only the temporal dropout and switch, which act on 10-ms steps, need the full
log-mel, so a model with them enabled does not pool early.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from astra.layout import AUDIO_REFERENCE_POWER
from astra.model.audio import VGGishBackbone
from astra.model.temporal_augment import TemporalAugment

MEL_POWER_FLOOR = 1e-10
DYNAMIC_RANGE_DB = 80.0


class AudioFrontEnd(nn.Module):
    """Mel power -> audio tokens: the decibel conversion, the pool, the audio's temporal dropout and
    switch, the patches, the per-clip band norm, the training noise and the backbone.

    Submodules come in as keyword arguments (see ``astra.model.astra.build_model``); ``augment``
    None is no temporal augmentation.
    """

    def __init__(
        self,
        *,
        mel_bins: int,
        clip_frames: int,
        patch_frames: int,
        input_pool: tuple[int, int] = (1, 1),
        clip_norm: bool = False,
        noise_std: float = 0.0,
        augment: TemporalAugment | None,
        backbone: VGGishBackbone,
    ) -> None:
        super().__init__()
        self.mel_bins = mel_bins
        self.clip_frames = clip_frames  # T * 100
        self.patch_frames = patch_frames
        self.num_patches = audio_patch_count(clip_frames, patch_frames)  # L_a
        self.input_pool = input_pool  # (frames, mel bins) averaged before the backbone
        self.clip_norm = clip_norm  # each band standardised over the clip, after the pool
        self.noise_std = noise_std  # training only, on what the backbone reads
        self.backbone = backbone
        self.augment = augment

    @property
    def pools_early(self) -> bool:
        """Whether ``prepare`` returns the pooled log-mel rather than the full one.

        True with ``model.audio_input_pool`` and without the audio's temporal dropout and switch.
        """
        steps_augmented = self.augment is not None and self.augment.enabled
        return self.input_pool != (1, 1) and not steps_augmented

    @property
    def input_shape(self) -> tuple[int, int]:
        """The shape of one clip's audio input: ``(mel_bins, T * 100)``, or pooled
        ``(mel_bins / q, L_a * patch_frames / p)`` where ``pools_early``."""
        if not self.pools_early:
            return (self.mel_bins, self.clip_frames)
        frames, bins = self.input_pool
        return (self.mel_bins // bins, self.num_patches * self.patch_frames // frames)

    @staticmethod
    def decibels(power: torch.Tensor) -> torch.Tensor:
        """Mel power of any shape -> decibels (``power_to_db``), before any floor: element-wise,
        so a clip's decibels are those of the half it was cut from."""
        return power_to_db(power)

    def prepare(self, power: torch.Tensor) -> torch.Tensor:
        """``[B, mel_bins, T * 100]`` mel power -> ``[B, *input_shape]``, the audio input of ``forward``.

        The log-mel dB (``log_mel_db``), and where ``pools_early`` its pool (``pool``). No parameters.
        """
        self._check_clips(power, "mel power")
        decibels = self.decibels(power.float())
        return self._pool_early(floor_dynamic_range(decibels, in_place=True))  # its own new tensor

    def prepare_decibels(self, decibels: torch.Tensor) -> torch.Tensor:
        """``[B, mel_bins, T * 100]`` decibels (``decibels`` of the clips' mel power, or windows cut
        from a half's) -> ``[B, *input_shape]``: each clip floored at its own maximum minus 80 dB,
        then pooled where ``pools_early``; ``prepare`` of the same power, bit for bit."""
        self._check_clips(decibels, "decibels")
        return self._pool_early(floor_dynamic_range(decibels))

    def pool(self, log_mel: torch.Tensor) -> torch.Tensor:
        """``[B, mel_bins, T * 100]`` -> ``[B, mel_bins / q, L_a * 96 / p]``: the frames of the
        ``L_a`` patches averaged over ``model.audio_input_pool`` = (p frames, q mel bins)."""
        frames, bins = self.input_pool
        used_frames = self.num_patches * self.patch_frames
        return nn.functional.avg_pool2d(log_mel[:, None, :, :used_frames], (bins, frames)).squeeze(1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, *input_shape]`` from ``prepare`` (mixed or not) -> audio tokens ``[B, L_a, d]``."""
        if audio.dim() != 3 or tuple(audio.shape[1:]) != self.input_shape:
            rows, columns = self.input_shape
            raise ValueError(
                f"audio must be [B, {rows}, {columns}], got {tuple(audio.shape)} "
                "(the front end's prepare turns mel power into it)"
            )
        batch = audio.shape[0]
        patches = self._patches(audio)  # [B * L_a, 1, 96 / p, mel_bins / q]
        if self.clip_norm:
            patches = clip_band_norm(patches, batch)
        if self.training and self.noise_std > 0:
            patches = patches + self.noise_std * torch.randn_like(patches)
        return self.backbone(patches).reshape(batch, self.num_patches, -1)  # [B, L_a, d]

    def _pool_early(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.pool(log_mel) if self.pools_early else log_mel

    def _patches(self, audio: torch.Tensor) -> torch.Tensor:
        """The audio input -> ``[B * L_a, 1, 96 / p, mel_bins / q]``, the pooled patches of each clip in
        order, for one batched backbone pass.

        Unless the temporal dropout or switch is at work on the 10-ms steps, a full log-mel is
        pooled whole before it is cut into patches: the same averages, without first copying it
        into patch layout at full resolution.
        """
        batch = audio.shape[0]
        frames, bins = self.input_pool
        steps_augmented = self.augment is not None and self.augment.active
        if self.input_pool != (1, 1) and not steps_augmented:
            pooled = audio if self.pools_early else self.pool(audio)
            # [B, mel_bins / q, L_a * 96 / p] -> [B * L_a, 1, 96 / p, mel_bins / q]
            return pooled.transpose(1, 2).reshape(
                batch * self.num_patches, 1, self.patch_frames // frames, self.mel_bins // bins
            )
        steps = audio.transpose(1, 2)  # [B, frames, mel_bins]: a step is one 10-ms frame
        if self.augment is not None:
            steps = self.augment(steps)
        patches = steps[:, : self.num_patches * self.patch_frames].reshape(
            batch * self.num_patches, 1, self.patch_frames, self.mel_bins
        )
        if self.input_pool == (1, 1):
            return patches
        return nn.functional.avg_pool2d(patches, self.input_pool)

    def _check_clips(self, audio: torch.Tensor, kind: str) -> None:
        expected = (self.mel_bins, self.clip_frames)
        if audio.dim() != 3 or tuple(audio.shape[1:]) != expected:
            raise ValueError(
                f"audio must be [B, {expected[0]}, {expected[1]}] {kind}, got {tuple(audio.shape)}"
            )


def audio_patch_count(clip_frames: int, patch_frames: int) -> int:
    """L_a = floor(T * 100 / patch_frames): 52 patches of 0.96 s in a 50-s clip."""
    return clip_frames // patch_frames


def log_mel_db(mel_power: torch.Tensor) -> torch.Tensor:
    """``[B, mels, frames]`` mel power -> ``[B, mels, frames]`` decibels, floored per clip.

    dB = 10 * (log10(max(1e-10, x)) - log10(7430.77)), then clamped from below
    at 80 dB under the clip's maximum. The authors take the maximum over the
    whole batch; we take it per clip, so that a clip's input does not depend on
    the other clips of its batch (batched and unbatched inference agree).
    """
    if mel_power.dim() != 3:
        raise ValueError(f"mel power must be [B, mels, frames], got shape {tuple(mel_power.shape)}")
    return floor_dynamic_range(power_to_db(mel_power), in_place=True)


def power_to_db(mel_power: torch.Tensor) -> torch.Tensor:
    """Mel power of any shape -> 10 * (log10(max(1e-10, x)) - log10(7430.77)), a new tensor.

    In place on one new tensor: the same operations, in the same order, as the formula.
    """
    db = mel_power.clamp_min(MEL_POWER_FLOOR)
    return db.log10_().sub_(math.log10(AUDIO_REFERENCE_POWER)).mul_(10.0)


def floor_dynamic_range(db: torch.Tensor, *, in_place: bool = False) -> torch.Tensor:
    """``[B, mels, frames]`` decibels clamped from below at 80 dB under each clip's maximum."""
    if db.dim() != 3:
        raise ValueError(f"decibels must be [B, mels, frames], got shape {tuple(db.shape)}")
    floor_db = db.amax(dim=(1, 2), keepdim=True) - DYNAMIC_RANGE_DB  # [B, 1, 1]
    return torch.maximum(db, floor_db, out=db if in_place else None)


def clip_band_norm(patches: torch.Tensor, batch: int) -> torch.Tensor:
    """Standardise every band of each clip's patches over the clip (``model.audio_clip_norm``).

    ``patches`` ``[B * L_a, 1, F, M]`` log-mel dB, the ``L_a`` patches of each clip in order ->
    the same shape, each of the ``M`` bands minus its mean over the clip's ``L_a * F`` frames and
    divided by ``sqrt(variance + 1)`` (1 dB^2 keeps a near-constant band, such as one at the floor,
    from being amplified into noise). Clips never see each other's statistics.
    """
    shape = patches.shape
    steps = patches.reshape(batch, -1, shape[-1])  # [B, L_a * F, M]
    variance, mean = torch.var_mean(steps, dim=1, correction=0, keepdim=True)
    return ((steps - mean) * torch.rsqrt(variance + 1.0)).reshape(shape)
