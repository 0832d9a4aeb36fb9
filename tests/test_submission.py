"""Predictions files: round trips, the challenge zip layout, atomic writes, clear errors."""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from astra import submission
from astra.classes import CLASSES, NUM_CLASSES
from astra.data import labels
from astra.submission import (
    RESULTS_FILENAME,
    Spots,
    SubmissionError,
    misplaced_games,
    open_predictions,
    read_results,
    results_document,
    write_documents,
    write_results,
    write_submission,
)

GAMES = (
    "england_epl/2014-2015/2015-02-21 - 18-00 Chelsea 1 - 1 Burnley",
    "spain_laliga/2016-2017/2017-04-08 - 21-45 Malaga 2 - 0 Barcelona",
)


@pytest.fixture(params=["json", "msgspec"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each way of reading files: the json module, and msgspec when installed."""
    if request.param == "json":
        monkeypatch.setattr(submission, "_msgspec", None)
        monkeypatch.setattr(labels, "_msgspec", None)  # the JSON reader that submission uses
    else:
        pytest.importorskip("msgspec", reason="the optional msgspec reader is not installed")
    return request.param


def random_spots(seed: int, count: int = 300) -> Spots:
    rng = np.random.default_rng(seed)
    confidence = rng.random(count)
    confidence[:20] = rng.random(20).astype(np.float32)  # float32 scores, as models give
    confidence[20:30] = [0.0, 1.0, -0.25, 1.5, 1e-12, 0.1, 0.1, 0.5, 1 / 3, 2 / 3]
    return Spots(
        rng.integers(1, 3, count),
        rng.integers(0, 3_000_000, count),
        rng.integers(0, NUM_CLASSES, count),
        confidence,
    )


def assert_same_spots(read: Spots, written: Spots) -> None:
    for name in ("half", "position_ms", "class_index", "confidence"):
        np.testing.assert_array_equal(getattr(read, name), getattr(written, name), err_msg=name)


def test_results_round_trip_exactly_in_file_order(tmp_path: Path, reader: str) -> None:
    spots = random_spots(0)
    path = tmp_path / GAMES[0] / RESULTS_FILENAME
    write_results(path, GAMES[0], spots)
    game, read = read_results(path)
    assert game == GAMES[0]
    assert_same_spots(read, spots)  # every float64 confidence comes back bit for bit
    document = json.loads(path.read_text())
    entry = document["predictions"][0]
    assert set(entry) == {"gameTime", "label", "position", "half", "confidence"}
    assert all(isinstance(entry[key], str) for key in entry)
    seconds = int(entry["position"]) // 1000
    assert entry["gameTime"] == f"{entry['half']} - {seconds // 60}:{seconds % 60:02d}"
    assert entry["label"] == CLASSES[spots.class_index[0]]


def test_from_frames_positions_map_back_to_the_same_frames_as_the_official_tool() -> None:
    frames = np.arange(0, 14_400, 7)
    spots = Spots.from_frames(2, frames, np.zeros_like(frames), np.ones(len(frames), dtype=np.float32))
    assert spots.half.tolist() == [2] * len(frames)
    assert spots.position_ms.tolist() == (frames * 500).tolist()
    # Official predictions2vector: frame = int(framerate * (position / 1000)).
    assert [int(2 * (position / 1000)) for position in spots.position_ms.tolist()] == frames.tolist()
    assert spots.confidence.dtype == np.float64


def test_submission_folder_and_zip_hold_one_file_per_game(tmp_path: Path) -> None:
    results = {GAMES[0]: random_spots(1), GAMES[1]: random_spots(2), "league/season/no spots": Spots.empty()}
    written = write_submission(tmp_path / "out", results, zip_path=tmp_path / "submission.zip")
    assert written == [tmp_path / "out" / game / RESULTS_FILENAME for game in results]
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        assert sorted(archive.namelist()) == sorted(f"{game}/{RESULTS_FILENAME}" for game in results)
        assert archive.read(f"{GAMES[0]}/{RESULTS_FILENAME}") == written[0].read_bytes()
    for source in (tmp_path / "out", tmp_path / "submission.zip"):
        predictions = open_predictions(source)
        assert sorted(predictions) == sorted(results)
        assert GAMES[1] in predictions and "other game" not in predictions
        for game, spots in results.items():
            assert_same_spots(predictions[game], spots)
    assert not [path for path in tmp_path.rglob("*") if path.name.endswith(".tmp")]


def test_documents_handed_over_one_at_a_time_are_written_as_a_mapping_would_be(tmp_path: Path) -> None:
    documents = dict(results_document(game, random_spots(seed)) for seed, game in enumerate(GAMES[:2]))
    write_documents(tmp_path / "mapping", documents, zip_path=tmp_path / "mapping.zip")
    write_documents(tmp_path / "pairs", iter(documents.items()), zip_path=tmp_path / "pairs.zip")
    assert (tmp_path / "pairs.zip").read_bytes() == (tmp_path / "mapping.zip").read_bytes()
    for game in documents:
        assert (tmp_path / "pairs" / game / RESULTS_FILENAME).read_bytes() == documents[game]
    twice = [(GAMES[0], documents[GAMES[0]])] * 2
    with pytest.raises(SubmissionError, match=f"game {GAMES[0]!r} given twice"):
        write_documents(tmp_path / "twice", twice, zip_path=tmp_path / "twice.zip")
    assert not (tmp_path / "twice.zip").exists()


def test_game_names_are_relative_paths(tmp_path: Path) -> None:
    # The labels' UrlLocal ends with a slash: it names the same game.
    write_submission(tmp_path, {GAMES[0] + "/": Spots.empty()})
    assert (tmp_path / GAMES[0] / RESULTS_FILENAME).is_file()
    for bad in ("../outside", "/absolute/game", "a/./b", "", "a\\b"):
        with pytest.raises(SubmissionError, match="game name"):
            write_submission(tmp_path, {bad: Spots.empty()})
    assert not (tmp_path.parent / "outside").exists()


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "game" / RESULTS_FILENAME
    write_results(path, "game", random_spots(3))
    before = path.read_bytes()

    def failing_replace(source: Any, destination: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(submission.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_results(path, "game", random_spots(4))
    with pytest.raises(OSError, match="disk full"):
        write_submission(tmp_path / "out", {"game": random_spots(5)}, zip_path=tmp_path / "s.zip")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [RESULTS_FILENAME]
    assert not (tmp_path / "s.zip").exists() and not list((tmp_path / "out").rglob("*.json*"))


def test_nothing_is_written_when_a_game_cannot_be(tmp_path: Path) -> None:
    bad = random_spots(6)
    bad.confidence[5] = np.nan
    with pytest.raises(SubmissionError, match="finite"):
        write_submission(tmp_path / "out", {GAMES[0]: random_spots(7), GAMES[1]: bad}, tmp_path / "s.zip")
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.zip").exists()


def test_reading_follows_the_official_tool(reader: str) -> None:
    entries = [
        {"label": "Goal", "position": "43000", "half": "1", "confidence": "0.95"},
        # Numbers as numbers, an unknown label without confidence, overwrites in file order.
        {"label": "Goal", "position": 43100, "half": 2, "confidence": 0.25},
        {"label": "Drop ball", "position": "1000", "half": "1"},
        {"label": "Drop ball", "position": "2000", "half": "2", "confidence": "x"},
        {"label": "Goal", "position": "43200", "half": "1", "confidence": "-1"},
    ]
    game, spots = read_results(json.dumps({"predictions": entries}).encode(), source="mine.json")
    assert game is None
    assert spots.half.tolist() == [1, 2, 1]
    assert spots.position_ms.tolist() == [43000, 43100, 43200]
    assert spots.class_index.tolist() == [CLASSES.index("Goal")] * 3
    assert spots.confidence.tolist() == [0.95, 0.25, -1.0]
    assert spots.ignored == Counter({"Drop ball": 2})


GOOD_ENTRY = {"label": "Goal", "position": "5000", "half": "1", "confidence": "0.5"}


def with_entry(**changes: Any) -> bytes:
    """A file whose second entry is ``GOOD_ENTRY`` changed (a value None removes the key)."""
    entry = {key: value for key, value in {**GOOD_ENTRY, **changes}.items() if value is not None}
    return json.dumps({"predictions": [GOOD_ENTRY, entry]}).encode()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"UrlLocal": "x"}', "'predictions' list"),
        (b'[{"label": "Goal"}]', "'predictions' list"),
        (b'{"predictions": [7]}', "prediction 0: expected an object"),
        (with_entry(position=None), "prediction 1: missing key 'position'"),
        (with_entry(half=None), "missing key 'half'"),
        (with_entry(confidence=None), "missing key 'confidence'"),
        (with_entry(half="3"), "unknown half '3'"),
        (with_entry(position="5.5"), "position '5.5' is not a whole number"),
        (with_entry(position="-5"), "negative position"),
        (with_entry(position=10**20), "out of range"),
        (with_entry(confidence="high"), "confidence 'high' is not a number"),
        (with_entry(confidence="nan"), "not a finite number"),
        (with_entry(label=["Goal"]), "label"),
    ],
)
def test_malformed_files_raise_errors_naming_the_file(
    document: bytes, message: str, tmp_path: Path, reader: str
) -> None:
    path = tmp_path / RESULTS_FILENAME
    path.write_bytes(document)
    with pytest.raises(SubmissionError, match=message) as error:
        read_results(path)
    assert str(path) in str(error.value)


def test_both_readers_read_numbers_as_python_does(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("msgspec", reason="the optional msgspec reader is not installed")
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.random(3000), rng.random(1000) * 10.0 ** rng.integers(-20, 5, 1000)])
    entries = [
        {
            "label": CLASSES[number % NUM_CLASSES],
            "position": number * 700,
            "half": 1 + number % 2,
            "confidence": value,
        }
        for number, value in enumerate(values.tolist())
    ]
    entries += [{**entry, "confidence": repr(entry["confidence"])} for entry in entries[:500]]
    data = json.dumps({"UrlLocal": "game", "predictions": entries}).encode()
    with monkeypatch.context() as patch:
        patch.setattr(submission.json, "loads", None)  # msgspec alone must read this file
        game, fast = read_results(data)
    monkeypatch.setattr(submission, "_msgspec", None)
    assert read_results(data)[0] == game == "game"
    assert_same_spots(fast, read_results(data)[1])
    np.testing.assert_array_equal(fast.confidence, [float(entry["confidence"]) for entry in entries])


def test_missing_sources_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="not found"):
        read_results(tmp_path / "none.json")
    with pytest.raises(SubmissionError, match="not found"):
        open_predictions(tmp_path / "none")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SubmissionError, match="folder of predictions or a zip"):
        open_predictions(tmp_path / "notes.txt")


@pytest.mark.parametrize("damage", ["cut", "cut, renamed", "bad entry"])
def test_a_damaged_zip_is_called_one(tmp_path: Path, damage: str) -> None:
    zip_path = tmp_path / "submission.zip"
    write_submission(tmp_path / "out", {GAMES[0]: random_spots(1)}, zip_path=zip_path)
    data = zip_path.read_bytes()
    if damage.startswith("cut"):
        zip_path.write_bytes(data[: len(data) // 2])
        if damage == "cut, renamed":  # recognised by its first bytes, whatever its name
            zip_path = zip_path.rename(tmp_path / "submission.bin")
        with pytest.raises(SubmissionError, match="a damaged zip") as error:
            open_predictions(zip_path)
    else:
        # Flip bytes inside the compressed entry: the listing reads, the entry does not.
        middle = len(data) // 3
        zip_path.write_bytes(
            data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
        )
        predictions = open_predictions(zip_path)
        with pytest.raises(SubmissionError, match="a damaged zip") as error:
            predictions[GAMES[0]]
    assert str(zip_path) in str(error.value)


def test_games_under_an_extra_top_folder_are_found(tmp_path: Path) -> None:
    results = {f"run 1/{game}": random_spots(n) for n, game in enumerate(GAMES)}
    write_submission(tmp_path / "out", results, zip_path=tmp_path / "submission.zip")
    hint = misplaced_games(open_predictions(tmp_path / "submission.zip"), list(GAMES))
    assert "2 of them found under the top folder 'run 1/' in the zip" in hint
    assert "zip the game folders themselves" in hint
    hint = misplaced_games(open_predictions(tmp_path / "out"), [GAMES[1], "league/season/other"])
    assert "1 of them found under the folder 'run 1/'" in hint and str(tmp_path / "out" / "run 1") in hint
    assert misplaced_games(open_predictions(tmp_path / "out"), ["league/season/other"]) == ""


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (([1, 3], [0, 0], [0, 0], [0.5, 0.5]), "half"),
        (([1, 2], [0, -1], [0, 0], [0.5, 0.5]), "position_ms"),
        (([1, 2], [0, 0], [0, 17], [0.5, 0.5]), "class_index"),
        (([1, 257], [0, 0], [0, 0], [0.5, 0.5]), "half"),  # would wrap to 1 as int8
        (([1, 2], [0, 0], [0], [0.5, 0.5]), "one length"),
    ],
)
def test_spots_reject_bad_arrays(arrays: tuple[list[float], ...], message: str) -> None:
    with pytest.raises(SubmissionError, match=message):
        Spots(*(np.asarray(values) for values in arrays))


def test_concatenate_keeps_order_and_counts() -> None:
    first, second = random_spots(8, 50), random_spots(9, 70)
    joined = Spots.concatenate([first, Spots.empty(), second])
    assert len(joined) == 120 and len(Spots.concatenate([])) == 0
    assert joined.position_ms.tolist() == first.position_ms.tolist() + second.position_ms.tolist()
