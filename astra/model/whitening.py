"""Whitening of the visual features, fitted on the training split (``model.feature_whitening``).

Each visual embedding ``j`` is centred and multiplied by the inverse square root of its
covariance (ZCA whitening), ``x_j -> (x_j - mean_j) @ W_j`` with
``W_j = U diag((lambda + eps)^-1/2) U^T``, so that every direction of the embedding
reaches the PFFNs with unit variance. A few slowly varying directions (camera shots,
the scene, the game) dominate the variance of broadcast features; left as they are,
they dominate the PFFNs' first projections too, and a class signature that is small
against them is what a model trained on few games fails to pick up. The statistics
are fixed buffers, saved in checkpoints, not parameters: ``fit`` sets them once, before
training (``astra.training.loop.fit`` does), and prediction uses the saved ones.

Whitening commutes with mixup (an affine map of a convex combination is the
combination of the maps), so it can sit at the start of the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from astra.data.dataset import non_finite_message

# Eigenvalue floor relative to the mean eigenvalue of an embedding: directions with (almost)
# no variance in the training split (dead units of a backbone) are not blown up.
EPSILON = 1e-3
# The statistics need a sample, not every second: 200,000 seconds (about 37 games of
# SoccerNet) estimate a 2048-wide covariance well; at the paper's sizes the fit then takes
# about a minute of one CPU core, once per run.
MAX_SECONDS = 200_000


class WhiteningError(ValueError):
    """Statistics that cannot whiten these features; the message says why."""


class FeatureWhitening(nn.Module):
    """``[..., sum(dims)]`` -> the same shape, each embedding centred and whitened."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        for j, dim in enumerate(self.dims):
            self.register_buffer(f"mean_{j}", torch.zeros(dim))
            self.register_buffer(f"matrix_{j}", torch.eye(dim))
        self.register_buffer("fitted", torch.tensor(False))
        # A Python copy of ``fitted``, so that forward does not read a GPU tensor at every call.
        self._fitted = False
        self.register_load_state_dict_post_hook(_sync_fitted)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self._fitted:
            raise RuntimeError(
                "model.feature_whitening is on but the whitening was never fitted: "
                "astra.training.loop.fit fits it on the training split, a checkpoint restores it"
            )
        # In float32 whatever the autocast: the PFFNs see the whitened features at full precision.
        with torch.autocast(features.device.type, enabled=False):
            parts = features.float().split(self.dims, dim=-1)
            whitened = [
                (part - getattr(self, f"mean_{j}")) @ getattr(self, f"matrix_{j}")
                for j, part in enumerate(parts)
            ]
        return torch.cat(whitened, dim=-1)

    def fit_features(self, feature_arrays: Sequence[np.ndarray]) -> None:
        """Fit on ``[seconds, sum(dims)]`` arrays (the training split's halves; memmaps are fine)."""
        self.fit(*feature_statistics(feature_arrays, self.dims))

    @torch.no_grad()
    def fit(self, means: Sequence[np.ndarray], covariances: Sequence[np.ndarray]) -> None:
        """Set the buffers from per-embedding means ``[d_j]`` and covariances ``[d_j, d_j]``."""
        if len(means) != len(self.dims) or len(covariances) != len(self.dims):
            raise WhiteningError(f"expected statistics of {len(self.dims)} embeddings, got {len(means)}")
        for j, (mean, covariance) in enumerate(zip(means, covariances, strict=True)):
            dim = self.dims[j]
            if np.shape(mean) != (dim,) or np.shape(covariance) != (dim, dim):
                raise WhiteningError(
                    f"embedding {j}: statistics of shape {np.shape(mean)} and {np.shape(covariance)}, "
                    f"expected ({dim},) and ({dim}, {dim})"
                )
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(covariance))):
                raise WhiteningError(
                    f"embedding {j}: the training features hold NaN or infinite values "
                    "(astra check-data names the file and second)"
                )
            eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(covariance, dtype=np.float64))
            if not np.all(np.isfinite(eigenvalues)) or eigenvalues.mean() <= 0:
                raise WhiteningError(f"embedding {j}: the features have no variance to whiten")
            scale = 1.0 / np.sqrt(np.clip(eigenvalues, 0.0, None) + EPSILON * eigenvalues.mean())
            matrix = (eigenvectors * scale) @ eigenvectors.T
            getattr(self, f"mean_{j}").copy_(torch.from_numpy(np.asarray(mean, dtype=np.float64)))
            getattr(self, f"matrix_{j}").copy_(torch.from_numpy(matrix))
        self.fitted.fill_(True)
        self._fitted = True


def _sync_fitted(module: FeatureWhitening, _incompatible_keys: object) -> None:
    """After ``load_state_dict``: the Python flag follows the loaded ``fitted`` buffer."""
    module._fitted = bool(module.fitted)


def feature_statistics(
    feature_arrays: Sequence[np.ndarray], dims: Sequence[int], *, max_seconds: int = MAX_SECONDS
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-embedding means and covariances of ``[seconds, sum(dims)]`` arrays (memmaps are fine).

    When the arrays hold more than ``max_seconds`` rows in all, every k-th second of each
    is used (the same k for all), so that the sample spreads over every game. Accumulates
    in float64, one chunk at a time: memory does not grow with the split. A sampled second
    that holds NaN or inf is refused with the file (a memmap's, else the array's index) and
    the second, as ``astra check-data`` names it.
    """
    dims = tuple(int(d) for d in dims)
    total = sum(int(a.shape[0]) for a in feature_arrays)
    if total < 2:
        raise WhiteningError(f"the training features hold {total} second(s): too few to whiten")
    step = max(1, -(-total // max_seconds))
    offsets = np.cumsum((0, *dims))
    count = 0
    sums = [np.zeros(d) for d in dims]
    grams = [np.zeros((d, d)) for d in dims]
    for index, array in enumerate(feature_arrays):
        if array.ndim != 2 or array.shape[1] != offsets[-1]:
            raise WhiteningError(f"features of shape {array.shape}, expected [seconds, {offsets[-1]}]")
        for start in range(0, array.shape[0], 4096 * step):
            chunk = np.asarray(array[start : start + 4096 * step : step], dtype=np.float64)
            finite_rows = np.isfinite(chunk).all(axis=1)
            if not finite_rows.all():
                second = start + step * int(np.argmin(finite_rows))
                raise WhiteningError(non_finite_message(_source(array, index), second))
            count += chunk.shape[0]
            for j in range(len(dims)):
                part = chunk[:, offsets[j] : offsets[j + 1]]
                sums[j] += part.sum(axis=0)
                grams[j] += part.T @ part
    means = [s / count for s in sums]
    covariances = [g / count - np.outer(m, m) for g, m in zip(grams, means, strict=True)]
    return means, covariances


def _source(array: np.ndarray, index: int) -> Path | str:
    """The file a features array was memory-mapped from, or its place among the arrays."""
    filename = getattr(array, "filename", None)
    return Path(filename) if filename else f"training features array {index}"
