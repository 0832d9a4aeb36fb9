"""Reading Labels-v2.json with the conventions of the official SoccerNet tools."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from astra.classes import CLASS_INDEX, CLASSES
from astra.data.labels import (
    LABELS_FILENAME,
    LabelsError,
    _annotations_by_columns,
    _annotations_by_entries,
    game_time,
    parse_labels,
    read_labels,
)


def _entry(game_time_text: str, label: str, position: Any = None, visibility: str | None = "visible") -> dict:
    entry: dict[str, Any] = {"gameTime": game_time_text, "label": label}
    if position is not None:
        entry["position"] = position
    if visibility is not None:
        entry["visibility"] = visibility
    return entry


def test_the_tiny_dataset_labels_are_read_as_written(tiny_dataset) -> None:
    for game in tiny_dataset.games:
        annotations = read_labels(tiny_dataset.root / game.name / LABELS_FILENAME)
        kept = [label for label in game.labels if label["label"] in CLASS_INDEX]
        assert len(annotations) == len(kept)
        assert annotations.half.tolist() == [int(label["gameTime"][0]) for label in kept]
        assert [CLASSES[c] for c in annotations.class_index] == [label["label"] for label in kept]
        assert annotations.visible.tolist() == [label["visibility"] == "visible" for label in kept]
        assert sum(annotations.ignored.values()) == len(game.labels) - len(kept)


def test_dtypes_and_file_order() -> None:
    annotations = parse_labels(
        {"annotations": [_entry("2 - 00:05", "Goal", "5000"), _entry("1 - 01:00", "Foul", "60000")]}, "x"
    )
    assert annotations.half.dtype == np.int8 and annotations.position_ms.dtype == np.int64
    assert annotations.class_index.dtype == np.int16 and annotations.visible.dtype == bool
    assert annotations.half.tolist() == [2, 1] and annotations.position_ms.tolist() == [5000, 60000]


def test_position_falls_back_to_the_game_time() -> None:
    annotations = parse_labels(
        {"annotations": [_entry("2 - 12:34", "Corner"), _entry("1 - 00:07", "Corner", "7900")]}, "x"
    )
    assert annotations.position_ms.tolist() == [(12 * 60 + 34) * 1000, 7900]


def test_visibility_not_shown_only_marks_invisible() -> None:
    annotations = parse_labels(
        {
            "annotations": [
                _entry("1 - 00:01", "Foul", "1000", "not shown"),
                _entry("1 - 00:02", "Foul", "2000", "visible"),
                _entry("1 - 00:03", "Foul", "3000", None),
            ]
        },
        "x",
    )
    assert annotations.visible.tolist() == [False, True, True]


def test_labels_outside_the_classes_are_counted_and_dropped() -> None:
    annotations = parse_labels(
        {
            "annotations": [
                _entry("1 - 00:01", "Drop ball", "1000"),
                _entry("1 - 00:02", "Goal", "2000"),
                _entry("9 - bad", "Drop ball"),  # dropped before its time is read, as the official tools do
                {"gameTime": "1 - 00:04", "position": "4000"},
            ]
        },
        "x",
    )
    assert len(annotations) == 1
    assert annotations.ignored == {"Drop ball": 2, "None": 1}


def test_of_half_keeps_only_that_half() -> None:
    annotations = parse_labels(
        {"annotations": [_entry("1 - 00:01", "Goal", "1000"), _entry("2 - 00:02", "Foul", "2000")]}, "x"
    )
    second = annotations.of_half(2)
    assert len(second) == 1 and second.half.tolist() == [2]
    assert second.class_index.tolist() == [CLASS_INDEX["Foul"]]
    assert len(annotations.of_half(1)) + len(second) == len(annotations)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry("3 - 00:01", "Goal", "1000"), "half 3"),
        (_entry("first half", "Goal", "1000"), "gameTime"),
        (_entry("1 - 00:01", "Goal", "12.5"), "whole milliseconds"),
        (_entry("1 - 00:01", "Goal", "-5"), "negative"),
        (_entry("1 - ab:cd", "Goal"), "gameTime"),
        ("Goal", "expected an object"),
    ],
)
def test_bad_entries_name_the_source_and_the_entry(entry: Any, message: str) -> None:
    with pytest.raises(LabelsError, match=message) as error:
        parse_labels({"annotations": [_entry("1 - 00:00", "Kick-off", "0"), entry]}, "game/Labels-v2.json")
    assert "game/Labels-v2.json: annotation 1" in str(error.value)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(LabelsError, match="not found") as error:
        read_labels(missing)
    assert str(missing) in str(error.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"annotations": [', encoding="utf-8")
    with pytest.raises(LabelsError, match="not valid JSON") as error:
        read_labels(broken)
    assert str(broken) in str(error.value)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"labels": []}), encoding="utf-8")
    with pytest.raises(LabelsError, match="'annotations' list") as error:
        read_labels(wrong)
    assert str(wrong) in str(error.value)


@pytest.mark.parametrize("position_ms", [0, 999, 1000, 59_999, 425_321, 2_999_999])
def test_game_time_round_trips_through_the_parser(position_ms: int) -> None:
    text = game_time(2, position_ms)
    assert text[:4] == "2 - " and len(text) == 9
    parsed = parse_labels({"annotations": [_entry(text, "Goal")]}, "x")
    assert parsed.half.tolist() == [2]
    assert parsed.position_ms.tolist() == [position_ms // 1000 * 1000]


def test_label_files_read_by_columns_as_by_entries(tiny_dataset) -> None:
    # The evaluator's speed rests on the column reader; it must agree with the checked one.
    documents = [
        json.loads((tiny_dataset.root / game.name / LABELS_FILENAME).read_text())
        for game in tiny_dataset.games
    ]
    usual = [documents[1], documents[2]]  # the first game has a label without position
    good = {"gameTime": "2 - 12:34", "label": "Goal", "position": "754000", "visibility": "not shown"}
    usual.append({"annotations": [good, {**good, "label": "Drop ball"}, {**good, "label": "Corner"}]})
    usual.append({"annotations": [{**good, "position": 754000.9}, {**good, "visibility": None}]})
    unusual = [
        documents[0],
        {"annotations": []},
        {"annotations": [good, {**good, "gameTime": "3 - 00:01"}]},
        {"annotations": [good, {**good, "label": "Drop ball", "gameTime": "3 - 00:01"}]},
        {"annotations": [good, {**good, "gameTime": "1-0"}]},
        {"annotations": [good, {**good, "position": "-1"}]},
        {"annotations": [good, {**good, "position": "1.5"}]},
        {"annotations": [good, {"gameTime": "1 - 00:01", "position": "5"}]},
        {"annotations": [good, 5]},
    ]
    for document in usual:
        fast = _annotations_by_columns(document)
        assert fast is not None
        expected = _annotations_by_entries(document, source="labels")
        for name in ("half", "position_ms", "class_index", "visible"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(expected, name), err_msg=name)
            assert getattr(fast, name).dtype == getattr(expected, name).dtype
        assert fast.ignored == expected.ignored
    for document in unusual:
        assert _annotations_by_columns(document) is None


def test_past_end_flags_follow_every_subset() -> None:
    annotations = parse_labels(
        {"annotations": [_entry("1 - 00:01", "Goal", "1000"), _entry("2 - 00:02", "Corner", "2000")]}, "x"
    )
    assert annotations.past_end.tolist() == [False, False]
    assert annotations.within_features() is annotations
    flagged = dataclasses.replace(annotations, past_end=np.array([False, True]))
    assert flagged.of_half(2).past_end.tolist() == [True]
    assert len(flagged.within_features()) == 1 and flagged.within_features().half.tolist() == [1]
    with pytest.raises(ValueError, match=r"past_end must be \[2\]"):
        dataclasses.replace(annotations, past_end=np.array([True]))
