"""A split's games over several processes: the results of one process, in the games' order;
games a function leaves out stay out; a worker's error reaches the caller whole."""

from __future__ import annotations

import os

import pytest

from astra.processes import WorkerError, map_games

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
