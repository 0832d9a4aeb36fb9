"""Random SoccerNet-v2 label and prediction files full of the official evaluator's corner cases.

Fixtures:

- ``random_case(seed, num_games=4)``: writes a case under a fresh temporary folder and
  returns a :class:`Case`;
- ``official``: ``official(labels_root, predictions_root, metric)`` runs the official
  evaluator (pip package ``soccernet``); tests that use it skip when it is not installed.

``write_random_case(root, seed)`` writes ``root/labels/<game>/Labels-v2.json`` and
``root/predictions/<game>/results_spotting.json`` for a few games with short halves.
Every case holds, besides random events and predictions:

- events: "not shown" ones, two without ``position`` in the first game (the gameTime
  stands in), labels outside the 17 classes, two events on one frame and class (the
  later one wins), one at 0 ms, one past 120 minutes (clamped to the last frame),
  clusters of one class closer than the tolerances, classes without any event;
- predictions: many on one frame and class (a later one overwrites, a negative one too),
  past 120 minutes, tied scores, negative confidences, confidences of exactly 0, of 1 and
  above 1, confidences as JSON numbers and as strings, labels outside the 17 classes,
  predictions of a class that has no event, and a half without predictions.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astra.classes import CLASSES

# Classes that get most events, so that events of one class fall within a tolerance of each other.
BUSY_CLASSES = ("Ball out of play", "Throw-in", "Foul")
# Predicted but never labelled in the random cases.
UNLABELLED_CLASS = "Yellow->red card"
PAST_120_MINUTES_MS = 120 * 60 * 1000


@dataclass(frozen=True)
class Case:
    labels_root: Path
    predictions_root: Path
    games: tuple[str, ...]


@pytest.fixture
def random_case(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Case]:
    """``random_case(seed, num_games=4)``: a random case in a fresh temporary folder."""

    def make(seed: int, num_games: int = 4) -> Case:
        return write_random_case(tmp_path_factory.mktemp(f"case{seed}"), seed, num_games)

    return make


@pytest.fixture
def official() -> Callable[[Path, Path, str], dict[str, Any]]:
    """``official(labels_root, predictions_root, metric)``; skips the test without ``soccernet``."""
    pytest.importorskip("SoccerNet.Evaluation.ActionSpotting", reason="needs the soccernet package")
    return official_results


def write_random_case(root: Path, seed: int, num_games: int = 4) -> Case:
    """Write a random case under ``root`` (see the module docstring)."""
    rng = random.Random(seed)
    games = []
    for number in range(num_games):
        game = f"league_{seed}/2016-2017/2017-01-{number + 1:02d} - 20-00 Home {number} 1 - 0 Away"
        annotations, predictions = _random_game(rng, first_game=number == 0)
        labels = {"UrlLocal": game + "/", "annotations": annotations}
        _write_json(root / "labels" / game / "Labels-v2.json", labels)
        results = {"UrlLocal": game, "predictions": predictions}
        _write_json(root / "predictions" / game / "results_spotting.json", results)
        games.append(game)
    return Case(root / "labels", root / "predictions", tuple(games))


def official_results(labels_root: Path, predictions_root: Path, metric: str) -> dict[str, Any]:
    """The official evaluator's result on every game under ``labels_root``."""
    from SoccerNet.Evaluation import ActionSpotting as action_spotting
    from SoccerNet.Evaluation.utils import EVENT_DICTIONARY_V2

    # dataset=None: take the games from the label files found under labels_root, which
    # needs the class dictionary given explicitly. Its tqdm bars go to stderr: mute them.
    with contextlib.redirect_stderr(io.StringIO()):
        return action_spotting.evaluate(
            str(labels_root),
            str(predictions_root),
            dataset=None,
            version=2,
            metric=metric,
            EVENT_DICTIONARY=EVENT_DICTIONARY_V2,
        )


def _random_game(rng: random.Random, first_game: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    annotations: list[dict[str, Any]] = []
    predicted: list[tuple[int, int, str]] = []  # (half, position_ms, label)
    for half in (1, 2):
        length_ms = rng.randint(90_000, 420_000)
        positions = [rng.randrange(length_ms) for _ in range(rng.randint(3, 30))]
        # Corner cases of every half: the first frame, the same frame twice, past 120 minutes.
        positions += [0, PAST_120_MINUTES_MS + rng.randrange(600_000)]
        for position_ms in positions:
            busy = rng.random() < 0.7
            label = rng.choice(BUSY_CLASSES) if busy else rng.choice(CLASSES[:16])
            annotations.append(_annotation(rng, half, position_ms, label))
            if rng.random() < 0.1:
                # Another event of that class on that frame: the later one wins.
                again = position_ms + rng.randrange(500 - position_ms % 500)
                annotations.append(_annotation(rng, half, again, label))
            for _ in range(rng.randint(0, 4)):
                offset_ms = rng.randint(-12_000, 12_000)
                predicted.append((half, max(0, position_ms + offset_ms), label))
        annotations.append(_annotation(rng, half, rng.randrange(length_ms), "Drop ball"))
        if first_game and half == 2:
            predicted = [entry for entry in predicted if entry[0] == 1]
            continue  # a half without predictions
        for _ in range(rng.randint(5, 40)):
            label = rng.choice(BUSY_CLASSES) if rng.random() < 0.5 else rng.choice(CLASSES)
            predicted.append((half, rng.randrange(length_ms), label))
        predicted.append((half, rng.randrange(length_ms), UNLABELLED_CLASS))
        predicted.append((half, PAST_120_MINUTES_MS + rng.randrange(10**7), rng.choice(BUSY_CLASSES)))
        predicted.append((half, rng.randrange(length_ms), "Kick off"))  # not one of the 17
    if first_game:
        # Labels without position: the gameTime (second precision) stands in.
        for annotation in rng.sample(annotations, k=2):
            annotation.pop("position")
    rng.shuffle(predicted)
    predictions = []
    for half, position_ms, label in predicted:
        predictions.append(_prediction(half, position_ms, label, _confidence(rng), rng))
        if rng.random() < 0.08:
            # Same frame and class again: this one overwrites, whatever its confidence.
            again = position_ms + rng.randrange(500 - position_ms % 500)
            confidence = rng.choice([-0.5, 0.0, 0.5, rng.random()])
            predictions.append(_prediction(half, again, label, confidence, rng))
    return annotations, predictions


def _annotation(rng: random.Random, half: int, position_ms: int, label: str) -> dict[str, Any]:
    seconds = position_ms // 1000
    return {
        "gameTime": f"{half} - {seconds // 60:02d}:{seconds % 60:02d}",
        "label": label,
        "position": str(position_ms),
        "team": rng.choice(["home", "away", "not applicable"]),
        "visibility": "not shown" if rng.random() < 0.25 else "visible",
    }


def _prediction(
    half: int, position_ms: int, label: str, confidence: float, rng: random.Random
) -> dict[str, Any]:
    seconds = position_ms // 1000
    return {
        "gameTime": f"{half} - {seconds // 60}:{seconds % 60:02d}",
        "label": label,
        "position": str(position_ms),
        "half": str(half),
        # The official tool takes strings and numbers alike.
        "confidence": str(confidence) if rng.random() < 0.8 else confidence,
    }


def _confidence(rng: random.Random) -> float:
    draw = rng.random()
    if draw < 0.05:
        return -rng.random()  # no prediction
    if draw < 0.10:
        return 0.0
    if draw < 0.13:
        return 1.0
    if draw < 0.18:
        return 1 + rng.random()
    if draw < 0.50:
        return round(rng.random(), 1)  # ties
    return rng.random()


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
