"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings,
lists and dicts, so that ``torch.load(weights_only=True)`` reads it. A run
killed while saving leaves the previous file intact: we write to a temporary
file in the same folder and ``os.replace`` it.
"""

from __future__ import annotations

import pickle
import zipfile
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


def load(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomic` (``weights_only``: no arbitrary code runs).

    ``mmap`` maps the tensors instead of reading them: cheap when only a few values are wanted.
    """
    path = Path(path)
    if path.is_dir():
        inside = [p for p in (path / BEST, path / LAST, path / "checkpoints" / BEST) if p.is_file()]
        raise CheckpointError(
            f"{path}: a folder, not a checkpoint file"
            + (
                f"; did you mean {inside[0]}?"
                if inside
                else "; pass the best.pt or last.pt of a training run"
            )
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises several types for foreign or corrupt files
        # PyTorch's own text suggests weights_only=False, which would run whatever code the file
        # holds: never relay that. The cause stays in the exception chain for --verbose.
        raise CheckpointError(
            f"{path}: not a checkpoint that astra wrote, or a damaged one ({_why_unreadable(error)}); "
            "use a best.pt or last.pt of an astra training run"
        ) from error
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            held = f"it holds {len(state)} tensors and no config, as a bare state_dict does"
        elif isinstance(state, dict):
            missing = [key for key in ("model", "config") if key not in state]
            held = "it lacks the key" + ("s " if len(missing) > 1 else " ") + " and ".join(map(repr, missing))
        else:
            held = f"it holds a {type(state).__name__}, not a dict"
        raise CheckpointError(
            f"{path}: not an ASTRA checkpoint ({held}); use the best.pt or last.pt of an astra training "
            "run, which hold the weights with the config they were trained with"
        )
    return state


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(weights)``, with an error that names ``path`` and what does not fit.

    The message lists missing and unexpected keys and the tensors whose shapes differ, and
    says when that looks like a checkpoint of another model preset.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    reshaped = [
        f"{key} {list(weights[key].shape)} in the file, {list(own[key].shape)} in the model"
        for key in sorted(set(own) & set(weights))
        if tuple(weights[key].shape) != tuple(own[key].shape)
    ]
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_some(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_some(unexpected)})")
        if reshaped:
            parts.append(f"{len(reshaped)} of another shape ({_some(reshaped)})")
        hint = (
            "; it looks like a checkpoint of another model preset or size: use the config it was trained with"
            if reshaped or (missing and unexpected)
            else ""
        )
        raise CheckpointError(f"{path}: its weights do not fit this model: " + "; ".join(parts) + hint)
    model.load_state_dict(weights)


def inference_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to predict with: the weight average when the run kept one (train.ema_decay).

    ``best.pt`` holds the average as its model; ``last.pt`` holds the raw weights (to resume
    training) and the average beside them under ``ema``.
    """
    if "ema" not in state:
        return state["model"]
    prefix = "module."  # AveragedModel's keys: module.<name>, plus its n_averaged counter
    return {k.removeprefix(prefix): v for k, v in state["ema"].items() if k.startswith(prefix)}


def _some(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def _why_unreadable(error: BaseException) -> str:
    """What went wrong, in our words (PyTorch's own text advises loading unsafely)."""
    if isinstance(error, pickle.UnpicklingError):
        return "it holds objects other than tensors, numbers, strings, lists and dicts"
    if isinstance(error, RuntimeError | EOFError | zipfile.BadZipFile):
        return "its contents are not a readable PyTorch file"
    return type(error).__name__
