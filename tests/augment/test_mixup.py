"""Balanced, plain and no mixup: target rules, the per-class queue, and its state."""

from __future__ import annotations

import math

import pytest
import torch

from astra.augment.mixup import (
    BalancedMixup,
    MixedBatch,
    MixupError,
    NoMixup,
    PlainMixup,
    build_mixup,
    mix_displacement_targets,
)
from astra.config import AugmentConfig, ConfigError

NUM_CLASSES = 3  # queues 0 (background) .. 3
NUM_SECONDS = 4
FEATURE_DIM = 5
NUM_POSITIONS = 8
NUM_MELS = 3
AUDIO_FRAMES = 6


def _batch(
    clip_classes: list[list[int]],
    *,
    seed: int = 0,
    with_audio: bool = True,
    dtype: torch.dtype = torch.float64,
) -> MixedBatch:
    """Random features and audio; clip i holds one action of each class in ``clip_classes[i]``.

    Class c of a clip is 1 on positions 2c-1 .. 2c (background 0 there, 1 elsewhere) and
    has displacement targets on positions 2c-2 .. 2c+1, NaN elsewhere.
    """
    generator = torch.Generator().manual_seed(seed)
    batch_size = len(clip_classes)
    features = torch.randn(batch_size, NUM_SECONDS, FEATURE_DIM, generator=generator, dtype=dtype)
    audio = (
        torch.randn(batch_size, NUM_MELS, AUDIO_FRAMES, generator=generator, dtype=dtype)
        if with_audio
        else None
    )
    classes = torch.zeros(batch_size, NUM_POSITIONS, NUM_CLASSES + 1, dtype=dtype)
    displacement = torch.full_like(classes, math.nan)
    for clip, present in enumerate(clip_classes):
        for channel in present:
            classes[clip, 2 * channel - 1 : 2 * channel + 1, channel] = 1.0
            frames = torch.arange(2 * channel - 2, 2 * channel + 2)
            displacement[clip, frames, channel] = (frames - 2 * channel + 0.5).to(dtype)
    classes[..., 0] = (classes[..., 1:].amax(dim=-1) == 0).to(dtype)
    return MixedBatch(features, audio, classes, displacement)


def _only_class(channel: int, *, seed: int) -> MixedBatch:
    """One clip whose class ``channel`` covers every position: it enters that queue only."""
    batch = _batch([[]], seed=seed)
    batch.class_targets.zero_()
    batch.class_targets[..., channel] = 1.0
    batch.displacement_targets.fill_(math.nan)
    batch.displacement_targets[0, : NUM_POSITIONS // 2, channel] = 1.5
    return batch


def _balanced(seed: int = 0, **kwargs: float) -> BalancedMixup:
    return BalancedMixup(NUM_CLASSES, generator=torch.Generator().manual_seed(seed), **kwargs)  # type: ignore[arg-type]


def _lambdas(mixed: torch.Tensor, own: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Per clip, the lambda that gives ``mixed = lambda * own + (1 - lambda) * partner``."""
    return ((mixed - partner) / (own - partner)).flatten(1)


def test_displacement_targets_follow_the_four_rules() -> None:
    nan = math.nan
    own = torch.tensor([[[2.0, 2.0, nan, nan]]])
    partner = torch.tensor([[[-1.0, nan, 3.0, nan]]])
    mixed = mix_displacement_targets(own, partner, 0.25)
    assert mixed[0, 0, 0].item() == pytest.approx(0.25 * 2.0 + 0.75 * -1.0)  # both: mixed
    assert mixed[0, 0, 1].item() == 2.0  # only the clip's own: kept
    assert mixed[0, 0, 2].item() == 3.0  # only the partner's: taken
    assert math.isnan(mixed[0, 0, 3].item())  # none: no target


def test_balanced_mixup_applies_the_displacement_rules_to_a_queued_partner() -> None:
    mixup = _balanced()
    queued = _only_class(2, seed=1)
    mixup(*queued)
    batch = _batch([[1, 2], []], seed=2)
    mixed = mixup(*batch)
    lam = _lambdas(mixed.features, batch.features, queued.features)[0, 0].item()
    expected = mix_displacement_targets(batch.displacement_targets, queued.displacement_targets, lam)
    torch.testing.assert_close(mixed.displacement_targets, expected, equal_nan=True)
    own = ~torch.isnan(batch.displacement_targets)
    partner = ~torch.isnan(queued.displacement_targets).expand_as(own)
    assert (
        (own & partner).any()
        and (own & ~partner).any()
        and (~own & partner).any()
        and (~own & ~partner).any()
    )


def test_one_lambda_for_the_whole_batch() -> None:
    mixup = _balanced(seed=3)
    queued = _only_class(1, seed=4)
    mixup(*queued)
    batch = _batch([[2], [3], [], [1, 3]], seed=5)
    mixed = mixup(*batch)
    lambdas = torch.cat(
        [
            _lambdas(mixed.features, batch.features, queued.features),
            _lambdas(mixed.audio, batch.audio, queued.audio),  # type: ignore[arg-type]
        ],
        dim=1,
    )
    torch.testing.assert_close(lambdas, torch.full_like(lambdas, lambdas[0, 0].item()))
    lam = lambdas[0, 0].item()
    torch.testing.assert_close(
        mixed.class_targets, lam * batch.class_targets + (1 - lam) * queued.class_targets
    )


def test_lambda_changes_from_batch_to_batch() -> None:
    mixup = _balanced(seed=6)
    queued = _only_class(3, seed=7)
    mixup(*queued)
    lambdas = set()
    for _ in range(5):
        mixup.load_state_dict(_state_after(queued, seed=7))
        batch = _batch([[1]], seed=8)
        mixed = mixup(*batch)
        lambdas.add(round(_lambdas(mixed.features, batch.features, queued.features)[0, 0].item(), 9))
    assert len(lambdas) == 5


def _state_after(batch: MixedBatch, *, seed: int) -> dict[str, torch.Tensor | None]:
    mixup = _balanced(seed=seed)
    mixup(*batch)
    return mixup.state_dict()


def test_mixed_class_targets_stay_in_unit_interval() -> None:
    mixup = _balanced(seed=9)
    for step in range(20):
        clip_classes = [[1 + (step + i) % NUM_CLASSES] if (step + i) % 4 else [] for i in range(3)]
        mixed = mixup(*_batch(clip_classes, seed=step))
        assert mixed.class_targets.min().item() >= 0.0
        assert mixed.class_targets.max().item() <= 1.0


def test_first_batch_is_left_unmixed_while_the_queue_is_empty() -> None:
    mixup = _balanced()
    batch = _batch([[1], [], [2, 3]])
    mixed = mixup(*batch)
    for got, original in zip(mixed, batch, strict=True):
        torch.testing.assert_close(got, original, equal_nan=True)
    assert mixup.state_dict()["filled"].any()  # ...and the batch entered the queue


def test_clip_without_actions_enters_only_the_background_queue() -> None:
    mixup = _balanced()
    mixup(*_batch([[]]))
    filled = mixup.state_dict()["filled"]
    assert filled is not None
    assert filled[0].sum().item() == 1
    assert not filled[1:].any()


def test_queue_takes_the_first_clips_that_contain_a_class_unmixed() -> None:
    mixup = _balanced(seed=10)
    mixup(*_batch([[1], [2], [3]], seed=11))  # fill some queues, so that the next batch is mixed
    batch = _batch([[2], [1], [2], [2, 3]], seed=12)
    mixed = mixup(*batch)
    assert not torch.equal(mixed.features, batch.features)
    state = mixup.state_dict()
    assert state["features"] is not None and state["audio"] is not None
    # Class 2 is in clips 0, 2, 3: the first two fill its queue, in order, unmixed.
    torch.testing.assert_close(state["features"][2], batch.features[[0, 2]])
    torch.testing.assert_close(state["audio"][2], batch.audio[[0, 2]])  # type: ignore[index]
    torch.testing.assert_close(
        state["displacement_targets"][2], batch.displacement_targets[[0, 2]], equal_nan=True
    )
    # Class 1 is in clip 1 only: one slot takes it, the other keeps its earlier clip.
    queue_1 = state["features"][1]
    assert sum(torch.equal(queue_1[slot], batch.features[1]) for slot in range(2)) == 1


def test_a_single_clip_of_a_class_goes_into_one_random_slot() -> None:
    slots_used = set()
    for seed in range(8):
        mixup = _balanced(seed=seed)
        mixup(*_only_class(1, seed=seed))
        filled = mixup.state_dict()["filled"]
        assert filled is not None and filled.sum().item() == 1 and filled[1].any()
        slots_used.add(int(torch.nonzero(filled[1]).item()))
    assert slots_used == {0, 1}


def test_queue_holds_copies_detached_from_the_batch() -> None:
    mixup = _balanced()
    batch = _batch([[1]])
    features = batch.features.clone().requires_grad_(True)
    mixup(features, batch.audio, batch.class_targets, batch.displacement_targets)
    state = mixup.state_dict()
    assert state["features"] is not None and not state["features"].requires_grad
    kept = state["features"].clone()
    with torch.no_grad():
        features.add_(100.0)
    torch.testing.assert_close(mixup.state_dict()["features"], kept)


def test_batch_of_one_clip() -> None:
    mixup = _balanced(seed=12)
    for seed in range(4):
        batch = _batch([[1 + seed % NUM_CLASSES]], seed=seed)
        mixed = mixup(*batch)
        assert mixed.features.shape == batch.features.shape
        assert torch.isfinite(mixed.features).all()


def _coded_state(filled: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """A queue whose entry (c, s) has features [1, code] with code = 10 c + s + 1."""
    num_queues, queue_size = filled.shape
    codes = 10 * torch.arange(num_queues)[:, None] + torch.arange(queue_size)[None, :] + 1
    features = torch.stack([torch.ones_like(codes), codes], dim=-1).double()[:, :, None, :]  # [C+1, Q, 1, 2]
    classes = torch.zeros(num_queues, queue_size, 1, num_queues, dtype=torch.float64)
    classes[..., 0] = 1.0
    return {
        "filled": filled,
        "features": features,
        "audio": None,
        "class_targets": classes,
        "displacement_targets": torch.full_like(classes, math.nan),
    }


def _partner_codes(mixup: BalancedMixup, num_clips: int) -> torch.Tensor:
    """Mix ``num_clips`` zero clips and read back which queue entry each was mixed with."""
    features = torch.zeros(num_clips, 1, 2, dtype=torch.float64)
    classes = torch.zeros(num_clips, 1, NUM_CLASSES + 1, dtype=torch.float64)
    classes[..., 0] = 1.0
    mixed = mixup(features, None, classes, torch.full_like(classes, math.nan))
    return torch.round(mixed.features[:, 0, 1] / mixed.features[:, 0, 0]).long()


def test_partners_are_drawn_uniformly_over_classes_and_slots() -> None:
    mixup = _balanced(seed=13)
    mixup.load_state_dict(_coded_state(torch.ones(NUM_CLASSES + 1, 2, dtype=torch.bool)))
    num_clips = 8000
    codes = _partner_codes(mixup, num_clips)
    expected = num_clips / (2 * (NUM_CLASSES + 1))
    for class_index in range(NUM_CLASSES + 1):
        for slot in range(2):
            count = (codes == 10 * class_index + slot + 1).sum().item()
            assert abs(count - expected) < 0.15 * expected  # about 7 standard deviations


def test_partners_come_only_from_filled_slots_and_classes_stay_balanced() -> None:
    filled = torch.tensor([[True, True], [False, True], [False, False], [True, False]])
    mixup = _balanced(seed=14)
    mixup.load_state_dict(_coded_state(filled))
    num_clips = 6000
    codes = _partner_codes(mixup, num_clips)
    drawn_classes = (codes - 1) // 10
    drawn_slots = (codes - 1) % 10
    assert filled[drawn_classes, drawn_slots].all()
    for class_index in (0, 1, 3):  # each class with an entry, whatever its number of entries
        count = (drawn_classes == class_index).sum().item()
        assert abs(count - num_clips / 3) < 0.1 * num_clips / 3


def test_state_dict_round_trip_resumes_identically() -> None:
    mixup = _balanced(seed=15)
    for step in range(3):
        mixup(*_batch([[1 + step % NUM_CLASSES], [], [2]], seed=step))
    resumed = _balanced(seed=99)
    resumed.load_state_dict(mixup.state_dict())
    resumed.generator.set_state(mixup.generator.get_state())
    batch = _batch([[3], [1]], seed=20)
    for a, b in zip(mixup(*batch), resumed(*batch), strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)
    for key, value in mixup.state_dict().items():
        torch.testing.assert_close(value, resumed.state_dict()[key], equal_nan=True)


def test_load_state_dict_rejects_a_queue_of_another_shape() -> None:
    state = _balanced().state_dict()
    with pytest.raises(MixupError, match="filled"):
        BalancedMixup(NUM_CLASSES + 1, generator=torch.Generator()).load_state_dict(state)
    with pytest.raises(MixupError, match="keys"):
        _balanced().load_state_dict({"filled": state["filled"]})


def test_balanced_mixup_works_without_audio_and_refuses_to_switch() -> None:
    mixup = _balanced(seed=16)
    for step in range(3):
        mixed = mixup(*_batch([[1], [2]], seed=step, with_audio=False))
        assert mixed.audio is None
    with pytest.raises(MixupError, match="audio"):
        mixup(*_batch([[1]], seed=5, with_audio=True))


def test_queue_follows_the_batch_dtype() -> None:
    mixup = _balanced(seed=17)
    mixup(*_batch([[1], [2], [3]], dtype=torch.float32))
    mixed = mixup(*_batch([[1]], seed=1, dtype=torch.float64))
    assert mixed.features.dtype == torch.float64
    assert mixup.state_dict()["features"].dtype == torch.float64  # type: ignore[union-attr]


def test_batch_with_wrong_channels_is_rejected() -> None:
    batch = _batch([[1]])
    with pytest.raises(MixupError, match="channels"):
        BalancedMixup(NUM_CLASSES + 2, generator=torch.Generator())(*batch)


def test_same_seed_same_mixup() -> None:
    outputs = []
    for _ in range(2):
        mixup = _balanced(seed=18)
        for step in range(3):
            mixed = mixup(*_batch([[1], [2, 3], []], seed=step))
        outputs.append(mixed)
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_plain_mixup_of_one_clip_mixes_it_with_itself() -> None:
    mixup = PlainMixup(alpha=0.6, beta=0.6, generator=torch.Generator().manual_seed(0))
    batch = _batch([[1, 2]])
    mixed = mixup(*batch)
    for got, original in zip(mixed, batch, strict=True):
        torch.testing.assert_close(got, original, equal_nan=True)


def test_plain_mixup_pairs_clips_of_the_batch_with_one_lambda() -> None:
    mixup = PlainMixup(alpha=0.6, beta=0.6, generator=torch.Generator().manual_seed(1))
    batch = _batch([[1], [2], [], [3]], seed=3, with_audio=False)
    # Clip i's features are the basis vector e_i: x'_i = lam e_i + (1 - lam) e_partner(i).
    features = torch.eye(4, dtype=torch.float64)[:, None, :]
    mixed = mixup(features, None, batch.class_targets, batch.displacement_targets)
    assert mixed.audio is None
    partners = []
    lambdas = set()
    for i in range(4):
        others = [j for j in range(4) if j != i and mixed.features[i, 0, j] > 0]
        partners.append(others[0] if others else i)
        if others:
            lambdas.add(round(mixed.features[i, 0, i].item(), 9))
    assert sorted(partners) == [0, 1, 2, 3]  # a permutation of the batch
    assert len(lambdas) == 1
    lam = lambdas.pop()
    torch.testing.assert_close(
        mixed.class_targets, lam * batch.class_targets + (1 - lam) * batch.class_targets[partners]
    )
    expected = mix_displacement_targets(batch.displacement_targets, batch.displacement_targets[partners], lam)
    torch.testing.assert_close(mixed.displacement_targets, expected, equal_nan=True)


def test_no_mixup_returns_the_batch() -> None:
    batch = _batch([[1], []])
    mixed = NoMixup()(*batch)
    assert all(got is original for got, original in zip(mixed, batch, strict=True))


def test_build_mixup_follows_the_config() -> None:
    generator = torch.Generator()
    balanced = build_mixup(AugmentConfig(), NUM_CLASSES, generator=generator)
    assert isinstance(balanced, BalancedMixup)
    assert (balanced.alpha, balanced.beta, balanced.queue_size) == (1.0, 0.6, 2)
    plain = build_mixup(
        AugmentConfig(mixup="plain", mixup_alpha=0.6), num_classes=NUM_CLASSES, generator=generator
    )
    assert isinstance(plain, PlainMixup) and plain.alpha == 0.6
    assert isinstance(
        build_mixup(AugmentConfig(mixup="none"), num_classes=NUM_CLASSES, generator=generator), NoMixup
    )
    with pytest.raises(MixupError, match="mixup"):
        build_mixup(AugmentConfig(mixup="cutmix"), num_classes=NUM_CLASSES, generator=generator)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"augment\.mixup_alpha must be > 0"):
        AugmentConfig(mixup_alpha=0.0)  # refused where the config is built
