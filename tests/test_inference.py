"""From a checkpoint to per-position outputs: `load_for_inference` (weights, weight average, which
settings may change), `predict_split` over a split, and `predict_half` (sliding windows, the audio
turned into decibels once per half)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from astra.config import ClipConfig, ConfigError, InferenceConfig, ModelConfig
from astra.data.clips import inference_window_starts, slice_clips
from astra.data.dataset import DataError, DataRoots, load_split
from astra.inference import load_for_inference, num_frames_of, predict_half, predict_split
from astra.model import build_model
from astra.postprocess.aggregation import aggregate_windows

MODEL = ModelConfig(
    visual_dims=(8, 8, 4, 8, 8),
    d_model=16,
    num_heads=2,
    audio_conv_channels=(),
    audio_hidden_dims=(),
    audio_input_pool=(8, 4),
    audio_clip_norm=True,
)
CLIPS = ClipConfig(clip_seconds=20, inference_stride_seconds=7)


def _windowed_reference(model: torch.nn.Module, half, batch_size: int) -> np.ndarray:
    """What each window's own mel power gives through the whole model, aggregated."""
    starts = inference_window_starts(half.num_seconds, CLIPS.clip_seconds, 7)
    scores, displacement = [], []
    for first in range(0, len(starts), batch_size):
        features, power = slice_clips(
            half, starts[first : first + batch_size], CLIPS.clip_seconds, with_audio=True
        )
        with torch.no_grad():
            outputs = model(torch.from_numpy(features), model.prepare_audio(torch.from_numpy(power)))
        scores.append(outputs["class_scores"].numpy())
        displacement.append(outputs["displacement"].numpy())
    return aggregate_windows(
        np.concatenate(scores), np.concatenate(displacement), starts, num_frames_of(half),
        outputs_per_second=CLIPS.outputs_per_second, score_threshold=InferenceConfig().score_threshold,
    )  # fmt: skip


def test_the_half_level_decibels_give_each_window_its_own_log_mel(tiny_dataset) -> None:
    torch.manual_seed(0)
    model = build_model(MODEL, CLIPS).eval()
    roots = DataRoots.single(tiny_dataset.root)
    # Halves whose recording is longer and shorter than their video (padded with its last frame).
    halves = [
        h
        for split in ("train", "valid", "test")
        for h in load_split(roots, split, with_audio=True, require_labels=False)
    ]
    assert any(h.audio.shape[1] < h.num_audio_frames for h in halves)
    for half in halves:
        got = predict_half(
            model, half, CLIPS, InferenceConfig(), with_audio=True, device=torch.device("cpu"), batch_size=4
        )
        np.testing.assert_array_equal(got, _windowed_reference(model, half, batch_size=4))


def test_non_finite_audio_is_named_with_its_frame(make_tiny_dataset, tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    game = data.splits["test"][0]
    path = tmp_path / "data" / game / "audio2.npy"
    audio = np.load(path)
    audio[5, 12_345] = np.nan
    np.save(path, audio)
    half = next(
        h
        for h in load_split(DataRoots.single(data.root), "test", with_audio=True, require_labels=False)
        if h.half == 2
    )
    model = build_model(MODEL, CLIPS).eval()
    with pytest.raises(DataError, match=r"audio2\.npy: NaN or inf at second 123 \(audio frame 12345\)"):
        predict_half(model, half, CLIPS, InferenceConfig(), with_audio=True, device=torch.device("cpu"))


def _saved_model(tiny_config, path: Path, *, with_average: bool = False, **overrides: str):
    """A checkpoint of a freshly built tiny model (and its weight average, perturbed, when asked)."""
    config = tiny_config("model.use_audio=false")
    torch.manual_seed(0)
    model = build_model(config.model, config.clips, load_pretrained=False)
    state = {
        "model": model.state_dict(),
        "config": config.to_dict(),
        "training": {"epoch": 0, "best_epoch": 0},
    }
    if with_average:
        state["ema"] = {f"module.{k}": v + 1.0 for k, v in model.state_dict().items()}
        state["ema"]["n_averaged"] = torch.tensor(3)
    torch.save(state, path)
    return model, config


def test_load_for_inference_gives_the_checkpoint_model_in_eval_mode_with_its_config(
    tiny_config, tmp_path: Path
) -> None:
    model, config = _saved_model(tiny_config, tmp_path / "best.pt")
    loaded, loaded_config = load_for_inference(tmp_path / "best.pt", device="cpu")
    assert loaded_config == config and not loaded.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_load_for_inference_predicts_with_the_weight_average_when_the_run_kept_one(
    tiny_config, tmp_path: Path
) -> None:
    model, _ = _saved_model(tiny_config, tmp_path / "last.pt", with_average=True)
    loaded, _ = load_for_inference(tmp_path / "last.pt", device="cpu")
    weights = model.state_dict()
    assert all(torch.equal(loaded.state_dict()[k], weights[k] + 1.0) for k in weights)


def test_load_for_inference_changes_only_inference_settings(tiny_config, tmp_path: Path) -> None:
    _saved_model(tiny_config, tmp_path / "best.pt")
    _, config = load_for_inference(tmp_path / "best.pt", inference={"inference.nms": "hard"}, device="cpu")
    assert config.inference.nms == "hard"
    with pytest.raises(ConfigError, match=r"train\.seed: only inference\.\* settings can change"):
        load_for_inference(tmp_path / "best.pt", inference={"train.seed": 3}, device="cpu")
    with pytest.raises(ConfigError, match=r"inference\.nms"):
        load_for_inference(tmp_path / "best.pt", inference={"inference.nms": "fuzzy"}, device="cpu")


def test_predict_split_gives_every_game_and_half_of_the_split_as_predict_half_does(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    _saved_model(tiny_config, tmp_path / "best.pt")
    model, config = load_for_inference(tmp_path / "best.pt", device="cpu")
    roots = DataRoots.single(tiny_dataset.root)
    halves = [
        h
        for split in ("valid", "test")
        for h in load_split(roots, split, with_audio=False, require_labels=False)
    ]
    outputs = predict_split(model, halves, config, device=torch.device("cpu"), batch_size=3)
    assert list(outputs) == [*tiny_dataset.splits["valid"], *tiny_dataset.splits["test"]]
    for half in halves:
        expected = predict_half(
            model, half, config.clips, config.inference, with_audio=False, device=torch.device("cpu")
        )
        got = outputs[half.game][half.half]
        assert got.shape == (num_frames_of(half), 17) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # batches of 3 and of 16
