"""Which games belong to which split.

Real SoccerNet-v2 data uses the official lists (shipped with this package).
A synthetic or custom dataset declares its own in ``splits.json`` at its root:
``{"train": [game, ...], "valid": [...], "test": [...], "challenge": [...]}``,
each game named by its path relative to the root.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

SPLITS_FILENAME = "splits.json"
OFFICIAL_SPLITS: tuple[str, ...] = ("train", "valid", "test", "challenge")


class SplitError(ValueError):
    """An unknown split name or an unreadable splits file; the message says which."""


def games_of_split(split: str, root: str | Path | None = None) -> list[str]:
    """The games of ``split``: from ``<root>/splits.json`` when it exists, else the official lists.

    Several splits can be joined with ``+`` (``"train+valid"``), as protocol P2 needs.
    """
    games: list[str] = []
    for name in split.split("+"):
        games.extend(_games_of_one_split(name.strip().lower(), root))
    return games


def read_splits_file(path: str | Path) -> dict[str, list[str]]:
    """Read and check a ``splits.json``: an object of split name -> list of game paths."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SplitError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict) or not all(
        isinstance(games, list) and all(isinstance(g, str) for g in games) for games in document.values()
    ):
        raise SplitError(f"{path}: expected an object mapping split names to lists of game paths")
    return {str(name).lower(): list(games) for name, games in document.items()}


def official_games(split: str) -> list[str]:
    """The official SoccerNet-v2 list of ``split`` (train, valid, test or challenge)."""
    if split not in OFFICIAL_SPLITS:
        raise SplitError(f"unknown official split {split!r}; expected one of {', '.join(OFFICIAL_SPLITS)}")
    text = resources.files("astra.data").joinpath("official_splits", f"{split}.json").read_text("utf-8")
    return json.loads(text)


def _games_of_one_split(split: str, root: str | Path | None) -> list[str]:
    if root is not None and (Path(root) / SPLITS_FILENAME).is_file():
        splits = read_splits_file(Path(root) / SPLITS_FILENAME)
        if split not in splits:
            raise SplitError(
                f"{Path(root) / SPLITS_FILENAME}: no split {split!r}; it has {', '.join(sorted(splits))}"
            )
        return splits[split]
    return official_games(split)
