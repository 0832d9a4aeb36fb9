"""Opening SoccerNet-v2 games from disk: layout, lazy memory maps, validation, and ``astra check-data``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from astra.classes import CLASS_INDEX
from astra.commands import check_data
from astra.data.dataset import (
    MIN_AUDIO_COVERAGE,
    PAST_END_TOLERANCE_SECONDS,
    DataError,
    DataRoots,
    check_finite,
    labels_past_end,
    load_game,
    load_split,
)

# --- opening the tiny dataset ----------------------------------------------------------------


def test_a_split_opens_as_two_halves_per_game(tiny_dataset) -> None:
    halves = load_split(
        DataRoots.single(tiny_dataset.root),
        "train+valid+test",
        with_audio=True,
        require_labels=True,
        progress=False,
    )
    assert [(h.game, h.half) for h in halves] == [
        (g.name, half) for g in tiny_dataset.games for half in (1, 2)
    ]
    for half in halves:
        game = tiny_dataset.game(half.game)
        assert half.num_seconds == game.half_seconds[half.half - 1]
        assert half.features.shape == (half.num_seconds, tiny_dataset.feature_dim)
        assert half.audio is not None and half.audio.shape == (128, game.audio_frames[half.half - 1])
        assert half.num_audio_frames == 100 * half.num_seconds
        # Memory maps, not arrays read into memory.
        assert isinstance(half.features, np.memmap) and isinstance(half.audio, np.memmap)


def test_annotations_follow_the_label_file(tiny_dataset) -> None:
    game = tiny_dataset.games[0]
    halves = load_game(DataRoots.single(tiny_dataset.root), game.name, with_audio=False, require_labels=True)
    for half in halves:
        written = [
            label
            for label in game.labels
            if label["gameTime"].startswith(str(half.half)) and label["label"] in CLASS_INDEX
        ]
        assert len(half.annotations) == len(written)
        assert (half.annotations.half == half.half).all()
        assert half.annotations.class_index.tolist() == [CLASS_INDEX[label["label"]] for label in written]
        assert half.annotations.visible.tolist() == [label["visibility"] != "not shown" for label in written]
        assert half.audio is None


def test_labels_outside_the_classes_are_warned_about_once_per_split(
    tmp_path: Path, make_tiny_dataset, tiny_games, caplog: pytest.LogCaptureFixture
) -> None:
    extra = {"gameTime": "1 - 00:10", "label": "Drop ball", "position": "10000", "visibility": "visible"}
    other = {"gameTime": "2 - 00:20", "label": "Kickoff", "position": "20000", "visibility": "visible"}
    games = tuple(
        dataclasses.replace(game, split="train", labels=(*game.labels, extra, other), audio_frames=None)
        for game in tiny_games
    )
    dataset = make_tiny_dataset(tmp_path, with_audio=False, games=games)
    with caplog.at_level(logging.WARNING, logger="astra.data.dataset"):
        load_split(
            DataRoots.single(dataset.root), "train", with_audio=False, require_labels=True, progress=False
        )
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    # Game 1 already has one "Drop ball"; each game adds one more and one "Kickoff".
    assert "'Drop ball': 4" in message and "'Kickoff': 3" in message and "split 'train'" in message


def test_a_half_pickles_as_paths_not_arrays(tiny_dataset) -> None:
    # Data-loading processes receive halves by pickle: the arrays must not travel with them.
    game = tiny_dataset.games[1].name
    half = load_game(DataRoots.single(tiny_dataset.root), game, with_audio=True, require_labels=True)[1]
    payload = pickle.dumps(half)
    assert len(payload) < 10_000 < half.features.nbytes
    copy = pickle.loads(payload)
    assert isinstance(copy.features, np.memmap) and isinstance(copy.audio, np.memmap)
    assert (copy.game, copy.half, copy.num_seconds, copy.features_path) == (
        half.game,
        half.half,
        half.num_seconds,
        half.features_path,
    )
    np.testing.assert_array_equal(copy.features, half.features)
    np.testing.assert_array_equal(copy.audio, half.audio)
    np.testing.assert_array_equal(copy.annotations.position_ms, half.annotations.position_ms)
    no_audio = pickle.loads(pickle.dumps(dataclasses.replace(half, audio=None, audio_path=None)))
    assert no_audio.audio is None


def test_opening_reads_no_values(tmp_path: Path, make_game, tiny_games) -> None:
    # A NaN anywhere would be found by a full read; opening must not look at the values.
    game = dataclasses.replace(tiny_games[2], audio_frames=(20_000, 17_600))  # 90% of 222 s and 195 s
    make_game(tmp_path, game)
    path = tmp_path / game.name / "1_baidu_soccer_embeddings.npy"
    array = np.load(path)
    array[:] = np.nan
    np.save(path, array)
    halves = load_game(DataRoots.single(tmp_path), game.name, with_audio=True, require_labels=True)
    with pytest.raises(DataError, match="second 0"):
        check_finite(halves[0])
    check_finite(halves[1])


def test_separate_roots_and_a_custom_file_name(tmp_path: Path, make_game, tiny_games) -> None:
    game = dataclasses.replace(tiny_games[1], audio_frames=(27_000, 24_900))  # 90% of 300 s and 276 s
    make_game(tmp_path / "all", game)
    roots = DataRoots(
        tmp_path / "labels", tmp_path / "features", tmp_path / "audio", "{half}_ResNET_PCA512.npy"
    )
    for root, names in (
        (roots.labels, ["Labels-v2.json"]),
        (roots.features, ["1_baidu_soccer_embeddings.npy", "2_baidu_soccer_embeddings.npy"]),
        (roots.audio, ["audio1.npy", "audio2.npy"]),
    ):
        (root / game.name).mkdir(parents=True)
        for name in names:
            target = name.replace("_baidu_soccer_embeddings", "_ResNET_PCA512")
            shutil.move(tmp_path / "all" / game.name / name, root / game.name / target)
    halves = load_game(roots, game.name, with_audio=True, require_labels=True)
    assert halves[0].features_path == roots.features / game.name / "1_ResNET_PCA512.npy"
    assert halves[1].audio_path == roots.audio / game.name / "audio2.npy"
    assert sum(len(h.annotations) for h in halves) == len(game.labels)


def test_a_game_without_labels_opens_only_when_labels_are_not_required(
    tmp_path: Path, make_game, tiny_games
) -> None:
    game = dataclasses.replace(tiny_games[2], labels=None, audio_frames=None)
    make_game(tmp_path, game)
    roots = DataRoots.single(tmp_path)
    halves = load_game(roots, game.name, with_audio=False, require_labels=False)
    assert [len(h.annotations) for h in halves] == [0, 0]
    with pytest.raises(DataError, match="label file not found") as error:
        load_game(roots, game.name, with_audio=False, require_labels=True)
    assert str(roots.labels_file(game.name)) in str(error.value)


# --- validation errors -----------------------------------------------------------------------


@pytest.fixture
def small_game(tmp_path: Path, make_game, tiny_games):
    """One game of 60 + 65 s with audio and two labels, written under ``tmp_path``."""
    labels = (
        {"gameTime": "1 - 00:30", "label": "Foul", "position": "30000", "visibility": "visible"},
        {"gameTime": "2 - 01:04", "label": "Goal", "position": "64900", "visibility": "visible"},
    )
    game = dataclasses.replace(
        tiny_games[0], half_seconds=(60, 65), audio_frames=(6_010, 6_480), labels=labels
    )
    make_game(tmp_path, game)
    return game


def _open(root: Path, game: str, *, with_audio: bool = True) -> None:
    load_game(DataRoots.single(root), game, with_audio=with_audio, require_labels=True)


def test_the_small_game_is_valid(tmp_path: Path, small_game) -> None:
    _open(tmp_path, small_game.name)


@pytest.mark.parametrize("kind", ["labels", "features", "audio"])
def test_a_missing_game_folder_names_the_root_searched(tmp_path: Path, small_game, kind: str) -> None:
    roots = DataRoots(tmp_path, tmp_path, tmp_path)
    roots = dataclasses.replace(roots, **{kind: tmp_path / "elsewhere"})
    with pytest.raises(DataError, match=f"under the {kind} root") as error:
        load_game(roots, small_game.name, with_audio=True, require_labels=True)
    assert str(tmp_path / "elsewhere") in str(error.value)


@pytest.mark.parametrize("name", ["2_baidu_soccer_embeddings.npy", "audio1.npy"])
def test_a_missing_half_names_the_file(tmp_path: Path, small_game, name: str) -> None:
    (tmp_path / small_game.name / name).unlink()
    with pytest.raises(DataError, match="file not found") as error:
        _open(tmp_path, small_game.name)
    assert str(tmp_path / small_game.name / name) in str(error.value)
    if name.startswith("audio"):
        _open(tmp_path, small_game.name, with_audio=False)


def test_malformed_labels_name_the_file(tmp_path: Path, small_game) -> None:
    path = tmp_path / small_game.name / "Labels-v2.json"
    path.write_text('{"annotations": [', encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON") as error:
        _open(tmp_path, small_game.name)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(60, dtype=np.float32), "must be"),
        (np.zeros((60, 4, 9), dtype=np.float32), "must be"),
        (np.zeros((60, 36), dtype=np.float64), "float32 or float16"),
        (np.zeros((60, 36), dtype=np.int32), "float32 or float16"),
        (np.zeros((0, 36), dtype=np.float32), "empty"),
    ],
)
def test_malformed_features_name_the_file(
    tmp_path: Path, small_game, array: np.ndarray, message: str
) -> None:
    path = tmp_path / small_game.name / "1_baidu_soccer_embeddings.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message) as error:
        _open(tmp_path, small_game.name)
    assert str(path) in str(error.value)


def test_an_unreadable_array_names_the_file(tmp_path: Path, small_game) -> None:
    path = tmp_path / small_game.name / "audio2.npy"
    path.write_bytes(b"not an array")
    with pytest.raises(DataError, match=r"not a readable \.npy") as error:
        _open(tmp_path, small_game.name)
    assert str(path) in str(error.value)


def test_feature_dimensions_must_agree_between_halves(tmp_path: Path, small_game) -> None:
    path = tmp_path / small_game.name / "2_baidu_soccer_embeddings.npy"
    np.save(path, np.zeros((65, 35), dtype=np.float32))
    with pytest.raises(DataError, match="both halves") as error:
        _open(tmp_path, small_game.name)
    assert str(path) in str(error.value)


def test_feature_dimensions_must_agree_across_games(tmp_path: Path, make_game, tiny_games) -> None:
    games = (
        dataclasses.replace(tiny_games[0], split="train", audio_frames=None),
        dataclasses.replace(tiny_games[1], split="train", audio_frames=None, feature_dims=(8, 8, 4, 8, 9)),
    )
    for game in games:
        make_game(tmp_path, game)
    (tmp_path / "splits.json").write_text(json.dumps({"train": [g.name for g in games]}), encoding="utf-8")
    with pytest.raises(DataError, match="all games") as error:
        load_split(DataRoots.single(tmp_path), "train", with_audio=False, require_labels=True, progress=False)
    assert games[1].name in str(error.value) and games[0].name in str(error.value)


@pytest.mark.parametrize("shape", [(64, 6_010), (6_010, 128), (128,), (128, 0)])
def test_malformed_audio_names_the_file(tmp_path: Path, small_game, shape: tuple[int, ...]) -> None:
    path = tmp_path / small_game.name / "audio1.npy"
    np.save(path, np.ones(shape, dtype=np.float32))
    with pytest.raises(DataError, match=r"audio must be|empty audio") as error:
        _open(tmp_path, small_game.name)
    assert str(path) in str(error.value)


def _add_labels(path: Path, *entries: tuple[str, str, int]) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    for time, label, position_ms in entries:
        document["annotations"].append(
            {"gameTime": time, "label": label, "position": str(position_ms), "visibility": "visible"}
        )
    path.write_text(json.dumps(document), encoding="utf-8")


def test_a_label_far_past_the_end_of_its_half_is_named(tmp_path: Path, small_game) -> None:
    path = tmp_path / small_game.name / "Labels-v2.json"
    # Half 2 lasts 65 s: 60 s past its end is beyond the tolerance.
    _add_labels(path, ("2 - 01:10", "Corner", 70_000), ("2 - 02:05", "Corner", 125_000))
    with pytest.raises(DataError, match="past the end") as error:
        _open(tmp_path, small_game.name)
    message = str(error.value)
    assert str(path) in message and "'Corner'" in message and "125000 ms" in message and "65 s" in message
    assert f"{PAST_END_TOLERANCE_SECONDS} s" in message


def test_labels_a_little_past_the_end_are_kept_flagged_and_counted_per_game(
    tmp_path: Path, make_tiny_dataset, tiny_games, caplog: pytest.LogCaptureFixture
) -> None:
    games = tuple(dataclasses.replace(game, split="train", audio_frames=None) for game in tiny_games)
    dataset = make_tiny_dataset(tmp_path, with_audio=False, games=games)
    first, second = games[0], games[1]  # halves of (183, 241) s and (300, 276) s
    _add_labels(
        tmp_path / first.name / "Labels-v2.json",
        ("1 - 03:03", "Corner", 183_000),  # exactly at the end: no feature row
        ("2 - 04:05", "Goal", 245_000),
    )
    _add_labels(tmp_path / second.name / "Labels-v2.json", ("2 - 05:35", "Foul", 335_999))
    with caplog.at_level(logging.WARNING, logger="astra.data.dataset"):
        halves = load_split(
            DataRoots.single(dataset.root), "train", with_audio=False, require_labels=True, progress=False
        )
    warnings = [record.getMessage() for record in caplog.records if "past the end" in record.getMessage()]
    assert len(warnings) == 1
    assert "3 labels" in warnings[0] and "2 game(s)" in warnings[0]
    assert f"{first.name!r}: 2" in warnings[0] and f"{second.name!r}: 1" in warnings[0]
    assert labels_past_end(halves) == {first.name: 2, second.name: 1}
    # Kept in the annotations (the evaluator sees them), flagged for the training targets.
    half = halves[1]
    assert half.game == first.name and half.half == 2
    assert half.annotations.position_ms[-1] == 245_000 and half.annotations.past_end.tolist()[-1]
    assert not half.annotations.past_end[:-1].any()
    assert 245_000 not in half.annotations.within_features().position_ms
    assert halves[0].annotations.past_end.sum() == 1


@pytest.mark.parametrize(("frames", "accepted"), [(6_000 * 9 // 10, True), (5_399, False), (500, False)])
def test_audio_must_cover_most_of_its_half(tmp_path: Path, small_game, frames: int, accepted: bool) -> None:
    path = tmp_path / small_game.name / "audio1.npy"  # half 1 lasts 60 s
    np.save(path, np.ones((128, frames), dtype=np.float32))
    if accepted:
        halves = load_game(DataRoots.single(tmp_path), small_game.name, with_audio=True, require_labels=True)
        assert halves[0].audio_coverage == pytest.approx(frames / 6_000)
        assert halves[1].audio_coverage == pytest.approx(6_480 / 6_500)
        return
    with pytest.raises(DataError, match="covers") as error:
        _open(tmp_path, small_game.name)
    message = str(error.value)
    assert str(path) in message and f"lasts {frames / 100:g} s" in message and "60 s" in message
    assert f"{MIN_AUDIO_COVERAGE:.0%}" in message


@pytest.mark.parametrize(
    ("name", "index", "second"),
    [
        ("2_baidu_soccer_embeddings.npy", (17, 5), 17),
        ("audio1.npy", (100, 5_999), 59),
        ("audio1.npy", (3, 6_005), 60),
    ],
)
def test_the_full_scan_finds_nan_and_inf(
    tmp_path: Path, small_game, name: str, index: tuple[int, int], second: int
) -> None:
    path = tmp_path / small_game.name / name
    array = np.load(path)
    array[index] = np.inf if name.startswith("audio") else np.nan
    np.save(path, array)
    halves = load_game(DataRoots.single(tmp_path), small_game.name, with_audio=True, require_labels=True)
    bad = halves[0] if name.endswith("1.npy") else halves[1]
    good = halves[1] if bad is halves[0] else halves[0]
    check_finite(good, chunk_seconds=7)
    with pytest.raises(DataError, match=f"second {second}\\b") as error:
        check_finite(bad, chunk_seconds=7)
    assert str(path) in str(error.value)


# --- astra check-data ------------------------------------------------------------------------


def _check_data(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    check_data.add_arguments(parser)
    return check_data.run(parser.parse_args(list(argv)))


def test_check_data_passes_a_clean_dataset(tiny_dataset, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check_data("--data", str(tiny_dataset.root)) == 0
    out = capsys.readouterr().out
    for split, games in tiny_dataset.splits.items():
        assert f"split {split}: {len(games)} games, {2 * len(games)} halves" in out
    assert "'Drop ball': 1" in out and "no problems found" in out
    assert "not shown" in out
    # Game 1 of train: half 2 has 239.7 s of audio for 241 s of features.
    train = out[: out.index("split valid")]
    assert f"1 of 2 halves; the shortest covers {23_970 / 24_100:.1%} of its half" in train
    assert str(tiny_dataset.root / tiny_dataset.splits["train"][0] / "audio2.npy") in train
    assert "labels past the end of their half (within 60 s; scored in evaluation, not trained on): 0" in out


def test_check_data_reports_labels_a_little_past_the_end(
    tmp_path: Path, make_tiny_dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = make_tiny_dataset(tmp_path, with_audio=False)
    game = dataset.splits["valid"][0]  # half 2 lasts 276 s
    _add_labels(
        tmp_path / game / "Labels-v2.json", ("2 - 04:40", "Goal", 280_000), ("2 - 04:50", "Foul", 290_000)
    )
    assert _check_data("--data", str(tmp_path), "--no-audio", "--split", "valid") == 0
    out = capsys.readouterr().out
    assert f"not trained on): 2 in 1 games ({game!r}: 2)" in out and "no problems found" in out


def test_check_data_lists_every_problem(
    tmp_path: Path, make_tiny_dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = make_tiny_dataset(tmp_path, with_audio=False)
    train, valid = dataset.splits["train"][0], dataset.splits["valid"][0]
    features = tmp_path / train / "2_baidu_soccer_embeddings.npy"
    array = np.load(features)
    array[-1, 0] = np.inf
    np.save(features, array)
    (tmp_path / valid / "Labels-v2.json").unlink()
    assert _check_data("--data", str(tmp_path), "--no-audio") == 2
    out = capsys.readouterr().out
    assert "2 problem(s)" in out
    assert f"{features}: NaN or inf at second {array.shape[0] - 1}" in out
    assert str(tmp_path / valid / "Labels-v2.json") in out
    # With audio, every game lacks its audio files.
    assert _check_data("--data", str(tmp_path), "--split", "test") == 2
    assert "audio" in capsys.readouterr().out


def test_roots_from_arguments_are_absolute_so_that_trials_in_other_folders_find_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from astra.config import DataConfig
    from astra.data.dataset import DataRoots

    monkeypatch.chdir(tmp_path)
    roots = DataRoots.from_config("data", DataConfig(), audio_root="sound")
    assert roots.labels == roots.features == tmp_path / "data"
    assert roots.audio == tmp_path / "sound"
    monkeypatch.chdir("/")  # a Ray Tune trial runs in its own folder
    assert roots.labels_file("g").parent == tmp_path / "data" / "g"
