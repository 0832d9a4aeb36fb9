"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings,
lists and dicts, so that ``torch.load(weights_only=True)`` reads it. A run
killed while saving leaves the previous file intact: we write to a temporary
file in the same folder and ``os.replace`` it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from astra.files import atomic_write

LAST = "last.pt"
BEST = "best.pt"


class CheckpointError(ValueError):
    """A checkpoint or weight file that cannot be used; the message names the file."""


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_write(path) as f:
        torch.save(state, f)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomic` (``weights_only``: no arbitrary code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not an ASTRA checkpoint (expected the keys 'model' and 'config')")
    return state


def inference_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to predict with: the weight average when the run kept one (train.ema_decay).

    ``best.pt`` holds the average as its model; ``last.pt`` holds the raw weights (to resume
    training) and the average beside them under ``ema``.
    """
    if "ema" not in state:
        return state["model"]
    prefix = "module."  # AveragedModel's keys: module.<name>, plus its n_averaged counter
    return {k.removeprefix(prefix): v for k, v in state["ema"].items() if k.startswith(prefix)}
