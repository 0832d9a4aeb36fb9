"""A simple baseline spotter: a closed-form ridge-regression probe on the visual features.

It needs no GPU and no training loop, so it serves the demo and gives the
evaluator non-trivial predictions to score. Per second ``t`` of a half, the
input is the feature vector of ``t`` and of its neighbours within
``+-context_seconds`` (after a fixed random projection when the features are
wide); the target of class ``c`` is 1 within ``target_radius_seconds`` of an
event of ``c``. One ridge regression fits all 17 classes at once (a shared
Gram matrix, one solve), from sufficient statistics accumulated half by half,
so memory does not grow with the training split. Predictions are clipped to
``[0, 1]``, repeated to 2 fps and decoded by the paper's Soft-NMS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from astra.classes import FRAMES_PER_SECOND, NUM_CLASSES, PAPER_SOFT_NMS_WINDOWS_SECONDS
from astra.config import BaselineConfig
from astra.files import OutputPathError, check_output_folder
from astra.postprocess.nms import detections_to_spots, soft_nms

if TYPE_CHECKING:
    from astra.data.dataset import DataRoots, Half
    from astra.submission import Spots

log = logging.getLogger(__name__)

PREDICTIONS_ZIP = "predictions.zip"


class BaselineError(ValueError):
    """Data the baseline cannot use; the message says which."""


@dataclass(frozen=True)
class RidgeProbe:
    """A fitted probe: per-second class scores from per-second features.

    Attributes:
        feature_dim: ``D``, the width of the features it was fitted on.
        projection: ``[D, P]`` random projection, or None when the features are used as they are.
        weights: ``[(2 * context + 1) * P, C]`` ridge weights on centred inputs.
        input_mean: ``[(2 * context + 1) * P]`` mean input over the training seconds.
        bias: ``[C]`` mean target over the training seconds.
        context_seconds: neighbours on each side, as fitted.
    """

    feature_dim: int
    projection: np.ndarray | None
    weights: np.ndarray
    input_mean: np.ndarray
    bias: np.ndarray
    context_seconds: int

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``[T, D]`` features of one half -> ``[T, C]`` float32 scores in ``[0, 1]``."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise BaselineError(
                f"features of shape {features.shape} given to a probe fitted on "
                f"{self.feature_dim} features per second"
            )
        inputs = _inputs(np.asarray(features, dtype=np.float32), self.projection, self.context_seconds)
        scores = (inputs - self.input_mean) @ self.weights + self.bias
        return np.clip(scores, 0.0, 1.0).astype(np.float32)


def run_baseline(
    roots: DataRoots,
    split: str,
    out_dir: str | Path,
    *,
    train_split: str = "train",
    config: BaselineConfig | None = None,
    windows_seconds: Sequence[float] = PAPER_SOFT_NMS_WINDOWS_SECONDS,
    progress: bool = True,
) -> dict[str, Spots]:
    """Fit on ``train_split``, predict ``split`` and write the submission under ``out_dir``.

    ``roots`` is an ``astra.data.dataset.DataRoots`` (``DataRoots.single(folder)`` for one folder).

    Writes ``<out_dir>/<game>/results_spotting.json`` per game and ``<out_dir>/predictions.zip``.
    Games of ``split`` need no labels (the challenge split has none). Returns the spots per game.
    """
    from astra.data.dataset import load_split
    from astra.submission import write_submission

    config = config or BaselineConfig()
    out_dir = Path(out_dir)
    try:
        check_output_folder(out_dir)  # before the fit: a file, under a file, or not writable
    except OutputPathError as error:
        raise BaselineError(str(error)) from None
    train_halves = load_split(roots, train_split, with_audio=False, require_labels=True, progress=False)
    probe = fit_probe(train_halves, config, progress=progress)
    halves = load_split(roots, split, with_audio=False, require_labels=False, progress=False)
    results = predict_spots(probe, halves, windows_seconds, progress=progress)
    write_submission(out_dir, results, zip_path=out_dir / PREDICTIONS_ZIP)
    log.info("baseline: %d games of split %r written to %s", len(results), split, out_dir)
    return results


def fit_probe(halves: Sequence[Half], config: BaselineConfig, *, progress: bool = False) -> RidgeProbe:
    """Fit the ridge probe on labelled halves (``astra.data.dataset.Half``), one pass over their features."""
    if not halves:
        raise BaselineError("no training halves to fit the baseline on")
    feature_dim = halves[0].feature_dim
    projection = _projection(feature_dim, config)
    width = (2 * config.context_seconds + 1) * (feature_dim if projection is None else projection.shape[1])
    num_seconds = 0
    input_sum = np.zeros(width)
    target_sum = np.zeros(NUM_CLASSES)
    gram = np.zeros((width, width))
    cross = np.zeros((width, NUM_CLASSES))
    for half in _progress(halves, progress, "fitting the baseline", "half"):
        inputs = _inputs(np.asarray(half.features, dtype=np.float32), projection, config.context_seconds)
        targets = _targets(half, config.target_radius_seconds)
        inputs64 = inputs.astype(np.float64)
        num_seconds += inputs.shape[0]
        input_sum += inputs64.sum(axis=0)
        target_sum += targets.sum(axis=0)
        gram += inputs64.T @ inputs64
        cross += inputs64.T @ targets
    input_mean = input_sum / num_seconds
    target_mean = target_sum / num_seconds
    # Centred statistics: the intercept is the mean target, the ridge penalty spares it.
    covariance = gram / num_seconds - np.outer(input_mean, input_mean)
    cross_covariance = cross / num_seconds - np.outer(input_mean, target_mean)
    penalty = config.ridge * max(float(np.trace(covariance)) / width, np.finfo(np.float64).tiny)
    weights = np.linalg.solve(covariance + penalty * np.eye(width), cross_covariance)
    return RidgeProbe(
        feature_dim=feature_dim,
        projection=projection,
        weights=weights.astype(np.float32),
        input_mean=input_mean.astype(np.float32),
        bias=target_mean.astype(np.float32),
        context_seconds=config.context_seconds,
    )


def predict_spots(
    probe: RidgeProbe,
    halves: Sequence[Half],
    windows_seconds: Sequence[float] = PAPER_SOFT_NMS_WINDOWS_SECONDS,
    *,
    progress: bool = False,
) -> dict[str, Spots]:
    """Spots per game: probe scores, repeated to 2 fps, decoded by Soft-NMS with ``windows_seconds``."""
    from astra.submission import Spots

    by_game: dict[str, list[Half]] = {}
    for half in halves:
        by_game.setdefault(half.game, []).append(half)
    results: dict[str, Spots] = {}
    for game in _progress(by_game, progress, "predicting", "game"):
        spots = []
        for half in by_game[game]:
            try:
                per_second = probe.predict(half.features)
            except BaselineError as error:
                raise BaselineError(f"{half.features_path}: {error}") from None
            per_position = per_second_to_per_position(per_second)
            detections = soft_nms(per_position, windows_seconds, frames_per_second=FRAMES_PER_SECOND)
            spots.append(detections_to_spots(detections, half.half, FRAMES_PER_SECOND))
        results[game] = Spots.concatenate(spots)
    return results


def per_second_to_per_position(per_second: np.ndarray) -> np.ndarray:
    """``[T, C]`` scores, one per second -> ``[2T, C]`` per-position output at 2 fps.

    Both frames of a second take its score; Soft-NMS keeps the first and decays the
    second by ``(1 / h)^2``, which leaves it far down the ranking.
    """
    return np.repeat(per_second, FRAMES_PER_SECOND, axis=0)


def _inputs(features: np.ndarray, projection: np.ndarray | None, context_seconds: int) -> np.ndarray:
    """``[T, D]`` -> ``[T, (2 * context + 1) * P]``: each second with its neighbours (edges repeated)."""
    projected = features if projection is None else features @ projection
    if context_seconds == 0:
        return projected
    padded = np.pad(projected, ((context_seconds, context_seconds), (0, 0)), mode="edge")
    num_seconds = projected.shape[0]
    return np.concatenate(
        [padded[shift : shift + num_seconds] for shift in range(2 * context_seconds + 1)], axis=1
    )


def _targets(half: Half, radius_seconds: int) -> np.ndarray:
    """``[T, C]`` float64: 1 within ``radius_seconds`` of an event of the class, else 0.

    Events past the end of the features have no row and give no target (as in training).
    """
    targets = np.zeros((half.num_seconds, NUM_CLASSES))
    annotations = half.annotations.within_features()
    seconds = annotations.position_ms // 1000
    for offset in range(-radius_seconds, radius_seconds + 1):
        shifted = seconds + offset
        inside = (shifted >= 0) & (shifted < half.num_seconds)
        targets[shifted[inside], annotations.class_index[inside]] = 1.0
    return targets


def _projection(feature_dim: int, config: BaselineConfig) -> np.ndarray | None:
    """``[D, P]`` Gaussian random projection (Johnson-Lindenstrauss), or None when D <= P."""
    if feature_dim <= config.projection_dim:
        return None
    rng = np.random.default_rng(config.seed)
    scale = 1.0 / np.sqrt(config.projection_dim)
    return (rng.standard_normal((feature_dim, config.projection_dim)) * scale).astype(np.float32)


def _progress(items: Iterable, enabled: bool, description: str, unit: str) -> Iterable:
    from astra.progress import progress

    return progress(items, desc=description, unit=unit, enabled=enabled)
