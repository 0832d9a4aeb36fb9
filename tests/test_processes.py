"""A split's games over several processes: the results of one process, in the games' order;
games a function leaves out stay out; a worker's error reaches the caller whole."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from astra.processes import WorkerError, iterate_games, map_games

GAMES = [f"league/season/game {g:02d}" for g in range(20)]


def squares_but_not_multiples_of_five(games: list[str], offset: int) -> dict[str, tuple[int, int]]:
    """Each game's number squared plus ``offset``, with the process that computed it."""
    return {game: (int(game[-2:]) ** 2 + offset, os.getpid()) for game in games if int(game[-2:]) % 5}


def fails_on_game_seven(games: list[str]) -> dict[str, int]:
    if GAMES[7] in games:
        raise ValueError(f"{GAMES[7]}: damaged outputs")
    return dict.fromkeys(games, 0)


def test_games_come_back_in_their_order_from_several_processes() -> None:
    shuffled = GAMES[::3] + GAMES[1::3] + GAMES[2::3]
    one = map_games(squares_but_not_multiples_of_five, shuffled, 1)
    two = map_games(squares_but_not_multiples_of_five, shuffled, 1, workers=2)
    expected = [game for game in shuffled if int(game[-2:]) % 5]
    assert list(two) == list(one) == expected  # the caller's order, the games left out left out
    assert {game: value for game, (value, _) in two.items()} == {
        game: value for game, (value, _) in one.items()
    }
    assert os.getpid() not in {pid for _, pid in two.values()}  # computed in other processes


def test_a_workers_error_reaches_the_caller_and_bad_counts_are_named() -> None:
    with pytest.raises(ValueError, match="game 07: damaged outputs"):
        map_games(fails_on_game_seven, GAMES, workers=2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(WorkerError, match=f"workers must be a whole number >= 1, got {bad!r}"):
            map_games(fails_on_game_seven, GAMES, workers=bad)
        with pytest.raises(WorkerError, match="workers must be"):
            iterate_games(fails_on_game_seven, GAMES, workers=bad)  # at the call, not at the first value


def test_games_are_handed_over_as_they_come_in_their_order() -> None:
    shuffled = GAMES[::-1]
    pairs = list(iterate_games(squares_but_not_multiples_of_five, shuffled, 3, workers=2))
    assert [game for game, _ in pairs] == list(map_games(squares_but_not_multiples_of_five, shuffled, 3))
    assert [value for _, (value, _) in pairs] == [int(game[-2:]) ** 2 + 3 for game, _ in pairs]


def slow_and_recorded(games: list[str], folder: Path) -> dict[str, int]:
    time.sleep(0.3)
    (folder / games[0].replace("/", "_")).touch()
    return dict.fromkeys(games, 1)


def test_a_caller_that_stops_early_stops_the_chunks_not_started(tmp_path: Path) -> None:
    chunks_in_all = 8  # 20 games, 4 chunks per process, 2 processes
    with pytest.raises(RuntimeError, match="disk full"):
        for _ in iterate_games(slow_and_recorded, GAMES, tmp_path, workers=2):
            raise RuntimeError("disk full")
    assert 1 <= len(list(tmp_path.iterdir())) < chunks_in_all
