"""The audio front end: the log-mel formula, prepare then forward, and half-level window preparation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from astra.data.clips import slice_audio_frames
from astra.model.audio import VGGishBackbone
from astra.model.audio_frontend import AudioFrontEnd, clip_band_norm, log_mel_db
from astra.model.temporal_augment import TemporalAugment

REFERENCE = 7430.77  # 0 dB of the authors' conversion (docs/model.md, Model)
MEL_BINS, CLIP_FRAMES, PATCH_FRAMES = 128, 800, 96  # 8-s clips: 8 patches, 32 frames unused


def test_log_mel_formula_on_known_values() -> None:
    loud = torch.tensor([REFERENCE, REFERENCE / 10, REFERENCE * 1e-3, 0.0])
    quiet = loud / 100  # 20 dB lower throughout
    db = log_mel_db(torch.stack([loud, quiet])[:, None, :])  # [2, 1, 4]
    torch.testing.assert_close(db[0, 0], torch.tensor([0.0, -10.0, -30.0, -80.0]))
    # The floor is 80 dB under each clip's own maximum.
    torch.testing.assert_close(db[1, 0], torch.tensor([-20.0, -30.0, -50.0, -100.0]))


def test_log_mel_needs_three_dimensions() -> None:
    with pytest.raises(ValueError, match="B, mels, frames"):
        log_mel_db(torch.ones(128, 10))


def _frontend(
    pool: tuple[int, int], clip_norm: bool, augment: TemporalAugment | None, noise_std: float = 0.0
) -> AudioFrontEnd:
    torch.manual_seed(0)
    backbone = VGGishBackbone(MEL_BINS // pool[1], PATCH_FRAMES // pool[0], (), (8,), 6)
    return AudioFrontEnd(
        mel_bins=MEL_BINS, clip_frames=CLIP_FRAMES, patch_frames=PATCH_FRAMES, input_pool=pool,
        clip_norm=clip_norm, noise_std=noise_std, augment=augment, backbone=backbone,
    )  # fmt: skip


def _power(batch: int, frames: int = CLIP_FRAMES, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    power = 100.0 * torch.rand(batch, MEL_BINS, frames, generator=generator)
    power[0] *= 1e-6  # clips of very different loudness: the floor is per clip
    return power


def _by_hand(frontend: AudioFrontEnd, power: torch.Tensor) -> torch.Tensor:
    """The whole path written out: log-mel, 96-frame patches, each pooled, normalised per clip, backbone."""
    batch, num_patches = power.shape[0], CLIP_FRAMES // PATCH_FRAMES
    steps = log_mel_db(power).transpose(1, 2)  # [B, frames, mels]
    patches = steps[:, : num_patches * PATCH_FRAMES].reshape(batch * num_patches, 1, PATCH_FRAMES, MEL_BINS)
    if frontend.input_pool != (1, 1):
        patches = F.avg_pool2d(patches, frontend.input_pool)
    if frontend.clip_norm:
        patches = clip_band_norm(patches, batch)
    return frontend.backbone(patches).reshape(batch, num_patches, -1)


@pytest.mark.parametrize(
    ("pool", "clip_norm", "augmented"),
    [((1, 1), False, False), ((8, 4), True, False), ((8, 4), True, True), ((2, 4), False, True)],
)
def test_prepare_then_forward_is_the_whole_path(
    pool: tuple[int, int], clip_norm: bool, augmented: bool
) -> None:
    # With temporal dropout and switch (here in eval mode, where they do nothing) the input stays
    # the full log-mel and the front end pools it itself; without them, prepare pools it already.
    augment = TemporalAugment(MEL_BINS, 0.5, 0.3) if augmented else None
    frontend = _frontend(pool, clip_norm, augment).eval()
    assert frontend.pools_early == (pool != (1, 1) and not augmented)
    power = _power(3)
    with torch.no_grad():
        prepared = frontend.prepare(power)
        assert tuple(prepared.shape) == (3, *frontend.input_shape)
        tokens = frontend(prepared)
        assert tokens.shape == (3, CLIP_FRAMES // PATCH_FRAMES, 6)
        torch.testing.assert_close(tokens, _by_hand(frontend, power))
    assert torch.equal(power, _power(3))  # prepare leaves its input alone


def test_prepare_has_no_parameters_and_is_the_same_in_training() -> None:
    frontend = _frontend((8, 4), True, TemporalAugment(MEL_BINS, 0.0, 0.0), noise_std=0.5)
    power = _power(2)
    trained = frontend.train().prepare(power)
    assert not trained.requires_grad
    assert torch.equal(trained, frontend.eval().prepare(power))


def test_the_windows_of_a_half_are_prepared_as_each_window_alone() -> None:
    # A half's decibels once, windows cut from them (past the end of the usable audio its last frame
    # repeats), then prepare_decibels: bit for bit the prepare of each window's own mel power.
    for frontend in (_frontend((8, 4), True, None), _frontend((1, 1), False, None)):
        half = _power(1, frames=2_000, seed=1)[0]  # [128, frames]
        half[:, 700:900] *= 1e-7  # a quiet stretch: windows there get a lower floor
        usable_frames = 1_950
        first_frames = np.array([0, 300, 650, 1_100, 1_500])  # the last window runs past the end
        decibels = frontend.decibels(half[:, :usable_frames].clone()).numpy()
        windows_db = slice_audio_frames(decibels, first_frames, CLIP_FRAMES, usable_frames)
        before = windows_db.copy()
        got = frontend.prepare_decibels(torch.from_numpy(windows_db))
        assert np.array_equal(windows_db, before)  # not floored in place
        power = slice_audio_frames(half.numpy(), first_frames, CLIP_FRAMES, usable_frames)
        assert torch.equal(got, frontend.prepare(torch.from_numpy(power)))


def test_noise_is_drawn_in_training_only() -> None:
    frontend = _frontend((8, 4), True, None, noise_std=0.5)
    seen: list[torch.Tensor] = []
    frontend.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    prepared = frontend.prepare(_power(2))
    with torch.no_grad():
        frontend.train()(prepared)
        frontend.eval()(prepared)
        frontend(prepared)
    assert torch.equal(seen[1], seen[2])
    noise = seen[0] - seen[1]
    assert abs(noise.std().item() - 0.5) < 0.05 and abs(noise.mean().item()) < 0.05


def test_wrong_audio_is_named() -> None:
    pooled = _frontend((8, 4), True, None)
    with pytest.raises(ValueError, match=r"audio must be \[B, 128, 800\] mel power, got \(2, 128, 799\)"):
        pooled.prepare(_power(2)[:, :, :-1])
    with pytest.raises(ValueError, match=r"audio must be \[B, 128, 800\] decibels"):
        pooled.prepare_decibels(torch.zeros(2, 128, 700))
    with pytest.raises(ValueError, match=r"audio must be \[B, 32, 96\], got \(2, 128, 800\)"):
        pooled(_power(2))  # mel power (or a full log-mel) where the pooled log-mel is due


def test_the_front_end_owns_its_backbone_and_augmentation() -> None:
    frontend = _frontend((8, 4), True, TemporalAugment(MEL_BINS, 0.5, 0.0))
    names = [name for name, _ in frontend.named_parameters()]
    layers = [f"backbone.embeddings.{i}.{kind}" for i in (0, 2) for kind in ("weight", "bias")]
    assert names == [*layers, "augment.replacement"]
    frontend.eval()
    assert not frontend.backbone.training and frontend.augment is not None and not frontend.augment.training
