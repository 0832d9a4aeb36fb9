"""Fixtures of the training tests: a model small enough to train in seconds on the tiny dataset."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from astra.config import ExperimentConfig, load_config

TINY = [
    "model.visual_dims=[8, 8, 4, 8, 8]",
    "model.d_model=16",
    "model.num_heads=2",
    "model.audio_conv_channels=[2, 4, 4, 4, 4, 4]",
    "model.audio_hidden_dims=[16, 16]",
    "clips.clip_seconds=20",
    "clips.train_stride_seconds=10",
    "clips.inference_stride_seconds=10",
    "train.epochs=3",
    "train.warmup_epochs=1",
    "train.batch_size=4",
    "train.loader_workers=0",
    "train.base_learning_rate=1e-3",
]


@pytest.fixture
def tiny_config() -> Callable[..., ExperimentConfig]:
    """``tiny_config(*overrides)``: the tiny training config with ``section.key=value`` overrides."""

    def build(*overrides: str) -> ExperimentConfig:
        return load_config([], [*TINY, *overrides])

    return build


@pytest.fixture
def tiny_overrides() -> list[str]:
    """The tiny training config as ``section.key=value`` overrides (for a child process)."""
    return list(TINY)
