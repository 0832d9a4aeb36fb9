"""Which games belong to which split: the official lists and a dataset's own splits.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra.data.splits import (
    OFFICIAL_SPLITS,
    SPLITS_FILENAME,
    SplitError,
    games_of_split,
    official_games,
    read_splits_file,
)


def test_official_lists_have_the_published_sizes_and_do_not_overlap() -> None:
    games = {split: official_games(split) for split in OFFICIAL_SPLITS}
    assert {split: len(names) for split, names in games.items()} == {
        "train": 300,
        "valid": 100,
        "test": 100,
        "challenge": 50,
    }
    everything = [game for names in games.values() for game in names]
    assert len(set(everything)) == 550
    # Game names are paths <league>/<season>/<game>, as the SoccerNet downloader lays them out.
    assert all(game.count("/") == 2 and not game.endswith("/") for game in everything)


def test_without_a_splits_file_the_official_lists_are_used(tmp_path: Path) -> None:
    assert games_of_split("valid", tmp_path) == official_games("valid")
    assert games_of_split("test") == official_games("test")


def test_splits_join_with_plus_and_ignore_case(tmp_path: Path) -> None:
    assert games_of_split("Train + VALID") == official_games("train") + official_games("valid")


def test_a_splits_file_overrides_the_official_lists(tiny_dataset) -> None:
    for split, games in tiny_dataset.splits.items():
        assert games_of_split(split, tiny_dataset.root) == games
    joined = games_of_split("train+test", tiny_dataset.root)
    assert joined == tiny_dataset.splits["train"] + tiny_dataset.splits["test"]


def test_a_split_missing_from_the_file_is_named(tmp_path: Path) -> None:
    (tmp_path / SPLITS_FILENAME).write_text(json.dumps({"train": ["a/b/c"]}), encoding="utf-8")
    with pytest.raises(SplitError, match="no split 'valid'") as error:
        games_of_split("valid", tmp_path)
    assert str(tmp_path / SPLITS_FILENAME) in str(error.value)


def test_unknown_official_split() -> None:
    with pytest.raises(SplitError, match="unknown official split 'training'"):
        games_of_split("training")


@pytest.mark.parametrize("text", ["{not json", "[]", '{"train": "a/b/c"}', '{"train": [1, 2]}'])
def test_malformed_splits_files_are_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / SPLITS_FILENAME
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SplitError) as error:
        read_splits_file(path)
    assert str(path) in str(error.value)


def test_split_names_in_the_file_are_case_insensitive(tmp_path: Path) -> None:
    (tmp_path / SPLITS_FILENAME).write_text(json.dumps({"Train": ["x/y/z"]}), encoding="utf-8")
    assert read_splits_file(tmp_path / SPLITS_FILENAME) == {"train": ["x/y/z"]}
    assert games_of_split("TRAIN", tmp_path) == ["x/y/z"]
