"""The ASTRA losses: invariants of Eq. 1 and Eq. 2, gradients, and NaN targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from astra.config import ClipConfig, LossConfig
from astra.losses import (
    LossError,
    classification_loss,
    displacement_loss,
    pooling_window_frames,
    total_loss,
)

NUM_CHANNELS = 4  # 3 classes + background: enough for every invariant here
PAPER_RADII = {"class_radius_seconds": 2.0, "displacement_radius_seconds": 3.0, "outputs_per_second": 2}


def _targets(
    batch_size: int, num_positions: int, actions: list[tuple[int, int, int]], radii: dict[str, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class and displacement targets ``[B, L, K]`` as the data layer encodes them.

    ``actions``: (clip, class channel >= 1, frame p). Class channel 1 on |j - p| <= r_c * rate,
    background 1 elsewhere, displacement j - p on |j - p| <= r_d * rate, NaN elsewhere.
    """
    rate = radii["outputs_per_second"]
    class_half = round(radii["class_radius_seconds"] * rate)
    displacement_half = round(radii["displacement_radius_seconds"] * rate)
    classes = torch.zeros(batch_size, num_positions, NUM_CHANNELS, dtype=torch.float64)
    displacement = torch.full_like(classes, math.nan)
    positions = torch.arange(num_positions)
    for clip, channel, frame in actions:
        offsets = positions - frame
        classes[clip, offsets.abs() <= class_half, channel] = 1.0
        near = offsets.abs() <= displacement_half
        displacement[clip, near, channel] = offsets[near].double()
    classes[..., 0] = (classes[..., 1:].amax(dim=-1) == 0).double()
    return classes, displacement


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(7)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_focal_loss_vanishes_where_scores_equal_mixed_targets(
    gamma: float, generator: torch.Generator
) -> None:
    targets = torch.rand(2, 6, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    loss = classification_loss(targets.clone(), targets, kind="focal", gamma=gamma)
    assert loss.item() == 0.0


def test_bce_matches_torch_binary_cross_entropy_as_epsilon_vanishes(generator: torch.Generator) -> None:
    scores = 0.01 + 0.98 * torch.rand(3, 10, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    targets = torch.rand(3, 10, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    ours = classification_loss(scores, targets, kind="bce", epsilon=1e-12)
    reference = F.binary_cross_entropy(scores, targets)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-9)


def test_focal_with_gamma_zero_is_bce_and_focal_never_exceeds_bce(generator: torch.Generator) -> None:
    scores = torch.rand(2, 8, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    targets = (torch.rand(2, 8, NUM_CHANNELS, generator=generator) > 0.7).double()
    bce = classification_loss(scores, targets, kind="bce")
    assert classification_loss(scores, targets, kind="focal", gamma=0.0).item() == pytest.approx(bce.item())
    for gamma in (1.0, 2.0):
        assert classification_loss(scores, targets, kind="focal", gamma=gamma).item() < bce.item()


def test_classification_loss_is_a_mean_over_batch_positions_and_channels(generator: torch.Generator) -> None:
    scores = torch.rand(2, 5, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    targets = torch.rand(2, 5, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    loss = classification_loss(scores, targets, kind="focal")
    doubled = classification_loss(torch.cat([scores, scores]), torch.cat([targets, targets]), kind="focal")
    assert doubled.item() == pytest.approx(loss.item())


@pytest.mark.parametrize("kind", ["focal", "bce"])
def test_classification_gradient_matches_finite_differences(kind: str, generator: torch.Generator) -> None:
    scores = 0.05 + 0.9 * torch.rand(2, 3, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    targets = torch.rand(2, 3, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: classification_loss(s, targets, kind=kind), (scores,))


def test_classification_rejects_bad_inputs() -> None:
    scores = torch.rand(1, 4, NUM_CHANNELS)
    with pytest.raises(LossError, match="targets"):
        classification_loss(scores, torch.rand(1, 4, NUM_CHANNELS + 1), kind="focal")
    with pytest.raises(LossError, match="kind"):
        classification_loss(scores, scores, kind="hinge")  # type: ignore[arg-type]
    with pytest.raises(LossError, match="gamma"):
        classification_loss(scores, scores, kind="focal", gamma=-1.0)


@pytest.mark.parametrize("uncertainty", [True, False])
def test_displacement_gradient_matches_finite_differences_with_nan_targets(
    uncertainty: bool, generator: torch.Generator
) -> None:
    classes, displacement = _targets(2, 12, [(0, 1, 3), (1, 2, 9), (1, 3, 10)], PAPER_RADII)
    assert torch.isnan(displacement).any()
    mean = torch.randn(2, 12, NUM_CHANNELS, generator=generator, dtype=torch.float64, requires_grad=True)
    log_variance = torch.randn(2, 12, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    log_variance.requires_grad_(uncertainty)

    def loss(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
        return displacement_loss(
            mean, log_variance if uncertainty else None, displacement, classes, alpha=0.3, **PAPER_RADII
        )

    assert torch.autograd.gradcheck(loss, (mean, log_variance))


def test_nan_targets_leave_gradients_finite_and_zero_where_there_is_no_target() -> None:
    classes, displacement = _targets(1, 16, [(0, 2, 8)], PAPER_RADII)
    has_target = ~torch.isnan(displacement)
    # Extreme predictions where there is no target: exp(-log_variance) overflows there.
    mean = torch.where(has_target, 0.5, 1e30).requires_grad_(True)
    log_variance = torch.where(has_target, 0.1, -1e4).requires_grad_(True)
    loss = displacement_loss(mean, log_variance, displacement, classes, alpha=0.3, **PAPER_RADII)
    loss.backward()
    assert torch.isfinite(loss)
    for gradient in (mean.grad, log_variance.grad):
        assert gradient is not None
        assert torch.isfinite(gradient).all()
        assert (gradient[~has_target] == 0).all()
        assert (gradient[has_target] != 0).any()


def test_predictions_where_there_is_no_target_do_not_change_the_loss(generator: torch.Generator) -> None:
    classes, displacement = _targets(2, 14, [(0, 1, 2), (1, 3, 12)], PAPER_RADII)
    no_target = torch.isnan(displacement)
    mean = torch.randn(2, 14, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    log_variance = torch.randn(2, 14, NUM_CHANNELS, generator=generator, dtype=torch.float64)
    noise = torch.randn(2, 14, NUM_CHANNELS, generator=generator, dtype=torch.float64) * no_target
    for variance in (log_variance, None):
        before = displacement_loss(mean, variance, displacement, classes, alpha=0.3, **PAPER_RADII)
        shifted_variance = None if variance is None else variance + noise
        after = displacement_loss(
            mean + noise, shifted_variance, displacement, classes, alpha=0.3, **PAPER_RADII
        )
        assert after.item() == before.item()


def test_no_target_at_all_gives_zero_loss_with_zero_gradient() -> None:
    classes, displacement = _targets(2, 10, [], PAPER_RADII)
    mean = torch.randn(2, 10, NUM_CHANNELS, dtype=torch.float64, requires_grad=True)
    loss = displacement_loss(mean, None, displacement, classes, alpha=0.3, **PAPER_RADII)
    loss.backward()
    assert loss.item() == 0.0
    assert mean.grad is not None and (mean.grad == 0).all()


@pytest.mark.parametrize(
    "radii",
    [
        PAPER_RADII,
        {"class_radius_seconds": 3.0, "displacement_radius_seconds": 6.0, "outputs_per_second": 2},  # M0
        {"class_radius_seconds": 2.0, "displacement_radius_seconds": 3.0, "outputs_per_second": 1},  # M6
    ],
)
def test_every_position_with_a_displacement_target_counts_with_full_weight(radii: dict[str, float]) -> None:
    # The pooled class target spans r_c + (r_d - r_c) = r_d around the action: every
    # displacement target of an unmixed clip weighs 1, also where its class target is 0.
    num_positions = 40
    classes, displacement = _targets(1, num_positions, [(0, 2, 20)], radii)
    mean = torch.zeros(1, num_positions, NUM_CHANNELS, dtype=torch.float64)
    loss = displacement_loss(mean, None, displacement, classes, alpha=0.3, **radii)
    present = displacement[~torch.isnan(displacement)]
    assert (classes[..., 2][~torch.isnan(displacement[..., 2])] == 0).any()
    assert loss.item() == pytest.approx((present**2).sum().item() / num_positions)


def test_displacement_target_far_from_any_class_target_does_not_count() -> None:
    classes, displacement = _targets(1, 30, [(0, 1, 5)], PAPER_RADII)
    mean = torch.zeros(1, 30, NUM_CHANNELS, dtype=torch.float64)
    baseline = displacement_loss(mean, None, displacement, classes, alpha=0.3, **PAPER_RADII)
    stray = displacement.clone()
    stray[0, 25, 3] = 4.0  # class 3 has no class target within the pooling window
    assert displacement_loss(mean, None, stray, classes, alpha=0.3, **PAPER_RADII).item() == baseline.item()


def test_mixed_class_targets_scale_the_displacement_terms() -> None:
    classes, displacement = _targets(1, 30, [(0, 1, 15)], PAPER_RADII)
    mean = torch.zeros(1, 30, NUM_CHANNELS, dtype=torch.float64)
    full = displacement_loss(mean, None, displacement, classes, alpha=0.3, **PAPER_RADII)
    scaled = displacement_loss(mean, None, displacement, 0.25 * classes, alpha=0.3, **PAPER_RADII)
    assert scaled.item() == pytest.approx(0.25 * full.item())


def test_displacement_loss_divides_by_batch_and_positions() -> None:
    classes, displacement = _targets(1, 20, [(0, 1, 10)], PAPER_RADII)
    mean = torch.full((1, 20, NUM_CHANNELS), 0.5, dtype=torch.float64)
    single = displacement_loss(mean, None, displacement, classes, alpha=0.3, **PAPER_RADII)
    empty_classes, empty_displacement = _targets(1, 20, [], PAPER_RADII)
    padded = displacement_loss(
        torch.cat([mean, mean]),
        None,
        torch.cat([displacement, empty_displacement]),
        torch.cat([classes, empty_classes]),
        alpha=0.3,
        **PAPER_RADII,
    )
    assert padded.item() == pytest.approx(single.item() / 2)


@pytest.mark.parametrize("alpha", [0.3, 0.6])
def test_uncertainty_loss_is_smallest_at_the_derived_log_variance(alpha: float) -> None:
    # d/dv [alpha r^2 exp(-v) + (1 - alpha) v] = 0  <=>  v = log(alpha / (1 - alpha) * r^2).
    classes, displacement = _targets(1, 20, [(0, 1, 10)], PAPER_RADII)
    mean = torch.full((1, 20, NUM_CHANNELS), 0.37, dtype=torch.float64)
    residual = torch.nan_to_num(displacement - mean, nan=1.0)
    optimum = torch.log(alpha / (1 - alpha) * residual**2).requires_grad_(True)
    loss = displacement_loss(mean, optimum, displacement, classes, alpha=alpha, **PAPER_RADII)
    loss.backward()
    assert optimum.grad is not None
    assert optimum.grad.abs().max().item() < 1e-12
    for step in (-0.1, 0.1):
        moved = displacement_loss(
            mean, optimum.detach() + step, displacement, classes, alpha=alpha, **PAPER_RADII
        )
        assert moved.item() > loss.item()


def test_half_precision_predictions_give_a_float32_loss() -> None:
    classes, displacement = _targets(1, 12, [(0, 1, 6)], PAPER_RADII)
    mean = torch.zeros(1, 12, NUM_CHANNELS, dtype=torch.bfloat16)
    log_variance = torch.full((1, 12, NUM_CHANNELS), -80.0, dtype=torch.bfloat16)  # exp(80) overflows fp16
    loss = displacement_loss(
        mean, log_variance, displacement.float(), classes.float(), alpha=0.3, **PAPER_RADII
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    scores = torch.full((1, 12, NUM_CHANNELS), 0.5, dtype=torch.bfloat16)
    assert classification_loss(scores, classes.float(), kind="focal").dtype == torch.float32


def test_pooling_window_follows_the_radii() -> None:
    assert pooling_window_frames(2.0, 3.0, 2) == 5  # the paper
    assert pooling_window_frames(3.0, 6.0, 2) == 13  # M0, M1
    assert pooling_window_frames(2.0, 3.0, 1) == 3  # M6
    assert pooling_window_frames(2.0, 2.0, 2) == 1
    with pytest.raises(LossError, match="whole number"):
        pooling_window_frames(2.0, 3.25, 2)
    with pytest.raises(LossError, match="non-negative"):
        pooling_window_frames(3.0, 2.0, 2)


def test_displacement_rejects_bad_inputs() -> None:
    classes, displacement = _targets(1, 8, [(0, 1, 4)], PAPER_RADII)
    mean = torch.zeros(1, 8, NUM_CHANNELS, dtype=torch.float64)
    with pytest.raises(LossError, match="alpha"):
        displacement_loss(mean, mean, displacement, classes, alpha=1.0, **PAPER_RADII)
    with pytest.raises(LossError, match="log_variance"):
        displacement_loss(mean, mean[:, :4], displacement, classes, alpha=0.3, **PAPER_RADII)
    with pytest.raises(LossError, match="class_targets"):
        displacement_loss(mean, None, displacement, classes[..., :2], alpha=0.3, **PAPER_RADII)


def _outputs(batch_size: int, num_positions: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    shape = (batch_size, num_positions, NUM_CHANNELS)
    return {
        "class_scores": torch.rand(shape, generator=generator, dtype=torch.float64).requires_grad_(True),
        "displacement": torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_(True),
        "log_variance": torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_(True),
    }


@pytest.mark.parametrize("uncertainty", [True, False])
def test_total_loss_weights_its_parts(uncertainty: bool, generator: torch.Generator) -> None:
    config = LossConfig(classification_weight=100.0, displacement_weight=2.0)
    clips = ClipConfig()
    classes, displacement = _targets(2, 16, [(0, 1, 4), (1, 2, 11)], PAPER_RADII)
    outputs = _outputs(2, 16, generator)
    loss, parts = total_loss(outputs, classes, displacement, config, clips, uncertainty=uncertainty)
    expected_classification = classification_loss(outputs["class_scores"], classes, kind="focal")
    expected_displacement = displacement_loss(
        outputs["displacement"],
        outputs["log_variance"] if uncertainty else None,
        displacement,
        classes,
        alpha=config.uncertainty_alpha,
        **PAPER_RADII,
    )
    assert parts["classification"].item() == pytest.approx(expected_classification.item())
    assert parts["displacement"].item() == pytest.approx(expected_displacement.item())
    assert loss.item() == pytest.approx(
        100.0 * expected_classification.item() + 2.0 * expected_displacement.item()
    )
    assert set(parts) == {"classification", "displacement"}
    assert all(not part.requires_grad for part in parts.values())
    loss.backward()
    assert (outputs["log_variance"].grad is not None) == uncertainty


def test_total_loss_needs_the_log_variance_with_uncertainty(generator: torch.Generator) -> None:
    classes, displacement = _targets(1, 8, [(0, 1, 4)], PAPER_RADII)
    outputs = _outputs(1, 8, generator)
    del outputs["log_variance"]
    with pytest.raises(LossError, match="log_variance"):
        total_loss(outputs, classes, displacement, config=LossConfig(), clips=ClipConfig(), uncertainty=True)
