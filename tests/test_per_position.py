"""Per-position files: float16 on disk, float32 back, shapes checked, games found by path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astra import per_position
from astra.classes import NUM_CLASSES
from astra.per_position import FILENAME, PerPositionError, list_games, read_game, write_game

GAME = "england_epl/2014-2015/2015-02-21 - 18-00 Chelsea 1 - 1 Burnley"


def _halves(seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {1: rng.random((37, NUM_CLASSES)), 2: rng.random((52, NUM_CLASSES))}


def test_a_game_round_trips_within_float16_precision(tmp_path: Path) -> None:
    halves = _halves()
    path = write_game(tmp_path, GAME, halves)
    assert path == tmp_path / GAME / FILENAME
    with np.load(path) as archive:
        assert sorted(archive.files) == ["half1", "half2"]
        assert all(archive[name].dtype == np.float16 for name in archive.files)
    back = read_game(tmp_path, GAME)
    assert sorted(back) == [1, 2]
    for half, array in halves.items():
        assert back[half].dtype == np.float32
        assert back[half].shape == array.shape
        # float16 has an 11-bit significand: relative error at most 2**-11 on [0, 1).
        np.testing.assert_allclose(back[half], array, rtol=2**-11, atol=2**-24)


def test_rewriting_a_game_replaces_its_file(tmp_path: Path) -> None:
    write_game(tmp_path, GAME, _halves(0))
    write_game(tmp_path, GAME, _halves(1))
    np.testing.assert_allclose(read_game(tmp_path, GAME)[1], _halves(1)[1], rtol=2**-11, atol=2**-24)


@pytest.mark.parametrize("shape", [(10, NUM_CLASSES - 1), (10, NUM_CLASSES + 1), (10,)])
def test_a_wrong_shape_is_refused_naming_the_file(tmp_path: Path, shape: tuple[int, ...]) -> None:
    halves = {1: np.zeros((10, NUM_CLASSES)), 2: np.zeros(shape)}
    with pytest.raises(PerPositionError, match="half2"):
        write_game(tmp_path, GAME, halves)  # nothing half-right is written
    assert not (tmp_path / GAME / FILENAME).exists()
    # A file written elsewhere with a wrong shape is refused on reading, naming it.
    path = tmp_path / GAME / FILENAME
    path.parent.mkdir(parents=True)
    np.savez(path, half1=halves[1], half2=halves[2])
    with pytest.raises(PerPositionError, match="half2") as error:
        read_game(tmp_path, GAME)
    assert str(path) in str(error.value)


def test_a_game_needs_both_halves(tmp_path: Path) -> None:
    with pytest.raises(PerPositionError, match=r"halves 1 and 2, got \[1\]"):
        write_game(tmp_path, GAME, {1: np.zeros((10, NUM_CLASSES))})
    path = tmp_path / GAME / FILENAME
    path.parent.mkdir(parents=True)
    np.savez(path, half1=np.zeros((10, NUM_CLASSES)))
    with pytest.raises(PerPositionError, match=r"halves 1 and 2, got \[1\]"):
        read_game(tmp_path, GAME)


def test_listing_a_missing_folder_is_an_error_not_an_empty_split(tmp_path: Path) -> None:
    with pytest.raises(PerPositionError, match="no such folder"):
        list_games(tmp_path / "typo")


def test_a_missing_file_names_the_game(tmp_path: Path) -> None:
    with pytest.raises(PerPositionError) as error:
        read_game(tmp_path, GAME)
    assert GAME in str(error.value)
    assert isinstance(error.value, ValueError)  # callers that catch ValueError keep working


def test_list_games_finds_nested_games_with_spaces_sorted(tmp_path: Path) -> None:
    games = [
        "spain_laliga/2016-2017/2017-04-08 - 21-45 Malaga 2 - 0 Barcelona",
        GAME,
        "italy_serie-a/2016-2017/2017-01-29 - 17-00 Sampdoria 3 - 2 AS Roma",
    ]
    for game in games:
        write_game(tmp_path, game, _halves())
    (tmp_path / "england_epl" / "not a game").mkdir()  # a folder without outputs is no game
    assert list_games(tmp_path) == sorted(games)


def test_writing_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_game(tmp_path, GAME, _halves())
    assert [p.name for p in (tmp_path / GAME).iterdir()] == [FILENAME]


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_game(tmp_path, GAME, _halves(0))

    def broken_savez(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(per_position.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        write_game(tmp_path, GAME, _halves(1))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / GAME).iterdir()] == [FILENAME]
    np.testing.assert_allclose(read_game(tmp_path, GAME)[1], _halves(0)[1], rtol=2**-11, atol=2**-24)


def test_a_predictions_zip_holds_the_results_of_its_per_position_files(tmp_path: Path) -> None:
    # Window searches, ensembles and trial scores read the per-position files (float16): the zip
    # beside them is decoded from the same values, not from the float32 outputs before rounding.
    from astra.config import InferenceConfig
    from astra.postprocess.decode import decode_game
    from astra.prediction import PER_POSITION_DIR, ZIP_NAME, write_prediction
    from astra.submission import open_predictions

    rng = np.random.default_rng(0)
    halves = {h: rng.uniform(0, 1, (600, NUM_CLASSES)).astype(np.float32) for h in (1, 2)}
    game = "league/season/2020-01-01 - A 1 - 0 B"
    inference = InferenceConfig()
    write_prediction(tmp_path / "p", "test", [(game, halves)], inference)
    zipped = open_predictions(tmp_path / "p" / ZIP_NAME)[game]
    stored = decode_game(read_game(tmp_path / "p" / PER_POSITION_DIR, game), inference)
    unrounded = decode_game(halves, inference)
    for field in ("half", "position_ms", "class_index", "confidence"):
        np.testing.assert_array_equal(getattr(zipped, field), getattr(stored, field), err_msg=field)
    assert not np.array_equal(stored.confidence, unrounded.confidence)  # the rounding shows


def test_a_prediction_decoded_in_two_processes_is_the_prediction_of_one(tmp_path: Path) -> None:
    from astra.config import InferenceConfig
    from astra.prediction import PREDICTIONS_DIR, ZIP_NAME, PredictionError, write_prediction

    rng = np.random.default_rng(1)
    games = [(f"league/season/game {g}", {h: rng.uniform(0, 1, (300, NUM_CLASSES)).astype(np.float32)
                                          for h in (1, 2)}) for g in range(5)]  # fmt: skip
    one = write_prediction(tmp_path / "one", "test", games, InferenceConfig())
    two = write_prediction(tmp_path / "two", "test", games, InferenceConfig(), workers=2)
    assert two.games == one.games == tuple(game for game, _ in games)  # in the order given
    asked = write_prediction(tmp_path / "mapping", "test", dict(games[::-1]), InferenceConfig(), workers=2)
    assert asked.games == tuple(game for game, _ in games[::-1])  # a mapping: its own order
    for game, _ in games:
        path = Path(PREDICTIONS_DIR) / game / "results_spotting.json"
        assert (tmp_path / "two" / path).read_bytes() == (tmp_path / "one" / path).read_bytes()
        assert (tmp_path / "mapping" / path).read_bytes() == (tmp_path / "one" / path).read_bytes()
        for half in (1, 2):  # the per-position files, written by the processes
            np.testing.assert_array_equal(
                read_game(tmp_path / "mapping" / "per_position", game)[half],
                read_game(tmp_path / "one" / "per_position", game)[half],
            )
    import zipfile

    with (
        zipfile.ZipFile(tmp_path / "one" / ZIP_NAME) as one_zip,
        zipfile.ZipFile(tmp_path / "two" / ZIP_NAME) as two_zip,
    ):
        assert two_zip.namelist() == one_zip.namelist()  # the games in the same order
        assert all(two_zip.read(name) == one_zip.read(name) for name in one_zip.namelist())
    with pytest.raises(PredictionError, match="game 'league/season/game 0' given twice"):
        write_prediction(tmp_path / "twice", "test", [games[0], games[0]], InferenceConfig())


def test_a_failed_write_in_two_processes_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    # The processes are still writing games when the first document cannot be written: they stop
    # before the staging folder is removed, so that nothing of the prediction is left.
    from astra import prediction
    from astra.config import InferenceConfig

    rng = np.random.default_rng(2)
    games = {f"league/season/game {g}": {h: rng.uniform(0, 1, (300, NUM_CLASSES)).astype(np.float32)
                                         for h in (1, 2)} for g in range(16)}  # fmt: skip

    def disk_full(out_dir, documents, zip_path=None):
        next(iter(documents))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prediction, "write_documents", disk_full)
    with pytest.raises(OSError, match="No space left"):
        prediction.write_prediction(tmp_path / "out", "test", games, InferenceConfig(), workers=2)
    assert list((tmp_path / "out").iterdir()) == []
