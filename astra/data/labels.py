"""Read ``Labels-v2.json`` into arrays, following the official SoccerNet tools.

The official evaluator (``SoccerNet.Evaluation.ActionSpotting.label2vector``)
fixes the conventions we keep here:

- the half is the first character of ``gameTime`` (``"1 - 00:43"``);
- the time is ``position`` in milliseconds when present, else the
  ``MM:SS`` of ``gameTime``;
- a label outside the 17 classes is ignored (we count it, so that the caller
  can warn once);
- ``visibility == "not shown"`` marks an event that is not visible; anything
  else counts as visible.

This is the one parser of label files: the dataset and the evaluator both read them
here. A well-formed file is read by whole columns (several times faster, which the
evaluator needs); anything unusual is read entry by entry, which names the first
bad entry. Both give the same result on every file the column reader accepts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from astra.classes import CLASS_INDEX
from astra.layout import LABELS_FILENAME as LABELS_FILENAME  # re-exported: the data layer names it here

_msgspec: ModuleType | None
try:  # Optional: parses JSON about twice as fast as the json module.
    import msgspec as _msgspec
except ImportError:
    _msgspec = None

_HALVES: dict[str, int] = {"1": 1, "2": 2}  # the first character of gameTime


class LabelsError(ValueError):
    """A label file that cannot be read as SoccerNet-v2 labels; the message names the file."""


@dataclass(frozen=True)
class Annotations:
    """The annotations of one game, one entry per kept label, in file order.

    Attributes:
        half: ``[N]`` int8, 1 or 2.
        position_ms: ``[N]`` int64, milliseconds from the start of the half.
        class_index: ``[N]`` int16, index into ``astra.classes.CLASSES``.
        visible: ``[N]`` bool, False for ``"not shown"``.
        ignored: labels outside the 17 classes, by name, with their counts.
        past_end: ``[N]`` bool, True for a label at or past the end of its half's features
            (set by ``astra.data.dataset`` when it opens the half; all False by default).
            Such labels are kept for evaluation and left out of training targets.
    """

    half: np.ndarray
    position_ms: np.ndarray
    class_index: np.ndarray
    visible: np.ndarray
    ignored: Counter[str] = field(default_factory=Counter)
    past_end: np.ndarray = None  # type: ignore[assignment]  # None: all False, filled in below

    def __post_init__(self) -> None:
        if self.past_end is None:
            object.__setattr__(self, "past_end", np.zeros(len(self), dtype=bool))
        elif np.shape(self.past_end) != (len(self),):
            raise ValueError(
                f"Annotations.past_end must be [{len(self)}] like the other arrays, "
                f"got shape {np.shape(self.past_end)}"
            )

    def __len__(self) -> int:
        return int(self.half.shape[0])

    def of_half(self, half: int) -> Annotations:
        """The annotations of half 1 or 2 only."""
        return self._subset(self.half == half)

    def of_class(self, class_index: int) -> Annotations:
        """The annotations of one class only."""
        return self._subset(self.class_index == class_index)

    def within_features(self) -> Annotations:
        """The annotations that have a feature row: those not ``past_end`` (training targets)."""
        return self if not self.past_end.any() else self._subset(~self.past_end)

    def _subset(self, keep: np.ndarray) -> Annotations:
        return Annotations(
            self.half[keep],
            self.position_ms[keep],
            self.class_index[keep],
            self.visible[keep],
            Counter(),
            self.past_end[keep],
        )


def read_labels(path: str | Path) -> Annotations:
    """Read one ``Labels-v2.json``; raises :class:`LabelsError` naming the file on bad input."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LabelsError(f"{path}: label file not found") from None
    except IsADirectoryError:
        raise LabelsError(f"{path}: is a folder, expected a label file") from None
    return parse_labels(load_json(data, str(path), LabelsError), source=str(path))


def parse_labels(document: Any, source: str) -> Annotations:
    """Turn a parsed ``Labels-v2.json`` document into :class:`Annotations`."""
    annotations = _annotations_by_columns(document)
    return _annotations_by_entries(document, source) if annotations is None else annotations


def load_json(data: bytes, source: str, error: type[ValueError] = LabelsError) -> Any:
    """Parse JSON bytes (msgspec when installed, else the json module); ``error`` names ``source``.

    The one JSON reader of the SoccerNet files, labels and predictions alike.
    """
    if _msgspec is not None:
        try:
            return _msgspec.json.decode(data)
        except _msgspec.DecodeError:
            pass  # The json module accepts a little more (NaN, huge integers, other encodings).
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{source}: not valid JSON ({problem})") from None


def game_time(half: int, position_ms: int) -> str:
    """The ``gameTime`` string of a position: ``"1 - 07:05"``."""
    seconds = int(position_ms) // 1000
    return f"{half} - {seconds // 60:02d}:{seconds % 60:02d}"


def _annotations_by_columns(document: Any) -> Annotations | None:
    """:func:`parse_labels` by whole columns, for the common well-formed file.

    Several times faster; None for anything unusual (a missing position, an odd
    gameTime, a value of another type), which :func:`_annotations_by_entries` then
    reads and checks.
    """
    entries = document.get("annotations") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        return None
    try:
        labels = [entry["label"] for entry in entries]
        times = [entry["gameTime"] for entry in entries]
        positions = np.array([entry["position"] for entry in entries], dtype=np.int64)
        visibilities = [entry.get("visibility") for entry in entries]
        count = len(labels)
        class_index = np.fromiter(map(CLASS_INDEX.get, labels, repeat(-1)), dtype=np.int16, count=count)
        if not all(type(time) is str and len(time) >= 5 for time in times):
            return None
        half = np.fromiter(map(_HALVES.get, [time[0] for time in times]), dtype=np.int8, count=count)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        return None
    if positions.min() < 0:
        return None
    visible = np.array([visibility != "not shown" for visibility in visibilities], dtype=bool)
    kept = class_index >= 0
    ignored = Counter(str(label) for label in labels if label not in CLASS_INDEX)
    return Annotations(half[kept], positions[kept], class_index[kept], visible[kept], ignored)


def _annotations_by_entries(document: Any, source: str) -> Annotations:
    """Entry by entry, raising :class:`LabelsError` naming the first bad entry."""
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list):
        raise LabelsError(f"{source}: expected an object with an 'annotations' list")
    halves: list[int] = []
    positions: list[int] = []
    classes: list[int] = []
    visible: list[bool] = []
    ignored: Counter[str] = Counter()
    for number, annotation in enumerate(document["annotations"]):
        where = f"{source}: annotation {number}"
        if not isinstance(annotation, dict):
            raise LabelsError(f"{where}: expected an object, got {annotation!r}")
        label = annotation.get("label")
        if label not in CLASS_INDEX:
            ignored[str(label)] += 1
            continue
        half, position_ms = _half_and_position(annotation, where)
        halves.append(half)
        positions.append(position_ms)
        classes.append(CLASS_INDEX[label])
        visible.append(annotation.get("visibility") != "not shown")
    return Annotations(
        half=np.asarray(halves, dtype=np.int8),
        position_ms=np.asarray(positions, dtype=np.int64),
        class_index=np.asarray(classes, dtype=np.int16),
        visible=np.asarray(visible, dtype=bool),
        ignored=ignored,
    )


def _half_and_position(annotation: dict[str, Any], where: str) -> tuple[int, int]:
    time = annotation.get("gameTime")
    if not isinstance(time, str) or len(time) < 5 or not time[0].isdigit():
        raise LabelsError(f"{where}: gameTime {time!r} is not of the form '<half> - MM:SS'")
    half = int(time[0])
    if half not in (1, 2):
        raise LabelsError(
            f"{where}: gameTime {time!r} names half {half}; SoccerNet games have halves 1 and 2"
        )
    if "position" in annotation:
        try:
            position_ms = int(annotation["position"])
        except (TypeError, ValueError):
            raise LabelsError(
                f"{where}: position {annotation['position']!r} is not whole milliseconds"
            ) from None
    else:
        # As the official tools: the second-precision gameTime stands in for a missing position.
        try:
            position_ms = 1000 * (int(time[-2:]) + 60 * int(time[-5:-3]))
        except ValueError:
            raise LabelsError(f"{where}: gameTime {time!r} is not of the form '<half> - MM:SS'") from None
    if position_ms < 0:
        raise LabelsError(f"{where}: negative position {position_ms} ms")
    return half, position_ms
