"""Fixtures of the search tests: ``tiny_space(path, overrides, trials, resources=None, **changes)``
writes a space of the tiny config (two searched parameters, no ASHA, grid window search, 2 epochs)
and returns it; ``changes`` replace its top-level keys (``parameters``, ``asha``, ``windows``,
``start_from_base``), and ``settings`` adds to (or changes) its settings. ``module_ray``: ``local_ray``
for a search shared by the tests of a module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(scope="session")
def tiny_space() -> Callable[..., Path]:
    return write_tiny_space


def write_tiny_space(
    path: Path,
    overrides: list[str],
    trials: int,
    resources: dict[str, Any] | None = None,
    *,
    settings: dict[str, Any] | None = None,
    **changes: Any,
) -> Path:
    values = {}
    for override in overrides:
        key, _, value = override.partition("=")
        values[key] = yaml.safe_load(value)
    values.update({"train.epochs": 2, "train.warmup_epochs": 1, "train.patience_epochs": 2})
    values.update(settings or {})
    space = {
        "description": "two trials of the tiny config, for the tests",
        "settings": values,
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
    space.update(changes)
    for searched in space["parameters"]:
        space["settings"].pop(searched, None)
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def module_ray() -> Iterator[None]:
    """``local_ray`` for a module's shared search: a Ray of its own (started by the code under test)
    in a temporary folder removed afterwards, whatever cluster this machine knows of."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TMPDIR", str(ray_tmp))
        patch.delenv("RAY_ADDRESS", raising=False)
        yield
    shutil.rmtree(ray_tmp, ignore_errors=True)
