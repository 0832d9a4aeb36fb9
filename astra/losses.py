"""The ASTRA training objective: classification and displacement losses (paper Section 3.5).

Three documented pure functions. Targets are those of the data layer (docs/model.md,
"Clips and targets"), possibly mixed by mixup:

- classification targets ``[B, L, C+1]`` in [0, 1], channel 0 the background;
- displacement targets ``[B, L, C+1]`` in output positions (``j - p``), NaN
  where there is no target.

Two places where we follow the authors' implementation rather than the paper's
equations: the displacement loss is divided by ``B * L`` (not by the number of
displacement targets, ``N_dis`` of Eq. 2), and each of its terms is weighted by
the max-pooled classification target. Losses are computed in float32 at least
(float64 stays float64), so that a half-precision forward pass under autocast
does not overflow ``exp(-log_variance)`` or lose the small ``epsilon``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from astra.config import ClipConfig, LossConfig

# Keys of the model's output dict (astra.model): sigmoid scores, displacement
# mean, and the log-variance of the uncertainty head.
CLASS_SCORES_KEY = "class_scores"
DISPLACEMENT_KEY = "displacement"
LOG_VARIANCE_KEY = "log_variance"


class LossError(ValueError):
    """Loss inputs whose shapes or settings do not fit; the message names the argument."""


def classification_loss(
    scores: torch.Tensor,
    targets: torch.Tensor,
    *,
    kind: Literal["focal", "bce"],
    gamma: float = 1.0,
    epsilon: float = 7e-5,
) -> torch.Tensor:
    """Focal-modulated (or plain) binary cross-entropy, paper Eq. 1.

    ``-[y log(s + eps) + (1 - y) log(1 - s + eps)] * |y - s|^gamma``, the factor
    ``|y - s|^gamma`` only for ``kind="focal"``; mean over the batch, positions
    and the C+1 channels. The weight ``w_c`` is applied by :func:`total_loss`.

    Args:
        scores: ``[B, L, C+1]`` classification scores after the sigmoid.
        targets: ``[B, L, C+1]`` classification targets in [0, 1].
        kind: ``"focal"`` (ASTRA, M7 onwards) or ``"bce"`` (M0..M6).
        gamma: focal exponent (paper: 1); ignored for ``"bce"``.
        epsilon: added inside both logs, as the authors (7e-5).

    Returns:
        A scalar tensor.
    """
    _check_same_shape(scores=scores, targets=targets)
    if gamma < 0:
        raise LossError(f"gamma must be >= 0, got {gamma}")
    if epsilon < 0:
        raise LossError(f"epsilon must be >= 0, got {epsilon}")
    dtype = _loss_dtype(scores)
    scores = scores.to(dtype)
    targets = targets.to(dtype)
    log_likelihood = targets * torch.log(scores + epsilon) + (1 - targets) * torch.log(1 - scores + epsilon)
    if kind == "focal":
        # Not detached, as the authors: the modulating factor is part of the gradient.
        per_entry = -log_likelihood * (targets - scores).abs().pow(gamma)
    elif kind == "bce":
        per_entry = -log_likelihood
    else:
        raise LossError(f"kind must be 'focal' or 'bce', got {kind!r}")
    return per_entry.mean()


def displacement_loss(
    mean: torch.Tensor,
    log_variance: torch.Tensor | None,
    targets: torch.Tensor,
    class_targets: torch.Tensor,
    *,
    alpha: float,
    class_radius_seconds: float,
    displacement_radius_seconds: float,
    outputs_per_second: float,
) -> torch.Tensor:
    """Displacement loss, with or without uncertainty (paper Eq. 2, as the authors implement it).

    In the words of docs/model.md ("Loss"): on positions that have a target,
    ``alpha_L * (d - mu)^2 / exp(logvar) + (1 - alpha_L) * logvar`` (the Gaussian
    negative log-likelihood with weight ``alpha_L``; without uncertainty, the
    squared error ``(d - mu)^2``). Each term is weighted by the classification
    target max-pooled over time with a window of ``2 * (r_d - r_c) * rate + 1``
    frames, per channel, so that positions within ``r_d`` of an action, where
    the class target is 0 but a displacement target exists, still count. The
    weighted terms are summed and divided by ``B * L``.

    For fixed ``d - mu != 0`` the uncertainty term is smallest at
    ``logvar = log(alpha / (1 - alpha) * (d - mu)^2)``: its derivative in
    ``logvar`` is ``(1 - alpha) - alpha * (d - mu)^2 * exp(-logvar)``.

    Args:
        mean: ``[B, L, C+1]`` predicted displacement ``mu``, in output positions.
        log_variance: ``[B, L, C+1]`` predicted ``log sigma^2``, or None for the
            plain squared error (M0..M7).
        targets: ``[B, L, C+1]`` displacement targets ``d``, NaN for "no target".
        class_targets: ``[B, L, C+1]`` classification targets in [0, 1].
        alpha: ``alpha_L`` in (0, 1) (paper: 0.3); used only with ``log_variance``.
        class_radius_seconds: ``r_c``.
        displacement_radius_seconds: ``r_d``, at least ``r_c``.
        outputs_per_second: output positions per second (2; 1 for M6).

    Returns:
        A scalar tensor; 0 when no position has a target.
    """
    _check_same_shape(mean=mean, targets=targets, class_targets=class_targets)
    if log_variance is not None:
        _check_same_shape(mean=mean, log_variance=log_variance)
        if not 0 < alpha < 1:
            raise LossError(f"alpha must lie in (0, 1), got {alpha}")
    if mean.dim() != 3:
        raise LossError(f"mean must be [B, L, C+1], got shape {tuple(mean.shape)}")
    window_frames = pooling_window_frames(
        class_radius_seconds, displacement_radius_seconds, outputs_per_second
    )
    dtype = _loss_dtype(mean)
    has_target = ~torch.isnan(targets)
    # Replace the missing entries before any arithmetic: a NaN (or an overflowing
    # exp) at a masked position would otherwise poison the gradient through 0 * NaN.
    safe_targets = torch.where(has_target, targets.to(dtype), 0.0)
    safe_mean = torch.where(has_target, mean.to(dtype), 0.0)
    squared_error = (safe_targets - safe_mean).square()
    if log_variance is None:
        per_entry = squared_error
    else:
        safe_log_variance = torch.where(has_target, log_variance.to(dtype), 0.0)
        per_entry = alpha * squared_error * torch.exp(-safe_log_variance) + (1 - alpha) * safe_log_variance
    weights = _max_pool_over_time(class_targets.to(dtype), window_frames) * has_target
    batch_size, num_positions = mean.shape[:2]
    return (per_entry * weights).sum() / (batch_size * num_positions)


def total_loss(
    outputs: dict[str, torch.Tensor],
    class_targets: torch.Tensor,
    displacement_targets: torch.Tensor,
    config: LossConfig,
    clips: ClipConfig,
    *,
    uncertainty: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``w_c * L_c + w_d * L_d``, and its parts for logging.

    Args:
        outputs: the model's dict: ``"class_scores"`` ``[B, L, C+1]`` (after the
            sigmoid), ``"displacement"`` ``[B, L, C+1]`` and, when ``uncertainty``,
            ``"log_variance"`` ``[B, L, C+1]``.
        class_targets: ``[B, L, C+1]`` in [0, 1].
        displacement_targets: ``[B, L, C+1]``, NaN for "no target".
        config: the loss section.
        clips: the clip section (radii and output rate for the pooling window).
        uncertainty: use the log-variance (M8 onwards) or the squared error.

    Returns:
        ``(loss, parts)``: the scalar to minimise, and the detached, unweighted
        scalars ``"classification"`` and ``"displacement"``.
    """
    for key in (CLASS_SCORES_KEY, DISPLACEMENT_KEY) + ((LOG_VARIANCE_KEY,) if uncertainty else ()):
        if key not in outputs:
            raise LossError(f"model outputs lack {key!r} (have {sorted(outputs)})")
    classification = classification_loss(
        outputs[CLASS_SCORES_KEY],
        class_targets,
        kind=config.classification,
        gamma=config.focal_gamma,
        epsilon=config.epsilon,
    )
    displacement = displacement_loss(
        outputs[DISPLACEMENT_KEY],
        outputs[LOG_VARIANCE_KEY] if uncertainty else None,
        displacement_targets,
        class_targets,
        alpha=config.uncertainty_alpha,
        class_radius_seconds=clips.class_radius_seconds,
        displacement_radius_seconds=clips.displacement_radius_seconds,
        outputs_per_second=clips.outputs_per_second,
    )
    loss = config.classification_weight * classification + config.displacement_weight * displacement
    parts = {
        "classification": classification.detach(),
        "displacement": displacement.detach(),
    }
    return loss, parts


def pooling_window_frames(
    class_radius_seconds: float, displacement_radius_seconds: float, outputs_per_second: float
) -> int:
    """``2 * (r_d - r_c) * rate + 1``: the max-pooling window of the displacement weights, in positions."""
    half_window = (displacement_radius_seconds - class_radius_seconds) * outputs_per_second
    rounded = round(half_window)
    if half_window < 0 or not math.isclose(half_window, rounded, abs_tol=1e-9):
        raise LossError(
            f"(displacement_radius_seconds - class_radius_seconds) * outputs_per_second must be a "
            f"non-negative whole number of positions, got ({displacement_radius_seconds} - "
            f"{class_radius_seconds}) * {outputs_per_second} = {half_window}"
        )
    return 2 * rounded + 1


def _max_pool_over_time(values: torch.Tensor, window_frames: int) -> torch.Tensor:
    """``[B, L, K]`` -> ``[B, L, K]``: centred running max over L; the edges see only real positions."""
    if window_frames == 1:
        return values
    # max_pool1d pads with -inf, so the window shrinks at the clip edges, as the
    # authors' MaxPool2d((nw, 1), padding=(nw // 2, 0)).
    pooled = F.max_pool1d(values.transpose(1, 2), window_frames, stride=1, padding=window_frames // 2)
    return pooled.transpose(1, 2)


def _loss_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.promote_types(tensor.dtype, torch.float32)


def _check_same_shape(**tensors: torch.Tensor) -> None:
    (first_name, first), *others = tensors.items()
    for name, tensor in others:
        if tensor.shape != first.shape:
            raise LossError(
                f"{name} has shape {tuple(tensor.shape)} but {first_name} has {tuple(first.shape)}"
            )
