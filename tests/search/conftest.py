"""Fixtures of the search tests: ``tiny_space(path, overrides, trials, resources=None)`` writes a
space of the tiny config (two searched parameters, no ASHA, grid window search) and returns it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def tiny_space() -> Callable[..., Path]:
    return _tiny_space


def _tiny_space(
    path: Path, overrides: list[str], trials: int, resources: dict[str, Any] | None = None
) -> Path:
    settings = {}
    for override in overrides:
        key, _, value = override.partition("=")
        settings[key] = yaml.safe_load(value)
    settings.update({"train.epochs": 2, "train.warmup_epochs": 1, "train.patience_epochs": 2})
    del settings["train.base_learning_rate"]
    space = {
        "description": "two trials of the tiny config, for the tests",
        "settings": settings,
        "parameters": {
            "train.base_learning_rate": {"loguniform": [5.0e-4, 5.0e-3]},
            "clips.class_radius_seconds": {"quniform": [1.0, 2.0, 0.5]},
        },
        "budget": {"trials": trials, "concurrent": 1},
        "asha": {"enabled": False},
        "resources": resources or {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "windows": {"search": True, "method": "grid"},
        "start_from_base": False,
    }
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    return path
