"""Feature whitening (model.feature_whitening) and the PFFN's ReLU switches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astra.config import load_config
from astra.model import build_model
from astra.model.pffn import PointwiseFeedForward
from astra.model.whitening import EPSILON, FeatureWhitening, WhiteningError, feature_statistics

DIMS = (6, 4)


def _correlated(seconds: int, seed: int = 0) -> np.ndarray:
    """Features with a strong shared direction, offsets and unequal scales, per embedding."""
    rng = np.random.default_rng(seed)
    parts = []
    for dim in DIMS:
        mixing = rng.normal(size=(dim, dim)) + np.outer(rng.normal(size=dim), rng.normal(size=dim))
        parts.append(rng.normal(size=(seconds, dim)) @ mixing + rng.normal(size=dim) * 5)
    return np.concatenate(parts, axis=1).astype(np.float32)


def test_statistics_are_the_mean_and_covariance_of_each_embedding() -> None:
    halves = [_correlated(300, seed=1), _correlated(200, seed=2)]
    means, covariances = feature_statistics(halves, DIMS)
    everything = np.concatenate(halves).astype(np.float64)
    np.testing.assert_allclose(means[0], everything[:, :6].mean(0), atol=1e-9)
    np.testing.assert_allclose(covariances[1], np.cov(everything[:, 6:].T, bias=True), rtol=1e-9, atol=1e-9)


def test_a_large_split_is_sampled_every_k_seconds(tmp_path) -> None:
    path = tmp_path / "features.npy"
    np.save(path, _correlated(9000))
    memmap = np.load(path, mmap_mode="r")
    means, covariances = feature_statistics([memmap], DIMS, max_seconds=1000)
    sample = np.asarray(memmap[::9], dtype=np.float64)
    np.testing.assert_allclose(means[0], sample[:, :6].mean(0), atol=1e-9)
    np.testing.assert_allclose(covariances[0], np.cov(sample[:, :6].T, bias=True), rtol=1e-9, atol=1e-9)


def test_a_non_finite_second_is_named_by_its_file_and_second(tmp_path) -> None:
    clean = _correlated(50)
    poisoned = _correlated(9000, seed=1)
    poisoned[4510, 7] = np.inf  # a sampled second (every 10th of 9,050) of the second file
    np.save(tmp_path / "1.npy", clean)
    np.save(tmp_path / "2.npy", poisoned)
    arrays = [np.load(tmp_path / name, mmap_mode="r") for name in ("1.npy", "2.npy")]
    with pytest.raises(WhiteningError, match=rf"^{tmp_path / '2.npy'}: NaN or inf at second 4510$"):
        feature_statistics(arrays, DIMS, max_seconds=1000)
    clean[3, 0] = np.nan  # an array in memory has no file: its place is named
    with pytest.raises(WhiteningError, match=r"^training features array 0: NaN or inf at second 3$"):
        feature_statistics([clean], DIMS)


def test_whitened_training_features_are_centred_and_uncorrelated_within_each_embedding() -> None:
    features = _correlated(5000)
    whitening = FeatureWhitening(DIMS)
    whitening.fit(*feature_statistics([features], DIMS))
    out = whitening(torch.from_numpy(features)[None]).squeeze(0).double().numpy()
    assert out.shape == features.shape
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-3)
    for start, stop in ((0, 6), (6, 10)):
        covariance = np.cov(out[:, start:stop].T, bias=True)
        # Unit variance in every direction, but for the eigenvalue floor (0.1% of the mean
        # eigenvalue), which shrinks the directions of least variance: lambda / (lambda + floor).
        eigenvalues, eigenvectors = np.linalg.eigh(
            np.cov(features[:, start:stop].T.astype(np.float64), bias=True)
        )
        shrink = eigenvalues / (eigenvalues + EPSILON * eigenvalues.mean())
        np.testing.assert_allclose(covariance, (eigenvectors * shrink) @ eigenvectors.T, atol=1e-4)
        assert shrink.max() > 0.999
    # Embeddings are whitened apart: the first one's output does not depend on the second one's input.
    changed = features.copy()
    changed[:, 6:] += 100
    again = whitening(torch.from_numpy(changed)[None]).squeeze(0).double().numpy()
    np.testing.assert_allclose(again[:, :6], out[:, :6], atol=1e-4)


def test_an_unfitted_whitening_refuses_to_run_and_bad_statistics_are_named() -> None:
    whitening = FeatureWhitening(DIMS)
    with pytest.raises(RuntimeError, match="feature_whitening"):
        whitening(torch.zeros(1, 3, 10))
    with pytest.raises(WhiteningError, match=r"embedding 1.*expected \(4,\)"):
        whitening.fit([np.zeros(6), np.zeros(5)], [np.eye(6), np.eye(5)])
    with pytest.raises(WhiteningError, match="NaN or infinite"):
        whitening.fit([np.zeros(6), np.full(4, np.nan)], [np.eye(6), np.eye(4)])
    with pytest.raises(WhiteningError, match="no variance"):
        whitening.fit([np.zeros(6), np.zeros(4)], [np.eye(6), np.zeros((4, 4))])
    with pytest.raises(WhiteningError, match="expected \\[seconds, 10\\]"):
        feature_statistics([np.zeros((5, 9), np.float32)], DIMS)


def test_whitening_runs_in_float32_under_autocast() -> None:
    whitening = FeatureWhitening(DIMS)
    whitening.fit(*feature_statistics([_correlated(500)], DIMS))
    x = torch.from_numpy(_correlated(4))[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = whitening(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, whitening(x.bfloat16().float()))


def test_the_model_whitens_with_buffers_that_are_saved_but_are_not_parameters() -> None:
    overrides = ["model.use_audio=false", "model.visual_dims=[6, 4]", "model.d_model=16", "model.num_heads=2"]
    plain = build_model(load_config([], overrides).model, load_config([], overrides).clips)
    config = load_config([], [*overrides, "model.feature_whitening=true"])
    model = build_model(config.model, config.clips).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    state = model.state_dict()
    assert {"visual_whitening.mean_0", "visual_whitening.matrix_1", "visual_whitening.fitted"} <= set(state)
    features = torch.from_numpy(np.stack([_correlated(config.clips.clip_seconds, seed=s) for s in (3, 4)]))
    with pytest.raises(RuntimeError, match="never fitted"):
        model(features)
    model.visual_whitening.fit(*feature_statistics([_correlated(2000)], DIMS))
    reloaded = build_model(config.model, config.clips).eval()
    reloaded.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(features)["class_scores"], model(features)["class_scores"])


def test_off_in_the_paper_preset() -> None:
    config = load_config(["configs/astra_paper.yaml"])
    assert not config.model.feature_whitening
    assert config.model.pffn_hidden_relu and config.model.pffn_output_relu


def test_pffn_relus_can_be_left_out_and_it_is_then_linear() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    authors = PointwiseFeedForward(6, 8, 0.0)
    assert (authors(x) >= 0).all()
    linear = PointwiseFeedForward(6, 8, 0.0, hidden_relu=False, output_relu=False)
    assert not any(isinstance(layer, torch.nn.ReLU) for layer in linear.layers)
    zero = linear(torch.zeros(1, 6))
    torch.testing.assert_close(linear(x + 2 * y) - zero, (linear(x) - zero) + 2 * (linear(y) - zero))
    signed = PointwiseFeedForward(6, 8, 0.0, output_relu=False)
    assert (signed(x) < 0).any()
    assert sum(isinstance(layer, torch.nn.ReLU) for layer in signed.layers) == 1
