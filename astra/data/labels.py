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
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astra.classes import CLASS_INDEX

LABELS_FILENAME = "Labels-v2.json"


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
    """

    half: np.ndarray
    position_ms: np.ndarray
    class_index: np.ndarray
    visible: np.ndarray
    ignored: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return int(self.half.shape[0])

    def of_half(self, half: int) -> Annotations:
        """The annotations of half 1 or 2 only."""
        keep = self.half == half
        return Annotations(
            self.half[keep], self.position_ms[keep], self.class_index[keep], self.visible[keep], Counter()
        )


def read_labels(path: str | Path) -> Annotations:
    """Read one ``Labels-v2.json``; raises :class:`LabelsError` naming the file on bad input."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise LabelsError(f"{path}: label file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LabelsError(f"{path}: not valid JSON ({error})") from None
    return parse_labels(document, source=str(path))


def parse_labels(document: Any, source: str) -> Annotations:
    """Turn a parsed ``Labels-v2.json`` document into :class:`Annotations`."""
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


def game_time(half: int, position_ms: int) -> str:
    """The ``gameTime`` string of a position: ``"1 - 07:05"``."""
    seconds = int(position_ms) // 1000
    return f"{half} - {seconds // 60:02d}:{seconds % 60:02d}"


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
