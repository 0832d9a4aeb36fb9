"""The average-mAP's behaviour: invariants, the in-memory APIs and their agreement, bad input.

Exactness against the official evaluator is in test_average_map_official.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from astra.classes import CLASSES, NUM_CLASSES
from astra.data.labels import Annotations, read_labels
from astra.evaluation import (
    METRICS,
    AverageMAP,
    EvaluationError,
    KeyedLabels,
    evaluate_dense,
    evaluate_files,
    evaluate_spots,
)
from astra.evaluation.average_map import VECTOR_FRAMES, _threshold_bins
from astra.submission import Spots, open_predictions, write_submission

HALF_MS = 45 * 60 * 1000


def spaced_events(rng: np.random.Generator, gap_seconds: float, unshown_classes: int = 13) -> Annotations:
    """Events of every class in both halves, events of one class at least ``gap_seconds`` apart.

    The first ``unshown_classes`` classes have some "not shown" events.
    """
    halves, positions, classes, visible = [], [], [], []
    for class_index in range(NUM_CLASSES):
        for half in (1, 2):
            count = int(rng.integers(1, 6))
            # Slots 1 .. n-2 of the half cut in gaps: never within a gap of either end.
            slots = 1 + rng.choice(int(HALF_MS // (gap_seconds * 1000)) - 2, size=count, replace=False)
            positions += (slots * gap_seconds * 1000 + rng.integers(0, 500, count)).astype(np.int64).tolist()
            halves += [half] * count
            classes += [class_index] * count
            hidden = rng.random(count) < 0.4
            if class_index < unshown_classes:
                hidden[0] = True
            else:
                hidden[:] = False
            visible += (~hidden).tolist()
    return Annotations(np.array(halves), np.array(positions), np.array(classes), np.array(visible))


def spots_at(labels: Annotations, shift_ms: int, rng: np.random.Generator) -> Spots:
    """One prediction per event, ``shift_ms`` later, random confidences."""
    return Spots(
        labels.half,
        labels.position_ms + shift_ms,
        labels.class_index,
        rng.uniform(0.05, 1.0, len(labels)),
    )


def read_case(case: Any) -> tuple[dict[str, Annotations], dict[str, Spots]]:
    labels = {game: read_labels(case.labels_root / game / "Labels-v2.json") for game in case.games}
    available = open_predictions(case.predictions_root)
    return labels, {game: available[game] for game in case.games}


def test_perfect_predictions_score_one() -> None:
    rng = np.random.default_rng(0)
    labels = {f"game {number}": spaced_events(rng, gap_seconds=10) for number in range(3)}
    # Exact positions and any confidence up to 1 (the last threshold is 1.0 itself).
    predictions = {game: spots_at(events, 0, rng) for game, events in labels.items()}
    for metric in ("tight", "loose"):
        result = evaluate_spots(labels, {g: _with_confidence(s, 1.0) for g, s in predictions.items()}, metric)
        assert result.a_mAP == 1.0 and result.a_mAP_visible == 1.0
        assert result.a_mAP_per_class == (1.0,) * NUM_CLASSES
        # 13 classes have not-shown events: the official 17 / 13 makes their mean exactly 1.
        assert result.a_mAP_unshown == pytest.approx(1.0, abs=1e-12)
        assert result.a_mAP_per_class_unshown == (1.0,) * 13 + (0.0,) * 4


def test_predictions_shifted_past_the_tolerance_score_zero() -> None:
    rng = np.random.default_rng(1)
    labels = {f"game {number}": spaced_events(rng, gap_seconds=200) for number in range(2)}
    # A prediction matches within delta / 2: at most 2.5 s (tight) or 30 s (loose).
    for metric, shift_ms in (("tight", 3000), ("loose", 31000)):
        for sign in (1, -1):
            predictions = {g: spots_at(events, sign * shift_ms, rng) for g, events in labels.items()}
            predictions = {g: _clipped(s) for g, s in predictions.items()}
            result = evaluate_spots(labels, predictions, metric)
            assert result.a_mAP == 0.0 and result.a_mAP_visible == 0.0 and result.a_mAP_unshown == 0.0
    # And just inside the tolerance, everything matches.
    predictions = {g: _with_confidence(spots_at(e, 2499, rng), 1.0) for g, e in labels.items()}
    assert evaluate_spots(labels, predictions, "at5").a_mAP == 1.0


def test_game_order_does_not_matter(random_case: Callable[..., Any]) -> None:
    labels, predictions = read_case(random_case(seed=3, num_games=4))
    forward = evaluate_spots(labels, predictions, "loose")
    backward = evaluate_spots(dict(reversed(labels.items())), dict(reversed(predictions.items())), "loose")
    assert forward.to_dict() == backward.to_dict()
    assert forward.mAP_per_delta == backward.mAP_per_delta


def test_a_wider_tolerance_never_scores_lower_for_events_apart() -> None:
    """With events of one class more than two tolerances apart, no event competes for a
    prediction, so a wider tolerance can only add matches. (Competing events can lose one:
    see test_average_map_official.py.)"""
    rng = np.random.default_rng(2)
    labels = {f"game {number}": spaced_events(rng, gap_seconds=130) for number in range(3)}
    predictions = {}
    for game, events in labels.items():
        offsets = rng.normal(0, 12_000, len(events)).astype(np.int64)
        noise = Spots(
            rng.integers(1, 3, 300), rng.integers(0, HALF_MS, 300), rng.integers(0, 17, 300), rng.random(300)
        )
        predictions[game] = Spots.concatenate([_clipped(spots_at(events, 0, rng), offsets), noise])
    deltas = sorted(set(METRICS["tight"] + METRICS["loose"]) | {0.5, 7.5})
    result = evaluate_spots(labels, predictions, deltas)
    for per_delta in (result.mAP_per_delta, result.mAP_per_delta_visible, result.mAP_per_delta_unshown):
        assert all(a <= b for a, b in itertools.pairwise(per_delta))
        assert per_delta[0] < per_delta[-1]
    tight, loose = (evaluate_spots(labels, predictions, metric).a_mAP for metric in ("tight", "loose"))
    assert tight <= loose


def test_explicit_tolerances_equal_the_named_metric(random_case: Callable[..., Any]) -> None:
    labels, predictions = read_case(random_case(seed=4, num_games=2))
    named = evaluate_spots(labels, predictions, "tight")
    assert evaluate_spots(labels, predictions, [1, 2, 3, 4, 5]).to_dict() == named.to_dict()
    assert named.deltas_seconds == (1, 2, 3, 4, 5)
    # The trapezoid mean over the per-delta values, as the official average_mAP.
    trapezoid = np.mean([(a + b) / 2 for a, b in itertools.pairwise(named.mAP_per_delta)])
    assert named.a_mAP == pytest.approx(trapezoid, abs=1e-12)


def test_dense_detections_score_as_the_same_predictions_in_frame_order() -> None:
    rng = np.random.default_rng(5)
    labels = {f"game {number}": spaced_events(rng, gap_seconds=6) for number in range(2)}
    # Half 2 of game 1 is longer than the official 120 minutes: its tail folds onto the last frame.
    lengths = {"game 0": (5400, 5600), "game 1": (5500, VECTOR_FRAMES + 30)}
    detections = {}
    spots = {}
    for game, (first, second) in lengths.items():
        halves = []
        parts = []
        for half, num_frames in ((1, first), (2, second)):
            shape = (num_frames, NUM_CLASSES)
            scores = np.where(rng.random(shape) < 0.03, rng.random(shape), -1.0)
            scores[rng.random(shape) < 0.001] = np.nan  # NaN is no detection either
            scores[-40:] = np.where(rng.random((40, NUM_CLASSES)) < 0.5, rng.random((40, NUM_CLASSES)), -0.5)
            scores = np.round(scores, 2).astype(np.float32)  # ties, and float32 as models give
            halves.append(scores)
            # The file a writer would produce, frame by frame: every entry, negatives included.
            frame, class_index = np.nonzero(~np.isnan(scores))
            parts.append(Spots.from_frames(half, frame, class_index, scores[frame, class_index]))
        detections[game] = tuple(halves)
        spots[game] = Spots.concatenate(parts)
    for metric in ("tight", "loose"):
        dense = evaluate_dense(labels, detections, metric)
        assert dense.to_dict() == evaluate_spots(labels, spots, metric).to_dict()
        assert 0 < dense.a_mAP < 1


def test_a_game_without_predictions_is_an_error_unless_allowed(
    random_case: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    labels, predictions = read_case(random_case(seed=5, num_games=3))
    missing = next(iter(labels))
    del predictions[missing]
    with pytest.raises(EvaluationError, match=missing):
        evaluate_spots(labels, predictions)
    with caplog.at_level(logging.WARNING, logger="astra.evaluation.average_map"):
        allowed = evaluate_spots(labels, predictions, allow_missing=True)
    assert missing in caplog.text
    assert allowed.to_dict() == evaluate_spots(labels, {**predictions, missing: Spots.empty()}).to_dict()
    # Predictions of games without labels are not used.
    extra = {**predictions, missing: Spots.empty(), "another game": predictions[next(iter(predictions))]}
    assert evaluate_spots(labels, extra).to_dict() == allowed.to_dict()


def test_files_default_to_every_labelled_game_and_follow_splits(random_case: Callable[..., Any]) -> None:
    case = random_case(seed=6, num_games=4)
    labels, predictions = read_case(case)
    every_game = evaluate_files(case.labels_root, case.predictions_root, metric="loose")
    assert every_game.num_games == 4
    assert every_game.to_dict() == evaluate_spots(labels, predictions, "loose").to_dict()
    chosen = [case.games[3], case.games[1]]
    (case.labels_root / "splits.json").write_text(json.dumps({"test": chosen, "train": case.games[:1]}))
    by_split = evaluate_files(case.labels_root, case.predictions_root, split="test", metric="loose")
    by_games = evaluate_files(case.labels_root, case.predictions_root, games=chosen, metric="loose")
    only_chosen = evaluate_spots({g: labels[g] for g in chosen}, predictions, "loose")
    assert by_split.to_dict() == by_games.to_dict() == only_chosen.to_dict()
    assert by_split.num_games == 2


def test_files_from_a_zip_score_as_from_the_folder(random_case: Callable[..., Any], tmp_path: Path) -> None:
    case = random_case(seed=9, num_games=3)
    _, predictions = read_case(case)
    write_submission(tmp_path / "copy", predictions, zip_path=tmp_path / "submission.zip")
    from_zip = evaluate_files(case.labels_root, tmp_path / "submission.zip", metric="tight")
    from_folder = evaluate_files(case.labels_root, case.predictions_root, metric="tight")
    assert from_zip.to_dict() == from_folder.to_dict()


def test_reading_in_several_processes_changes_nothing(random_case: Callable[..., Any]) -> None:
    case = random_case(seed=12, num_games=8)
    one = evaluate_files(case.labels_root, case.predictions_root, metric="tight", workers=1)
    assert evaluate_files(case.labels_root, case.predictions_root, metric="tight", workers=2) == one
    # An error met in another process still names the file.
    path = case.predictions_root / case.games[1] / "results_spotting.json"
    path.write_text(path.read_text()[:-10])
    with pytest.raises(ValueError, match=re.escape(f"{path}: not valid JSON")):
        evaluate_files(case.labels_root, case.predictions_root, workers=2)


def test_thresholds_are_binned_exactly_as_by_binary_search() -> None:
    thresholds = np.linspace(0, 1, 200)
    scores = np.concatenate(
        [
            thresholds,
            np.nextafter(thresholds, -np.inf),
            np.nextafter(thresholds, np.inf),
            np.arange(200) / 199,
            [0.0, -0.0, 1.0, 1.5, 2.0, 1e300, np.inf],
            np.random.default_rng(0).random(10_000),
        ]
    )
    scores = scores[scores >= 0]
    np.testing.assert_array_equal(_threshold_bins(scores), np.searchsorted(thresholds, scores, side="right"))


def test_summary_lists_every_class_in_percent(random_case: Callable[..., Any]) -> None:
    labels, predictions = read_case(random_case(seed=10, num_games=2))
    result = evaluate_spots(labels, predictions, "tight")
    summary = result.summary()
    for name in CLASSES:
        assert name in summary
    assert f"{100 * result.a_mAP:.2f}" in summary.splitlines()[-1]
    assert isinstance(result, AverageMAP) and set(result.to_dict()) == {
        "a_mAP",
        "a_mAP_per_class",
        "a_mAP_visible",
        "a_mAP_per_class_visible",
        "a_mAP_unshown",
        "a_mAP_per_class_unshown",
    }


@pytest.mark.parametrize("order", ["key", "shuffled"])
def test_keyed_labels_score_arrays_as_the_same_spots(order: str) -> None:
    rng = np.random.default_rng(8)
    games = [f"game {number}" for number in range(3)]
    labels = {game: spaced_events(rng, gap_seconds=5) for game in games}
    count = 6000
    segment = rng.integers(0, 6, count)
    class_index = rng.integers(0, NUM_CLASSES, count)
    frame = rng.integers(0, 5600, count)
    frame[:30] = VECTOR_FRAMES + rng.integers(0, 20, 30)  # past 120 minutes: folds onto the last frame
    scores = np.round(rng.random(count), 2)  # ties
    scores[rng.random(count) < 0.05] = -1.0  # hides what it overwrites, is no detection itself
    if order == "key":  # each (segment, class, frame) once, in key order: no sort needed
        first = np.unique(np.stack([segment, class_index, np.minimum(frame, VECTOR_FRAMES - 1)]), axis=1,
                          return_index=True)[1]  # fmt: skip
        segment, class_index, frame, scores = segment[first], class_index[first], frame[first], scores[first]
    # The same detections as each game's spots, in the same order (a later entry wins).
    spots = {}
    for number, game in enumerate(games):
        mine = segment // 2 == number
        spots[game] = Spots.from_frames(segment[mine] % 2 + 1, frame[mine], class_index[mine], scores[mine])
    for metric in ("tight", "loose"):
        keyed = KeyedLabels(labels, metric).evaluate(segment, class_index, frame, scores)
        assert keyed.to_dict() == evaluate_spots(labels, spots, metric).to_dict()
        assert 0 < keyed.a_mAP < 1


def test_keyed_labels_name_what_is_wrong() -> None:
    keyed = KeyedLabels({"g": _one_event()})
    one = np.zeros(1, np.int64)
    with pytest.raises(EvaluationError, match="segment 2, class 0, frame 0: segments are 0 to 1"):
        keyed.evaluate(one + 2, one, one, one.astype(float))
    with pytest.raises(EvaluationError, match="class 17"):
        keyed.evaluate(one, one + 17, one, one.astype(float))
    with pytest.raises(EvaluationError, match="one length"):
        keyed.evaluate(one, one, np.zeros(2, np.int64), one.astype(float))
    with pytest.raises(EvaluationError, match="no games"):
        KeyedLabels({})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda labels: evaluate_spots(labels, {}, "medium"), "unknown metric 'medium'"),
        (lambda labels: evaluate_spots(labels, {}, [1, -2]), "seconds >= 0"),
        (lambda labels: evaluate_spots(labels, {}, []), "non-empty"),
        (lambda labels: evaluate_spots({}, {}), "no games"),
        (lambda labels: evaluate_dense(labels, {"g": (np.zeros((9, 17)),)}), "2 halves"),
        (lambda labels: evaluate_dense(labels, {"g": (np.zeros((9, 16)),) * 2}), r"\[frames, 17\]"),
        (lambda labels: evaluate_spots({"g": _one_event(half=3)}, {"g": Spots.empty()}), "'g': half 3"),
        (lambda labels: evaluate_spots({"g": _one_event(class_index=17)}, {"g": Spots.empty()}), "class 17"),
    ],
)
def test_bad_arguments_raise_a_clear_error(
    call: Callable[[dict[str, Annotations]], Any], message: str
) -> None:
    labels = {"g": spaced_events(np.random.default_rng(0), gap_seconds=100)}
    with pytest.raises(EvaluationError, match=message):
        call(labels)


def test_bad_folders_raise_a_clear_error(random_case: Callable[..., Any], tmp_path: Path) -> None:
    case = random_case(seed=11, num_games=2)
    with pytest.raises(EvaluationError, match=r"no Labels-v2\.json"):
        evaluate_files(tmp_path, case.predictions_root)
    with pytest.raises(ValueError, match="not found"):
        evaluate_files(case.labels_root, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not found"):
        evaluate_files(case.labels_root, case.predictions_root, games=["no/such game"])
    with pytest.raises(EvaluationError, match="not both"):
        evaluate_files(case.labels_root, case.predictions_root, games=list(case.games), split="test")


def _one_event(half: int = 1, class_index: int = 0) -> Annotations:
    return Annotations(np.array([half]), np.array([1000]), np.array([class_index]), np.array([True]))


def _with_confidence(spots: Spots, confidence: float) -> Spots:
    return Spots(spots.half, spots.position_ms, spots.class_index, np.full(len(spots), confidence))


def _clipped(spots: Spots, offsets_ms: np.ndarray | int = 0) -> Spots:
    """``spots`` moved by ``offsets_ms``, kept within the half (no negative positions)."""
    positions = np.clip(spots.position_ms + offsets_ms, 0, HALF_MS)
    return Spots(spots.half, positions, spots.class_index, spots.confidence)
