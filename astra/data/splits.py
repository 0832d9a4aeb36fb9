"""Which games belong to which split.

Real SoccerNet-v2 data uses the official lists (shipped with this package).
A synthetic or custom dataset declares its own in ``splits.json`` at its root:
``{"train": [game, ...], "valid": [...], "test": [...], "challenge": [...]}``,
each game named by its path relative to the root.

Nothing mixed: a game declared in two splits of ``splits.json`` (or twice in one)
is refused, since training on a game that is also scored leaks it. Joining splits
on purpose (``"train+valid"``, protocol P2) is another thing and is allowed.
Without a ``splits.json`` the official lists are used, with one warning per root;
a root that holds none of the official games of a split is refused, since it is
then a custom dataset that forgot its ``splits.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

SPLITS_FILENAME = "splits.json"
OFFICIAL_SPLITS: tuple[str, ...] = ("train", "valid", "test", "challenge")

log = logging.getLogger(__name__)
# Roots already warned about using the official lists: one warning per root and process.
_warned_official: set[Path] = set()


class SplitError(ValueError):
    """An unknown split name or an unreadable splits file; the message says which."""


def games_of_split(
    split: str, root: str | Path | None = None, *, game_roots: Iterable[str | Path] = ()
) -> list[str]:
    """The games of ``split``: from ``<root>/splits.json`` when it exists, else the official lists.

    Several splits can be joined with ``+`` (``"train+valid"``), as protocol P2 needs.
    Without a ``splits.json`` under ``root``, the official lists are used (one warning
    per root) and a :class:`SplitError` is raised when neither ``root`` nor any of
    ``game_roots`` (the features root, say) holds a folder of one of the split's games.
    """
    games: list[str] = []
    other_roots = tuple(Path(other) for other in game_roots)
    for name in split.split("+"):
        games.extend(_games_of_one_split(name.strip().lower(), root, other_roots))
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
    splits: dict[str, list[str]] = {}
    for name, games in document.items():
        key = str(name).lower()
        if key in splits:
            raise SplitError(f"{path}: split {key!r} is declared twice (split names ignore case)")
        splits[key] = list(games)
    _check_disjoint(splits, str(path))
    return splits


def official_games(split: str) -> list[str]:
    """The official SoccerNet-v2 list of ``split`` (train, valid, test or challenge)."""
    if split not in OFFICIAL_SPLITS:
        raise SplitError(f"unknown official split {split!r}; expected one of {', '.join(OFFICIAL_SPLITS)}")
    text = resources.files("astra.data").joinpath("official_splits", f"{split}.json").read_text("utf-8")
    return json.loads(text)


def _check_disjoint(splits: dict[str, list[str]], source: str) -> None:
    """Refuse a game listed twice: in two splits (leakage) or twice in one (counted twice)."""
    owner: dict[str, str] = {}
    for split, games in splits.items():
        for game in games:
            name = game.strip("/")
            if name in owner:
                where = (
                    f"twice in split {split!r}"
                    if owner[name] == split
                    else f"in splits {owner[name]!r} and {split!r}"
                )
                raise SplitError(
                    f"{source}: game {game!r} is listed {where}; a game belongs to one split only "
                    "(join splits with '+', e.g. 'train+valid', to use them together)"
                )
            owner[name] = split


def _games_of_one_split(split: str, root: str | Path | None, game_roots: tuple[Path, ...]) -> list[str]:
    if root is None:
        return official_games(split)
    root = Path(root)
    if (root / SPLITS_FILENAME).is_file():
        splits = read_splits_file(root / SPLITS_FILENAME)
        if split not in splits:
            raise SplitError(
                f"{root / SPLITS_FILENAME}: no split {split!r}; it has {', '.join(sorted(splits))}"
            )
        return splits[split]
    games = official_games(split)
    folders = [root, *game_roots]
    if not any((folder / game).is_dir() for game in games for folder in folders):
        where = " or ".join(str(folder) for folder in dict.fromkeys(folders))
        raise SplitError(
            f"{where} holds none of the {len(games)} official games of split {split!r}; "
            f"a custom dataset needs {root / SPLITS_FILENAME}, "
            '{"train": [game, ...], "valid": [...], ...}, each game a path relative to the root'
        )
    if root not in _warned_official:
        _warned_official.add(root)
        log.warning("no %s at %s: the official SoccerNet-v2 split lists were used", SPLITS_FILENAME, root)
    return games
