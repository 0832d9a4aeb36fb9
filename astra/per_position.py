"""Per-position outputs on disk: one ``.npz`` per game, float16 (docs/data.md).

``<root>/<game>/per_position.npz`` holds ``half1`` and ``half2``, each
``[frames at 2 fps, 17]``: the scores after displacement refinement and before
NMS. Ensembles average these arrays; float16 keeps a 100-game split near 37 MB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astra.classes import NUM_CLASSES
from astra.files import atomic_write

FILENAME = "per_position.npz"


class PerPositionError(ValueError):
    """A per-position file that cannot be used; the message names the file."""


def write_game(root: str | Path, game: str, halves: dict[int, np.ndarray]) -> Path:
    """Write one game's per-position outputs (``{1: [F1, 17], 2: [F2, 17]}``) atomically."""
    path = Path(root) / game / FILENAME
    if sorted(halves) != [1, 2]:
        raise PerPositionError(f"{path}: game {game!r} needs outputs of halves 1 and 2, got {sorted(halves)}")
    for half, array in halves.items():
        shape = np.shape(array)
        if len(shape) != 2 or shape[1] != NUM_CLASSES:
            raise PerPositionError(f"{path}: half{half} has shape {shape}, expected [frames, {NUM_CLASSES}]")
    with atomic_write(path) as f:
        np.savez(f, **{f"half{h}": np.asarray(a, dtype=np.float16) for h, a in halves.items()})
    return path


def read_game(root: str | Path, game: str) -> dict[int, np.ndarray]:
    """Read one game's per-position outputs as float32 arrays keyed by half."""
    path = Path(root) / game / FILENAME
    if not path.is_file():
        raise PerPositionError(f"{path}: per-position outputs not found for game {game!r}")
    with np.load(path) as archive:
        halves = {int(name.removeprefix("half")): archive[name].astype(np.float32) for name in archive.files}
    if sorted(halves) != [1, 2]:
        raise PerPositionError(f"{path}: expected the outputs of halves 1 and 2, got {sorted(halves)}")
    for half, array in halves.items():
        if array.ndim != 2 or array.shape[1] != NUM_CLASSES:
            raise PerPositionError(
                f"{path}: half{half} has shape {array.shape}, expected [frames, {NUM_CLASSES}]"
            )
    return halves


def list_games(root: str | Path) -> list[str]:
    """Every game under ``root`` that has a per-position file, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise PerPositionError(f"{root}: no such folder of per-position outputs")
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob(FILENAME))
