"""The statistics of a P1 report: spread over seeds, a paired test over seeds, a bootstrap over games.

numpy and the evaluator only (no scipy, no torch). Two sources of noise are measured apart:

- **Seeds.** Runs of two configurations with the same seed index are paired (same data order
  and initialisation draw where the configurations allow). :func:`sign_flip_p_value` is the
  exact two-sided permutation test of "the mean paired difference is zero": under that
  hypothesis each difference is as likely negative as positive, so the ``2^n`` sign patterns
  of the ``n`` differences are equally likely, and the p-value is the share of them whose mean
  is at least as far from 0 as the observed one. It assumes no distribution. Its smallest
  possible value is ``2 / 2^n`` (:func:`smallest_p_value`): 1/16 with 5 seeds, so 5 seeds alone
  can never give p < 0.05, however consistent the differences are. Above
  :data:`EXACT_SIGN_FLIPS_UP_TO` pairs the patterns are sampled (seeded) instead of enumerated.
- **Test games.** The test split is a sample of games. :func:`bootstrap_indices` draws
  resamples of the game list with replacement (seeded, the same for every run, so that two
  configurations are always scored on the same resampled games); :func:`resampled_a_maps`
  scores one run's decoded detections on each resample, a game drawn twice counting twice
  (it gets a distinct name per draw); :func:`difference_interval` is the percentile interval
  of the difference of two configurations' seed means over the resamples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from astra.data.labels import Annotations
from astra.evaluation.average_map import evaluate_dense

# Up to this many pairs the 2^n sign patterns are enumerated (65,536 at 16); above, sampled.
EXACT_SIGN_FLIPS_UP_TO = 16
SAMPLED_SIGN_FLIPS = 65_536
# Differences of means closer than this to the observed one count as equal (float sums differ
# in their last bits with the order of the terms).
TIE_TOLERANCE = 1e-12


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``n - 1`` in the denominator; NaN for one value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("mean_and_std: no values")
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std


def sign_flip_p_value(differences: Sequence[float], *, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of a zero mean difference.

    Exact (every sign pattern) for up to :data:`EXACT_SIGN_FLIPS_UP_TO` differences, else from
    :data:`SAMPLED_SIGN_FLIPS` patterns drawn with ``seed`` (p = (1 + hits) / (1 + draws)).
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"sign_flip_p_value: expected a list of paired differences, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError(f"sign_flip_p_value: the differences must be finite, got {d.tolist()}")
    observed = abs(d.mean())
    if d.size <= EXACT_SIGN_FLIPS_UP_TO:
        # Row p of the pattern matrix is the binary expansion of p: every pattern once.
        patterns = (np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1
        means = np.abs(((1 - 2 * patterns) * d).mean(axis=1))
        return float(np.mean(means >= observed - TIE_TOLERANCE))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(SAMPLED_SIGN_FLIPS, d.size))
    hits = int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - TIE_TOLERANCE))
    return (1 + hits) / (1 + SAMPLED_SIGN_FLIPS)


def smallest_p_value(num_pairs: int) -> float:
    """The smallest two-sided p-value :func:`sign_flip_p_value` can give for ``num_pairs`` pairs."""
    if num_pairs < 1:
        raise ValueError(f"smallest_p_value: num_pairs must be >= 1, got {num_pairs}")
    if num_pairs > EXACT_SIGN_FLIPS_UP_TO:
        return 1 / (1 + SAMPLED_SIGN_FLIPS)
    return min(1.0, 2 / 2**num_pairs)


def bootstrap_indices(num_games: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, num_games]`` game indices drawn with replacement; the same for the same arguments."""
    if num_games < 1 or resamples < 1:
        raise ValueError(
            f"bootstrap_indices: num_games and resamples must be >= 1, got {num_games} and {resamples}"
        )
    return np.random.default_rng(seed).integers(0, num_games, size=(resamples, num_games))


def resampled_a_maps(
    labels: Mapping[str, Annotations],
    detections: Mapping[str, Sequence[np.ndarray]],
    games: Sequence[str],
    indices: np.ndarray,
    metric: str = "tight",
) -> np.ndarray:
    """``[B]`` the a-mAP of ``detections`` (``{game: (half1 [T1, 17], half2 [T2, 17])}``, decoded)
    against ``labels`` on each resample ``indices[b]`` of ``games`` (:func:`bootstrap_indices`).

    A game drawn k times enters the evaluator k times, under k distinct names.
    """
    scores = np.empty(len(indices), dtype=np.float64)
    for b, resample in enumerate(indices):
        names = [f"{games[i]}#{draw}" for draw, i in enumerate(resample)]
        scores[b] = evaluate_dense(
            {name: labels[games[i]] for name, i in zip(names, resample, strict=True)},
            {name: detections[games[i]] for name, i in zip(names, resample, strict=True)},
            metric,
        ).a_mAP
    return scores


def mean_interval(scores: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval over resamples of the seed mean: ``scores [seeds, B]``."""
    return _percentiles(np.asarray(scores, dtype=np.float64).mean(axis=0), level)


def difference_interval(
    candidate: np.ndarray, reference: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval over resamples of (seed mean of ``candidate``) - (seed mean of ``reference``).

    ``candidate [S1, B]`` and ``reference [S2, B]``: each run's score on the same B resamples.
    """
    candidate, reference = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    if candidate.ndim != 2 or reference.ndim != 2 or candidate.shape[1] != reference.shape[1]:
        raise ValueError(
            "difference_interval: expected [seeds, resamples] arrays over the same resamples, got "
            f"shapes {candidate.shape} and {reference.shape}"
        )
    return _percentiles(candidate.mean(axis=0) - reference.mean(axis=0), level)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"the interval's level must lie in (0, 1), got {level}")
    if values.size == 0:
        raise ValueError("no resamples to take an interval of")
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
