"""Bad data through the command line: check-data, evaluate and train refuse it with exit status 2.

Each case is a small dataset of three games (train, valid, test) with one-minute halves,
damaged in one way. The commands must exit with 2 and a message that names the file, the
game or the key at fault, and write nothing (``astra train`` claims its run folder,
``run.json``, ``config.yaml`` and TensorBoard events, before it reads clips; it must write
no checkpoint). The games bear the names of official games (those of tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from astra.cli import main
from astra.data.dataset import MIN_AUDIO_COVERAGE, PAST_END_TOLERANCE_SECONDS
from astra.data.splits import official_games
from astra.submission import Spots, write_submission
from astra.training.run_folder import CONFIG_NAME, IDENTITY_NAME

HALF_SECONDS = (69, 64)
# Training as small as the tiny config of tests/training, for one epoch.
TINY_TRAINING = [
    "model.visual_dims=[8, 8, 4, 8, 8]",
    "model.d_model=16",
    "model.num_heads=2",
    "model.audio_conv_channels=[2, 4, 4, 4, 4, 4]",
    "model.audio_hidden_dims=[16, 16]",
    "clips.clip_seconds=20",
    "clips.train_stride_seconds=10",
    "clips.inference_stride_seconds=10",
    "train.epochs=1",
    "train.warmup_epochs=0",
    "train.batch_size=2",
    "train.loader_workers=0",
]


def _label(half: int, second: int, label: str) -> dict[str, str]:
    game_time = f"{half} - {second // 60:02d}:{second % 60:02d}"
    return {"gameTime": game_time, "label": label, "position": str(second * 1000), "visibility": "visible"}


LABELS = (_label(1, 10, "Kick-off"), _label(1, 40, "Foul"), _label(2, 5, "Corner"), _label(2, 50, "Goal"))


@pytest.fixture
def dataset(tmp_path: Path, make_game: Callable[..., None], tiny_games) -> Path:
    """Three games of 69 + 64 s with audio a little off their halves, as real data, and a splits.json."""
    root = tmp_path / "data"
    splits: dict[str, list[str]] = {}
    for game in tiny_games:
        small = dataclasses.replace(
            game, half_seconds=HALF_SECONDS, audio_frames=(6_930, 6_380), labels=LABELS
        )
        make_game(root, small)
        splits.setdefault(game.split, []).append(game.name)
    (root / "splits.json").write_text(json.dumps(splits), encoding="utf-8")
    return root


def _games(root: Path) -> dict[str, str]:
    return {split: games[0] for split, games in json.loads((root / "splits.json").read_text()).items()}


def _files(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")}


def _run(capsys: pytest.CaptureFixture[str], dataset: Path, *argv: str) -> tuple[int, str]:
    """Run ``astra *argv``; checks that it writes nothing beside or under ``dataset``."""
    before = _files(dataset.parent)
    code = main(list(argv))
    captured = capsys.readouterr()
    assert _files(dataset.parent) == before
    return code, captured.out + captured.err


def _train(
    capsys: pytest.CaptureFixture[str], dataset: Path, *overrides: str, in_training: bool = False
) -> tuple[int, str]:
    """Run ``astra train``; checks that it writes nothing under ``dataset`` and does not claim ``out``
    (no checkpoint; no run record either unless the problem is ``in_training``, found by the first
    epoch's reads: the next run into it starts clean)."""
    out = dataset.parent / "run"
    before = _files(dataset)
    code = main(["train", "--data", str(dataset), "--out", str(out), *TINY_TRAINING, *overrides])
    captured = capsys.readouterr()
    assert _files(dataset) == before
    assert not list(out.rglob("*.pt")), "train wrote a checkpoint"
    if not in_training:
        assert not (out / IDENTITY_NAME).exists() and not (out / CONFIG_NAME).exists(), "train claimed --out"
    return code, captured.out + captured.err


def test_the_clean_dataset_passes(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = _run(capsys, dataset, "check-data", "--data", str(dataset))
    assert code == 0, output
    assert "no problems found" in output


# --- one game in two splits --------------------------------------------------------------------


def _leak(dataset: Path) -> str:
    games = _games(dataset)
    splits = {"train": [games["train"], games["test"]], "valid": [games["valid"]], "test": [games["test"]]}
    (dataset / "splits.json").write_text(json.dumps(splits), encoding="utf-8")
    return games["test"]


def test_check_data_refuses_a_game_in_two_splits(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    game = _leak(dataset)
    code, output = _run(capsys, dataset, "check-data", "--data", str(dataset))
    assert code == 2
    assert str(dataset / "splits.json") in output and repr(game) in output
    assert "in splits 'train' and 'test'" in output


def test_train_refuses_a_game_in_two_splits(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    game = _leak(dataset)
    code, output = _train(capsys, dataset, "model.use_audio=false")
    assert code == 2
    assert str(dataset / "splits.json") in output and repr(game) in output and "'train' and 'test'" in output


# --- no splits.json ----------------------------------------------------------------------------


def _customise(dataset: Path) -> None:
    """Give the games names of no official game and drop splits.json: a custom dataset that forgot it."""
    for game in _games(dataset).values():
        (dataset / game).rename(dataset / game.split("/")[0] / f"custom {Path(game).name}")
    (dataset / "splits.json").unlink()


def test_without_splits_json_a_custom_dataset_is_refused_in_a_few_lines(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _customise(dataset)
    code, output = _run(capsys, dataset, "check-data", "--data", str(dataset))
    assert code == 2
    # One problem per official split, not one per official game.
    assert "4 problem(s)" in output and "label file not found" not in output
    assert f"none of the {len(official_games('train'))} official games of split 'train'" in output
    assert str(dataset / "splits.json") in output


def test_without_splits_json_official_games_are_used_with_one_warning(
    dataset: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (dataset / "splits.json").unlink()
    game = official_games("valid")[0]
    (dataset / game).mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        code, output = _run(
            capsys, dataset, "check-data", "--data", str(dataset), "--split", "valid", "--no-audio"
        )
    assert code == 2
    warnings = [record.getMessage() for record in caplog.records if "splits.json" in record.getMessage()]
    assert warnings == [f"no splits.json at {dataset}: the official SoccerNet-v2 split lists were used"]
    # The 99 missing games are one problem, named by count with the first few; the one whose
    # folder is there (empty) lacks its labels and the features of each half.
    missing = len(official_games("valid")) - 1
    assert "4 problem(s)" in output
    assert (
        f"{missing} of the {missing + 1} games of split 'valid' have no folder under the features root"
        in output
    )
    assert output.count("label file not found") == 1 and output.count("features file not found") == 2


def test_train_without_splits_json_is_refused(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _customise(dataset)
    code, output = _train(capsys, dataset, "model.use_audio=false")
    assert code == 2
    assert "official games of split" in output and str(dataset / "splits.json") in output


# --- short audio -------------------------------------------------------------------------------


def _cut_audio(dataset: Path, frames: int) -> Path:
    path = dataset / _games(dataset)["train"] / "audio1.npy"  # half 1 lasts 69 s
    np.save(path, np.load(path)[:, :frames])
    return path


def test_check_data_refuses_audio_covering_little_of_its_half(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _cut_audio(dataset, 500)
    code, output = _run(capsys, dataset, "check-data", "--data", str(dataset))
    assert code == 2
    assert str(path) in output and "lasts 5 s" in output and "lasts 69 s" in output
    assert f"{500 / 6_900:.1%}" in output and f"{MIN_AUDIO_COVERAGE:.0%}" in output


def test_check_data_reports_audio_a_little_short(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cut_audio(dataset, 6_500)
    code, output = _run(capsys, dataset, "check-data", "--data", str(dataset), "--split", "train")
    assert code == 0
    assert f"the shortest covers {6_500 / 6_900:.1%} of its half ({path})" in output


def test_train_refuses_audio_covering_little_of_its_half(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _cut_audio(dataset, 500)
    code, output = _train(capsys, dataset)
    assert code == 2
    assert str(path) in output and "lasts 5 s" in output and "lasts 69 s" in output


# --- labels past the end of a half -------------------------------------------------------------


def _add_label(dataset: Path, split: str, label: dict[str, str]) -> Path:
    path = dataset / _games(dataset)[split] / "Labels-v2.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["annotations"].append(label)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_labels_a_little_past_the_end_are_reported_and_kept(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_label(dataset, "train", _label(2, HALF_SECONDS[1] + 3, "Throw-in"))
    code, output = _run(capsys, dataset, "check-data", "--data", str(dataset), "--no-audio")
    assert code == 0
    game = _games(dataset)["train"]
    assert f"labels past the end of their half (within {PAST_END_TOLERANCE_SECONDS} s" in output
    assert f"1 in 1 games ({game!r}: 1)" in output


@pytest.mark.parametrize("command", ["check-data", "train"])
def test_a_label_far_past_the_end_is_refused(
    dataset: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    second = HALF_SECONDS[1] + PAST_END_TOLERANCE_SECONDS + 1
    path = _add_label(dataset, "train", _label(2, second, "Throw-in"))
    if command == "check-data":
        code, output = _run(capsys, dataset, "check-data", "--data", str(dataset), "--no-audio")
    else:
        code, output = _train(capsys, dataset, "model.use_audio=false")
    assert code == 2
    assert str(path) in output and "'Throw-in'" in output and f"{second * 1000} ms" in output


# --- NaN in the features -----------------------------------------------------------------------


def _poison(dataset: Path) -> list[Path]:
    """NaN at second 45 of both halves of the training game; returns the two feature files.

    Second 45 lies in a training clip of every phase (20-s clips, 10-s stride); with both
    halves poisoned, the clip an epoch may leave out (to fill whole batches) cannot hide it.
    """
    paths = [dataset / _games(dataset)["train"] / f"{half}_baidu_soccer_embeddings.npy" for half in (1, 2)]
    for path in paths:
        array = np.load(path)
        array[45, 3] = np.nan
        np.save(path, array)
    return paths


def test_check_data_names_the_file_and_second_of_a_nan(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _poison(dataset)
    code, output = _run(capsys, dataset, "check-data", "--data", str(dataset))
    assert code == 2
    assert "2 problem(s)" in output  # each half's, not only the game's first
    assert all(f"{path}: NaN or inf at second 45" in output for path in paths)


def test_check_data_reports_every_problem_of_a_game(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Damaged labels, features of another shape in half 1 and a NaN in half 2, in one game: all three."""
    game = dataset / _games(dataset)["train"]
    (game / "Labels-v2.json").write_text('{"annotations": [', encoding="utf-8")
    np.save(game / "1_baidu_soccer_embeddings.npy", np.zeros((69, 3, 2), dtype=np.float32))
    half_2 = game / "2_baidu_soccer_embeddings.npy"
    features = np.load(half_2)
    features[30, 0] = np.inf
    np.save(half_2, features)
    code, output = _run(capsys, dataset, "check-data", "--data", str(dataset), "--no-audio")
    assert code == 2
    assert "3 problem(s)" in output, output
    assert str(game / "Labels-v2.json") in output
    assert f"{game / '1_baidu_soccer_embeddings.npy'}: features must be [seconds, D]" in output
    assert f"{half_2}: NaN or inf at second 30" in output


@pytest.mark.parametrize(
    "overrides",
    [("model.use_audio=false",), ("model.use_audio=false", "model.feature_whitening=true")],
    ids=["clips", "whitening-fit"],
)
def test_train_names_the_file_and_second_of_a_nan(
    dataset: Path, capsys: pytest.CaptureFixture[str], overrides: tuple[str, ...]
) -> None:
    """Found where clips are read, or, with model.feature_whitening (configs/small.yaml), by its fit."""
    paths = _poison(dataset)
    code, output = _train(
        capsys, dataset, *overrides, in_training="model.feature_whitening=true" not in overrides
    )
    assert code == 2
    assert any(f"astra train: error: {path}: NaN or inf at second 45" in output for path in paths), output
    assert "Traceback" not in output


# --- predictions zips --------------------------------------------------------------------------


def _predictions(dataset: Path, prefix: str = "") -> Path:
    spots = Spots.from_frames(1, np.array([20, 80]), np.array([0, 3]), np.array([0.9, 0.4]))
    zip_path = dataset.parent / "submission.zip"
    write_submission(
        dataset.parent / "predictions", {prefix + game: spots for game in _games(dataset).values()}, zip_path
    )
    return zip_path


def test_evaluate_calls_a_damaged_zip_one(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zip_path = _predictions(dataset)
    data = zip_path.read_bytes()
    zip_path.write_bytes(data[: len(data) - 30])  # cut short, as by an interrupted upload
    code, output = _run(capsys, dataset, "evaluate", "--labels", str(dataset), "--predictions", str(zip_path))
    assert code == 2
    assert f"{zip_path}: a damaged zip" in output and "another file" not in output


def test_evaluate_says_where_games_under_a_top_folder_sit(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zip_path = _predictions(dataset, prefix="my_run/")
    code, output = _run(capsys, dataset, "evaluate", "--labels", str(dataset), "--predictions", str(zip_path))
    assert code == 2
    assert "no predictions for 3 game(s)" in output
    assert (
        "3 of them found under the top folder 'my_run/' in the zip; zip the game folders themselves" in output
    )
