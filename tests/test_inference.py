"""`predict_half`: sliding windows over a half, the audio turned into decibels once per half."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from astra.config import ClipConfig, InferenceConfig, ModelConfig
from astra.data.clips import inference_window_starts, slice_clips
from astra.data.dataset import DataError, DataRoots, load_split
from astra.inference import num_frames_of, predict_half
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
