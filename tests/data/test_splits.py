"""Which games belong to which split: the official lists and a dataset's own splits.json."""

from __future__ import annotations

import json
import logging
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


def test_without_a_splits_file_the_official_lists_are_used_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / official_games("valid")[3]).mkdir(parents=True)
    (tmp_path / official_games("test")[0]).mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="astra.data.splits"):
        assert games_of_split("valid", tmp_path) == official_games("valid")
        assert games_of_split("valid+test", tmp_path) == official_games("valid") + official_games("test")
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert f"no splits.json at {tmp_path}" in warnings[0] and "official" in warnings[0]
    assert games_of_split("test") == official_games("test")


def test_a_folder_without_a_splits_file_or_official_games_is_refused(tmp_path: Path) -> None:
    (tmp_path / "my_league/2024/game 1").mkdir(parents=True)
    with pytest.raises(SplitError) as error:
        games_of_split("train", tmp_path)
    message = str(error.value)
    assert "none of the 300 official games of split 'train'" in message
    assert str(tmp_path / SPLITS_FILENAME) in message


def test_official_games_may_sit_under_another_root(tmp_path: Path) -> None:
    labels, features = tmp_path / "labels", tmp_path / "features"
    labels.mkdir()
    (features / official_games("challenge")[0]).mkdir(parents=True)
    with pytest.raises(SplitError, match="none of the 50 official games"):
        games_of_split("challenge", labels)
    assert games_of_split("challenge", labels, game_roots=[features]) == official_games("challenge")


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        (
            {"train": ["a/b/c", "d/e/f"], "valid": ["d/e/f"]},
            "'d/e/f' is listed in splits 'train' and 'valid'",
        ),
        (
            {"train": ["a/b/c"], "test": ["x/y/z", "a/b/c/"]},
            "'a/b/c/' is listed in splits 'train' and 'test'",
        ),
        ({"valid": ["a/b/c", "a/b/c"]}, "'a/b/c' is listed twice in split 'valid'"),
        ({"train": ["a/b/c"], "Train": ["d/e/f"]}, "split 'train' is declared twice"),
    ],
)
def test_a_game_in_two_splits_is_refused(tmp_path: Path, splits: dict[str, list[str]], message: str) -> None:
    path = tmp_path / SPLITS_FILENAME
    path.write_text(json.dumps(splits), encoding="utf-8")
    with pytest.raises(SplitError) as error:
        games_of_split("train", tmp_path)
    assert message in str(error.value) and str(path) in str(error.value)


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
