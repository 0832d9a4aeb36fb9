"""The SoccerNet-v2 average-mAP of action spotting: the official values, computed fast.

The reference is ``SoccerNet.Evaluation.ActionSpotting`` of the ``soccernet`` package
(0.2.0). We return its six values exactly (tests compare to 1e-9) and keep every one of
its conventions:

- Each half becomes a 120-min vector at 2 frames per second (14,400 frames).
  ``frame = int(2 * position_ms / 1000)``, clamped to the last frame. On one frame and
  class a later label or prediction overwrites an earlier one, a negative confidence
  included (it then hides the earlier prediction). Labels outside the 17 classes are
  ignored; "not shown" labels are -1. Predictions are the entries >= 0.
- Per tolerance ``delta`` (seconds * 2 frames), class and half, ground-truth events are
  taken in time order; each takes the highest-scoring prediction not yet taken within
  ``|frame offset| <= delta / 2``; on equal scores the first in frame order (the
  official loop compares with a strict ``>``).
- Each prediction also gets the visibility of its closest event of its class in its
  half: event ``i`` owns the frames ``[(e[i-1] + e[i]) // 2, (e[i] + e[i+1]) // 2)``,
  the first one from frame 0 and the last one to the end; with no event of that class
  in the half, the prediction counts as "not shown".
- Over 200 thresholds ``linspace(0, 1, 200)``: precision and recall of the predictions
  with a score >= threshold, over all games, with ``nan_to_num`` (0 / 0 -> 0).
  Visible / not shown use the predictions whose closest event is visible / not shown
  and the events of that visibility.
- AP per class is the 11-point interpolated one (max precision at recall >= 0, 0.1, ..,
  1; 0 when no point reaches it); mAP is the mean over all 17 classes (a class without
  events scores 0).
- The average-mAP is the trapezoid mean of mAP over the deltas; the not-shown one is
  then multiplied by 17 / 13 (13 classes have not-shown events). With one delta there
  is no average and no 17 / 13 factor.

How we are faster: instead of dense ``[14400, 17]`` vectors and a Python loop over
events and predictions, every (game, half, class) becomes a block of one sorted integer
key line, ``key = ((2 * game + half - 1) * 17 + class) * stride + frame``, with a
stride wide enough that no tolerance window reaches into the next block. Events of one
class interact only when they are at most ``delta`` frames apart, so they fall into
clusters. The first event of a cluster finds nothing taken: it takes the best prediction
of its window, a range minimum (from a sparse table) for all tolerances and events at
once. The later events of clusters go rank by rank (the second event of every cluster
at once, then the third, ...), each rank a windowed argmax over disjoint windows. Only
the predictions within the widest tolerance of some event take part in the matching,
and the windows of all tolerances come from one binary search (the widest) and the
offsets inside it. The 200-threshold curves are histograms of score bins with a
cumulative sum. Several metrics (``evaluate_*_metrics``) share everything but the
matching, and tolerances of equal radius in frames share that too. The sums and
divisions that produce the returned values are those of the official code, in its
order, so the values agree to the last bit in our tests.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astra.classes import CLASSES, FRAMES_PER_SECOND, NUM_CLASSES
from astra.data.labels import LABELS_FILENAME, Annotations, LabelsError, read_labels
from astra.data.splits import games_of_split
from astra.submission import Spots, misplaced_games, open_predictions

logger = logging.getLogger(__name__)

# Tolerances in seconds, by the official metric names.
METRICS: dict[str, tuple[float, ...]] = {
    "tight": (1, 2, 3, 4, 5),
    "loose": (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60),
    "at1": (1,),
    "at2": (2,),
    "at3": (3,),
    "at4": (4,),
    "at5": (5,),
}
# The official per-half vectors are 120 minutes long; later positions clamp to the last frame.
VECTOR_FRAMES: int = 120 * 60 * FRAMES_PER_SECOND
NUM_THRESHOLDS: int = 200
# Classes with not-shown events in SoccerNet-v2: the official not-shown a-mAP is rescaled by 17 / 13.
NUM_CLASSES_WITH_UNSHOWN: int = 13


class EvaluationError(ValueError):
    """Inputs that cannot be scored (missing predictions, bad tolerances, no games); the message says why."""


@dataclass(frozen=True)
class AverageMAP:
    """The six official values (fractions) and what they are made of.

    Attributes:
        deltas_seconds: the tolerances, in seconds.
        a_mAP, a_mAP_visible, a_mAP_unshown: average-mAP over all events, visible ones,
            not-shown ones (the latter times 17 / 13 when there are several deltas).
        a_mAP_per_class, a_mAP_per_class_visible, a_mAP_per_class_unshown: ``[17]`` each.
        mAP_per_delta, mAP_per_delta_visible, mAP_per_delta_unshown: ``[D]`` mAP at each delta.
        num_events_visible, num_events_unshown: ``[17]`` events scored per class (after the
            official overwrite of events on one frame and class).
        num_games: games scored.
    """

    deltas_seconds: tuple[float, ...]
    a_mAP: float
    a_mAP_per_class: tuple[float, ...]
    a_mAP_visible: float
    a_mAP_per_class_visible: tuple[float, ...]
    a_mAP_unshown: float
    a_mAP_per_class_unshown: tuple[float, ...]
    mAP_per_delta: tuple[float, ...]
    mAP_per_delta_visible: tuple[float, ...]
    mAP_per_delta_unshown: tuple[float, ...]
    num_events_visible: tuple[int, ...]
    num_events_unshown: tuple[int, ...]
    num_games: int

    def to_dict(self) -> dict[str, float | list[float]]:
        """The official evaluator's result: its six keys, per-class values as lists."""
        return {
            "a_mAP": self.a_mAP,
            "a_mAP_per_class": list(self.a_mAP_per_class),
            "a_mAP_visible": self.a_mAP_visible,
            "a_mAP_per_class_visible": list(self.a_mAP_per_class_visible),
            "a_mAP_unshown": self.a_mAP_unshown,
            "a_mAP_per_class_unshown": list(self.a_mAP_per_class_unshown),
        }

    def summary(self) -> str:
        """A table: per class the events and a-mAP (all, visible, not shown), in percent."""
        deltas = ", ".join(f"{delta:g}" for delta in self.deltas_seconds)
        name_width = max(len(name) for name in CLASSES)
        lines = [
            f"Average-mAP over {self.num_games} games, tolerances {deltas} s (values in %)",
            f"{'class':<{name_width}}  {'visible':>7}  {'not shown':>9}  {'a-mAP':>6}  {'visible':>7}"
            f"  {'not shown':>9}",
        ]
        for index, name in enumerate(CLASSES):
            lines.append(
                f"{name:<{name_width}}  {self.num_events_visible[index]:>7d}  "
                f"{self.num_events_unshown[index]:>9d}  {100 * self.a_mAP_per_class[index]:>6.2f}  "
                f"{100 * self.a_mAP_per_class_visible[index]:>7.2f}  "
                f"{100 * self.a_mAP_per_class_unshown[index]:>9.2f}"
            )
        lines.append(
            f"{'all':<{name_width}}  {sum(self.num_events_visible):>7d}  {sum(self.num_events_unshown):>9d}  "
            f"{100 * self.a_mAP:>6.2f}  {100 * self.a_mAP_visible:>7.2f}  {100 * self.a_mAP_unshown:>9.2f}"
        )
        return "\n".join(lines)


def evaluate_spots(
    labels: Mapping[str, Annotations],
    predictions: Mapping[str, Spots],
    metric: str | Sequence[float] = "tight",
    *,
    allow_missing: bool = False,
) -> AverageMAP:
    """Score the predictions of every game of ``labels`` (by game name).

    ``metric``: "tight" (1..5 s), "loose" (5..60 s), "at1".."at5", or tolerances in
    seconds. A game without predictions is an error unless ``allow_missing`` (then it
    scores as no predictions). Predictions of games not in ``labels`` are not used.
    """
    return evaluate_spots_metrics(labels, predictions, [metric], allow_missing=allow_missing)[0]


def evaluate_spots_metrics(
    labels: Mapping[str, Annotations],
    predictions: Mapping[str, Spots],
    metrics: Sequence[str | Sequence[float]],
    *,
    allow_missing: bool = False,
) -> list[AverageMAP]:
    """:func:`evaluate_spots` for several metrics at once: one result per metric, in order.

    Each result equals that of :func:`evaluate_spots` with that metric, to the last bit;
    the work the metrics share (keys, visibilities, the threshold histograms, the
    matching at a tolerance that two metrics both have) is done once.
    """
    deltas = _deltas_of_metrics(metrics)
    stride = _stride(tuple(delta for metric_deltas in deltas for delta in metric_deltas))
    games = list(labels)
    missing = [game for game in games if game not in predictions]
    _check_missing(missing, allow_missing)
    spots = [predictions[game] if game in predictions else Spots.empty() for game in games]
    events = _event_keys(games, [labels[game] for game in games], stride)
    keys, scores = _prediction_keys_from_spots(games, spots, stride)
    return _score_metrics(events, keys, scores, stride, deltas, len(games))


def evaluate_dense(
    labels: Mapping[str, Annotations],
    detections: Mapping[str, Sequence[np.ndarray]],
    metric: str | Sequence[float] = "tight",
    *,
    allow_missing: bool = False,
) -> AverageMAP:
    """Score per-half dense detections: ``detections[game] = (half1 [T1, 17], half2 [T2, 17])``.

    Rows are frames at 2 per second; an entry < 0 (or NaN) is no detection. Rows past
    120 minutes fold onto the last frame, the last row winning, as a file written in
    frame order would. Other arguments as :func:`evaluate_spots`.
    """
    deltas = deltas_of_metric(metric)
    stride = _stride(deltas)
    games = list(labels)
    missing = [game for game in games if game not in detections]
    _check_missing(missing, allow_missing)
    events = _event_keys(games, [labels[game] for game in games], stride)
    key_parts: list[np.ndarray] = []
    score_parts: list[np.ndarray] = []
    for game_number, game in enumerate(games):
        halves = detections.get(game, ())
        if game in detections and len(halves) != 2:
            raise EvaluationError(f"game {game!r}: expected 2 halves of detections, got {len(halves)}")
        for half_number, array in enumerate(halves):
            keys, scores = _dense_keys(np.asarray(array), 2 * game_number + half_number, stride, game)
            key_parts.append(keys)
            score_parts.append(scores)
    keys = np.concatenate(key_parts) if key_parts else np.zeros(0, np.int64)
    scores = np.concatenate(score_parts) if score_parts else np.zeros(0, np.float64)
    return _score_metrics(events, keys, scores, stride, [deltas], len(games))[0]


class KeyedLabels:
    """A split's labels in the evaluator's key form, to score many sets of detections against.

    For callers that score the same labels again and again (the window search scores one
    class some 40 times): the events are keyed once, and the detections come as arrays, with
    no ``Spots`` in between. ``evaluate(segment, class_index, frame, scores)`` equals
    :func:`evaluate_spots` of the same detections to the last bit (a test compares them).
    """

    def __init__(self, labels: Mapping[str, Annotations], metric: str | Sequence[float] = "tight") -> None:
        self.deltas = deltas_of_metric(metric)
        self.stride = _stride(self.deltas)
        self.games = list(labels)
        if not self.games:
            raise EvaluationError("no games to evaluate")
        self.events = _event_keys(self.games, [labels[game] for game in self.games], self.stride)

    def evaluate(
        self, segment: np.ndarray, class_index: np.ndarray, frame: np.ndarray, scores: np.ndarray
    ) -> AverageMAP:
        """The metric of the detections ``[K]`` (arrays of equal length).

        ``segment``: ``2 * g + half - 1`` for the ``g``-th game of the labels (their order);
        ``frame``: at 2 per second in the half, frames past 120 minutes folding onto the last;
        on one segment, class and frame a later entry wins, as in a file; entries with a score
        < 0 are no detection. Detections already in key order (segment, class, frame, each
        once) skip the sort that the overwrite rule needs.
        """
        segment, class_index, frame = (np.asarray(a, dtype=np.int64) for a in (segment, class_index, frame))
        scores = np.asarray(scores, dtype=np.float64)
        if not (segment.shape == class_index.shape == frame.shape == scores.shape and segment.ndim == 1):
            raise EvaluationError(
                f"segment, class, frame and scores must be 1-D arrays of one length, got shapes "
                f"{segment.shape}, {class_index.shape}, {frame.shape}, {scores.shape}"
            )
        bad = (segment < 0) | (segment >= 2 * len(self.games)) | (class_index < 0)
        bad |= (class_index >= NUM_CLASSES) | (frame < 0)
        if bad.any():
            first = int(np.argmax(bad))
            raise EvaluationError(
                f"detection {first}: segment {segment[first]}, class {class_index[first]}, frame "
                f"{frame[first]}: segments are 0 to {2 * len(self.games) - 1}, classes 0 to 16, frames >= 0"
            )
        keys = (segment * NUM_CLASSES + class_index) * self.stride + np.minimum(frame, VECTOR_FRAMES - 1)
        if not bool(np.all(keys[1:] > keys[:-1])):
            kept = _last_of_each_key(keys)
            keys, scores = keys[kept], scores[kept]
        is_prediction = scores >= 0
        if not is_prediction.all():
            keys, scores = keys[is_prediction], scores[is_prediction]
        return _score_metrics(self.events, keys, scores, self.stride, [self.deltas], len(self.games))[0]


def evaluate_files(
    labels_root: str | Path,
    predictions: str | Path,
    *,
    games: Sequence[str] | None = None,
    split: str | None = None,
    metric: str | Sequence[float] = "tight",
    allow_missing: bool = False,
    workers: int = 1,
) -> AverageMAP:
    """Score a predictions folder or zip against ``<labels_root>/<game>/Labels-v2.json``.

    Games: ``games``, or those of ``split`` (``astra.data.splits.games_of_split``), or
    by default every folder under ``labels_root`` that holds a ``Labels-v2.json``.
    A game without a predictions file is an error unless ``allow_missing``; bad files
    raise errors (ValueError subclasses) that name them. ``workers`` > 1 reads the
    files in that many processes (forked; where fork is unavailable, in this one):
    parsing JSON is most of the time of a whole evaluation.
    """
    return evaluate_files_metrics(
        labels_root,
        predictions,
        [metric],
        games=games,
        split=split,
        allow_missing=allow_missing,
        workers=workers,
    )[0]


def evaluate_files_metrics(
    labels_root: str | Path,
    predictions: str | Path,
    metrics: Sequence[str | Sequence[float]],
    *,
    games: Sequence[str] | None = None,
    split: str | None = None,
    allow_missing: bool = False,
    workers: int = 1,
) -> list[AverageMAP]:
    """:func:`evaluate_files` for several metrics, reading the files once: one result per metric.

    Each result equals that of :func:`evaluate_files` with that metric (see
    :func:`evaluate_spots_metrics`). The metrics are checked before any file is read.
    """
    _deltas_of_metrics(metrics)
    labels_root = Path(labels_root)
    if games is not None and split is not None:
        raise EvaluationError("give games or split, not both")
    if split is not None:
        games = games_of_split(split, labels_root)
    elif games is None:
        games = _games_with_labels(labels_root)
        if not games:
            raise EvaluationError(f"{labels_root}: no {LABELS_FILENAME} found under this folder")
    without_labels = [game for game in games if not (labels_root / game / LABELS_FILENAME).is_file()]
    if without_labels:
        raise LabelsError(f"{labels_root / without_labels[0] / LABELS_FILENAME}: label file not found")
    available = open_predictions(predictions)
    missing = [game for game in games if game not in available]
    hint = misplaced_games(available, missing) if missing else ""
    _check_missing(missing, allow_missing, where=str(predictions), hint=hint)
    labels, spots = _read_games(labels_root, available, list(dict.fromkeys(games)), workers)
    _log_ignored(labels.values(), "labels")
    _log_ignored(spots.values(), "predictions")
    return evaluate_spots_metrics(labels, spots, metrics)


def deltas_of_metric(metric: str | Sequence[float]) -> tuple[float, ...]:
    """The tolerances in seconds of a metric name, or of an explicit list (checked)."""
    if isinstance(metric, str):
        if metric not in METRICS:
            raise EvaluationError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
        return METRICS[metric]
    deltas = tuple(float(delta) for delta in metric)
    if not deltas or not all(np.isfinite(delta) and delta >= 0 for delta in deltas):
        raise EvaluationError(f"tolerances must be a non-empty list of seconds >= 0, got {list(metric)}")
    return deltas


def _deltas_of_metrics(metrics: Sequence[str | Sequence[float]]) -> list[tuple[float, ...]]:
    if isinstance(metrics, str):
        raise EvaluationError(f"metrics must be a list of metrics, got the string {metrics!r}")
    deltas = [deltas_of_metric(metric) for metric in metrics]
    if not deltas:
        raise EvaluationError("no metric to evaluate")
    return deltas


# ----------------------------------------------------------------------------------
# Inputs -> sorted keys


@dataclass(frozen=True)
class _Events:
    """Ground truth after the official overwrite: ``keys [G]`` sorted, ``values [G]`` +1 / -1."""

    keys: np.ndarray
    values: np.ndarray


def _stride(deltas: tuple[float, ...]) -> int:
    # Blocks are farther apart than any window (and any 2 windows) can reach.
    return VECTOR_FRAMES + 2 * max(_radius_frames(delta) for delta in deltas) + 2


def _radius_frames(delta_seconds: float) -> int:
    # Official: delta = deltas * framerate frames, a prediction matches when
    # abs(pred - gt) <= delta / 2; with whole frames that is floor(delta / 2).
    return int(np.floor(np.float64(delta_seconds) * FRAMES_PER_SECOND / 2))


def _frames(position_ms: np.ndarray) -> np.ndarray:
    """Official ``min(int(2 * position_ms / 1000), 14399)`` for positions >= 0, in integers."""
    # Clamping the position first keeps the product far from int64 overflow.
    limited = np.minimum(position_ms.astype(np.int64), 1000 * VECTOR_FRAMES)
    return np.minimum(limited * FRAMES_PER_SECOND // 1000, VECTOR_FRAMES - 1)


def _last_of_each_key(keys: np.ndarray) -> np.ndarray:
    """Indices of the last occurrence of every distinct key, in key order (a later entry wins)."""
    count = len(keys)
    index_bits = max(count - 1, 1).bit_length()
    if count == 0 or int(keys.max()) >= 2 ** (62 - index_bits):
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
    else:
        # Sorting (key << bits) | index (all distinct) is a stable sort by key, and np.sort
        # of int64 is several times faster than a stable argsort.
        composite = np.sort((keys << index_bits) | np.arange(count, dtype=np.int64))
        sorted_keys = composite >> index_bits
        order = composite & ((1 << index_bits) - 1)
    last = np.ones(count, dtype=bool)
    last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    return order[last]


def _event_keys(names: Sequence[str], annotations: Sequence[Annotations], stride: int) -> _Events:
    """Sorted keys ``[G]`` and values of the events after the official overwrite."""
    keys = _keys(names, annotations, stride)
    values = np.where(_joined(annotations, "visible", bool), 1, -1).astype(np.int8)
    kept = _last_of_each_key(keys)
    return _Events(keys[kept], values[kept])


def _prediction_keys_from_spots(
    names: Sequence[str], spots: Sequence[Spots], stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys ``[P]`` and scores ``[P]`` of the predictions (entries >= 0 after overwrites)."""
    keys = _keys(names, spots, stride)
    scores = _joined(spots, "confidence", np.float64)
    kept = _last_of_each_key(keys)
    keys, scores = keys[kept], scores[kept]
    # Official: predictions are the entries >= 0 (so NaN is none either).
    is_prediction = scores >= 0
    return keys[is_prediction], scores[is_prediction]


def _keys(names: Sequence[str], games: Sequence[Annotations] | Sequence[Spots], stride: int) -> np.ndarray:
    """``[N]`` key of every entry of every game, games in order, entries in file order."""
    game_number = np.repeat(np.arange(len(games), dtype=np.int64), [len(game) for game in games])
    half = _joined(games, "half", np.int64)
    class_index = _joined(games, "class_index", np.int64)
    position_ms = _joined(games, "position_ms", np.int64)
    # Spots and labels read from files hold no such values; hand-made arrays might.
    bad = (half < 1) | (half > 2) | (class_index < 0) | (class_index >= NUM_CLASSES) | (position_ms < 0)
    if bad.any():
        first = int(np.argmax(bad))
        raise EvaluationError(
            f"game {names[game_number[first]]!r}: half {half[first]}, class {class_index[first]}, "
            f"position {position_ms[first]} ms: halves are 1 or 2, classes 0 to 16, positions >= 0"
        )
    block = (2 * game_number + half - 1) * NUM_CLASSES + class_index
    return block * stride + _frames(position_ms)


def _joined(games: Sequence[Annotations] | Sequence[Spots], name: str, dtype: type) -> np.ndarray:
    arrays = [getattr(game, name) for game in games]
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def _dense_keys(array: np.ndarray, segment: int, stride: int, game: str) -> tuple[np.ndarray, np.ndarray]:
    if array.ndim != 2 or array.shape[1] != NUM_CLASSES:
        raise EvaluationError(f"game {game!r}: detections must be [frames, {NUM_CLASSES}], got {array.shape}")
    if array.shape[0] > VECTOR_FRAMES:
        array = np.concatenate([array[: VECTOR_FRAMES - 1], array[-1:]])
    scores_by_class = array.T.astype(np.float64)  # [17, T]
    class_index, frame = np.nonzero(scores_by_class >= 0)  # class-major, then frame: sorted keys
    keys = (segment * NUM_CLASSES + class_index.astype(np.int64)) * stride + frame
    return keys, scores_by_class[class_index, frame]


# ----------------------------------------------------------------------------------
# Scoring


def _score_metrics(
    events: _Events,
    keys: np.ndarray,
    scores: np.ndarray,
    stride: int,
    metrics: Sequence[tuple[float, ...]],
    num_games: int,
) -> list[AverageMAP]:
    """The official six values per metric (its deltas), from sorted event keys ``[G]`` and
    prediction keys/scores ``[P]``; what does not depend on the tolerance is done once."""
    if num_games == 0:
        raise EvaluationError("no games to evaluate")
    event_block = events.keys // stride
    block = keys // stride
    event_class = event_block % NUM_CLASSES
    num_visible = np.bincount(event_class[events.values > 0], minlength=NUM_CLASSES)
    num_unshown = np.bincount(event_class[events.values < 0], minlength=NUM_CLASSES)

    # Every prediction is visible or not shown (the visibility of its closest event, "not
    # shown" without one), so one histogram per visibility holds all three variants.
    unshown = _closest_visibility(events, event_block, keys, stride) < 0
    # Threshold bin of each score: the number of thresholds <= score, so that
    # "score >= thresholds[i]" is "bin > i".
    cell = (unshown * NUM_CLASSES + block % NUM_CLASSES) * (NUM_THRESHOLDS + 1) + _threshold_bins(scores)
    detected = _count_at_thresholds(cell)
    num_events = np.stack([num_visible + num_unshown, num_visible, num_unshown])  # [3, 17]

    # The matching depends on a tolerance through its radius in frames only, so metrics
    # (and tolerances) with equal radii share it. Only the predictions within the widest
    # radius of an event can match (most of them, with 2,000 a game, cannot): the matching
    # sees those candidates only, in key order, which orders ties as before.
    radii = sorted({_radius_frames(delta) for deltas in metrics for delta in deltas})
    candidates = _candidates(events.keys, keys, radii[-1])
    candidate_keys = keys[candidates]
    priority, by_priority = _priorities(scores[candidates])
    windows = _windows(events.keys, candidate_keys, radii)
    radius_index, matched = _match(events.keys, priority, by_priority, radii, windows)
    hits = _count_at_thresholds(cell[candidates[matched]], radius_index, len(radii))  # [R, 3, 17, 200]
    # [R, 3, 17]: per radius the APs of all, visible, not-shown events.
    precision = _average_precision(hits, detected, num_events)
    by_radius = dict(zip(radii, precision, strict=True))
    return [
        _result(
            deltas,
            [by_radius[_radius_frames(delta)] for delta in deltas],
            num_visible,
            num_unshown,
            num_games,
        )
        for deltas in metrics
    ]


def _result(
    deltas: tuple[float, ...],
    by_delta: list[np.ndarray],
    num_visible: np.ndarray,
    num_unshown: np.ndarray,
    num_games: int,
) -> AverageMAP:
    """The official six values from the ``[3, 17]`` APs (all, visible, not shown) of each delta."""
    per_class, per_class_visible, per_class_unshown = ([row[v] for row in by_delta] for v in range(3))

    # As official: mAP = np.mean of the [17] per-class APs at each delta.
    mAP = [np.mean(values) for values in per_class]
    mAP_visible = [np.mean(values) for values in per_class_visible]
    mAP_unshown = [np.mean(values) for values in per_class_unshown]
    if len(deltas) == 1:
        a_mAP, a_mAP_visible, a_mAP_unshown = mAP[0], mAP_visible[0], mAP_unshown[0]
        a_per_class = per_class[0].tolist()
        a_per_class_visible = per_class_visible[0].tolist()
        a_per_class_unshown = per_class_unshown[0].tolist()
    else:
        a_mAP = _trapezoid_mean(mAP)
        a_mAP_visible = _trapezoid_mean(mAP_visible)
        a_mAP_unshown = _trapezoid_mean(mAP_unshown) * NUM_CLASSES / NUM_CLASSES_WITH_UNSHOWN
        a_per_class = [_trapezoid_mean([row[c] for row in per_class]) for c in range(NUM_CLASSES)]
        a_per_class_visible = [
            _trapezoid_mean([row[c] for row in per_class_visible]) for c in range(NUM_CLASSES)
        ]
        a_per_class_unshown = [
            _trapezoid_mean([row[c] for row in per_class_unshown]) for c in range(NUM_CLASSES)
        ]
    return AverageMAP(
        deltas_seconds=deltas,
        a_mAP=float(a_mAP),
        a_mAP_per_class=tuple(float(value) for value in a_per_class),
        a_mAP_visible=float(a_mAP_visible),
        a_mAP_per_class_visible=tuple(float(value) for value in a_per_class_visible),
        a_mAP_unshown=float(a_mAP_unshown),
        a_mAP_per_class_unshown=tuple(float(value) for value in a_per_class_unshown),
        mAP_per_delta=tuple(float(value) for value in mAP),
        mAP_per_delta_visible=tuple(float(value) for value in mAP_visible),
        mAP_per_delta_unshown=tuple(float(value) for value in mAP_unshown),
        num_events_visible=tuple(int(count) for count in num_visible),
        num_events_unshown=tuple(int(count) for count in num_unshown),
        num_games=num_games,
    )


def _closest_visibility(
    events: _Events, event_block: np.ndarray, keys: np.ndarray, stride: int
) -> np.ndarray:
    """``[P]`` +1 / -1: the visibility of each prediction's closest event of its class and half.

    The official "closest" vector: between consecutive events ``a < b`` of one block,
    frames ``< (a + b) // 2`` belong to ``a``; before the first event, frames belong to
    it, after the last one, to the last one; a block without events gives -1.

    That is a step function of the key with a step at each block's start (its first event's
    visibility), at each middle (the next event's) and at each block's end (-1): each key
    takes the value of the last step at or before it. The steps' places among the (far more)
    keys give every key's step in a few passes.
    """
    count = len(events.keys)
    if count == 0 or len(keys) == 0:
        return np.full(len(keys), -1, dtype=np.int8)
    first_of_block = np.ones(count, dtype=bool)
    first_of_block[1:] = event_block[1:] != event_block[:-1]
    middles = np.empty(count, dtype=np.int64)
    middles[1:] = (events.keys[:-1] + events.keys[1:]) // 2
    steps = np.where(first_of_block, event_block * stride, middles)
    # Increasing within a block (a middle is past the event before it and at most the event
    # after it); a block's end (past every key of the block) comes before the next block's start.
    ends = event_block[np.flatnonzero(np.append(first_of_block[1:], True))] * stride + VECTOR_FRAMES
    at = np.concatenate([steps, ends])
    values = np.concatenate([events.values, np.full(len(ends), -1, dtype=np.int8)])
    order = np.argsort(at, kind="stable")  # a block's start and first middle may coincide: the middle wins
    at, values = at[order], np.append(values[order], np.int8(-1))  # [-1]: keys before every step
    # The number of steps at or before each key, minus one: the index of its step.
    places = np.searchsorted(keys, at, side="left")
    step = np.cumsum(np.bincount(places, minlength=len(keys) + 1)[: len(keys)]) - 1
    return values[step]


def _candidates(event_keys: np.ndarray, keys: np.ndarray, radius: int) -> np.ndarray:
    """Indices (increasing) of the keys within ``radius`` of some event: those that can match."""
    first = np.searchsorted(keys, event_keys - radius, side="left")
    stop = np.searchsorted(keys, event_keys + radius, side="right")
    # +1 where a window opens, -1 where it closes: a key is covered where the sum is > 0.
    edges = np.bincount(first, minlength=len(keys) + 1) - np.bincount(stop, minlength=len(keys) + 1)
    return np.flatnonzero(np.cumsum(edges[:-1]) > 0)


def _windows(
    event_keys: np.ndarray, keys: np.ndarray, radii: Sequence[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per radius (ascending) ``first, stop [G]``: each event's candidates are ``keys[first:stop]``,
    the keys with ``|key - event| <= radius``.

    One pair of binary searches for the widest radius; the narrower windows follow from
    the offsets of the (few) keys in the widest ones, counted per event and radius,
    which is several times cheaper than a binary search of every event per radius.
    """
    widest = radii[-1]
    first = np.searchsorted(keys, event_keys - widest, side="left")
    stop = np.searchsorted(keys, event_keys + widest, side="right")
    lengths = stop - first
    total = int(lengths.sum())
    narrower = np.asarray(radii[:-1], dtype=np.int64)
    count = len(narrower)
    if count == 0:
        return [(first, stop)]
    if total > 4 * len(event_keys) * count:
        # Dense keys (a prediction on most frames): the binary searches are cheaper.
        return [
            (
                np.searchsorted(keys, event_keys - radius, side="left"),
                np.searchsorted(keys, event_keys + radius, side="right"),
            )
            for radius in narrower.tolist()
        ] + [(first, stop)]
    pair_event = np.repeat(np.arange(len(event_keys), dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths
    pair_key = keys[np.arange(total) + np.repeat(first - offsets, lengths)]
    offset = pair_key - event_keys[pair_event]  # in [-widest, widest]
    # A key at offset -d (d > 0) lies left of the window of every radius < d, that is of
    # the narrower radii with index < searchsorted(narrower, d); likewise on the right.
    narrower_than = np.searchsorted(narrower, np.arange(-widest, widest + 1), side="left")
    outside = []
    for side in (widest - offset, widest + offset):
        bins = narrower_than[side] * len(event_keys) + pair_event
        per_bin = np.bincount(bins, minlength=(count + 1) * len(event_keys)).reshape(count + 1, -1)
        # [count, G]: the keys outside the window of narrower[k] are those of the bins > k.
        outside.append(np.cumsum(per_bin[:0:-1], axis=0)[::-1])
    windows = [(first + left, stop - right) for left, right in zip(*outside, strict=True)]
    windows.append((first, stop))
    return windows


def _match(
    event_keys: np.ndarray,
    priority: np.ndarray,
    by_priority: np.ndarray,
    radii: Sequence[int],
    windows: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """``radius_index, chosen [M]``: per radius the predictions that the official greedy matching takes.

    Events in key order; each takes, among the untaken predictions with
    ``|key - event| <= radius`` (``keys[first:stop]``, ``windows`` of :func:`_windows`),
    the highest score, the first in key order on ties, that is the smallest ``priority``
    (``by_priority`` is its inverse, see :func:`_priorities`). Events more than
    ``2 * radius`` apart share no candidate, so only events within a chain of such
    gaps (a cluster) depend on each other: processing the k-th event of every cluster
    together, k = 0, 1, ..., follows the official order wherever it matters.

    The first event of a cluster finds nothing taken: its choice is the minimum of the
    priorities in its window, for all radii and events at once (:func:`_range_minima`).
    Only the later events of clusters (a few percent) go rank by rank, with what the
    events before them took marked per radius (radius r at offset r * P).
    """
    num_keys = len(priority)
    count = len(event_keys)
    if count == 0 or num_keys == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    first = np.concatenate([window[0] for window in windows])  # [R * G], radius-major
    stop = np.concatenate([window[1] for window in windows])
    taken = num_keys  # past every real priority: nothing found
    best = _range_minima(priority, first, stop, taken)
    starts_cluster = np.ones((len(radii), count), dtype=bool)
    radius_column = 2 * np.asarray(radii, dtype=np.int64)[:, None]
    np.greater(np.diff(event_keys)[None, :], radius_column, out=starts_cluster[:, 1:])
    starts = starts_cluster.ravel()
    found = np.flatnonzero(starts & (best < taken))
    radius_parts = [found // count]
    chosen_parts = [by_priority[best[found]]]
    later = np.flatnonzero(~starts & (stop > first))
    if len(later) == 0:
        return radius_parts[0], chosen_parts[0]
    index = np.arange(len(starts))
    later_rank = later - np.maximum.accumulate(np.where(starts, index, 0))[later]
    # The firsts of clusters that have later events took their predictions: mark them.
    is_taken = np.zeros(len(radii) * num_keys, dtype=bool)
    followed = np.zeros(len(starts), dtype=bool)
    followed[:-1] = ~starts[1:]
    marked = followed[found]
    is_taken[radius_parts[0][marked] * num_keys + chosen_parts[0][marked]] = True
    # A stable sort of small integers is a radix sort in numpy: ten times faster than of int64.
    small = np.int16 if int(later_rank.max()) < 2**15 else np.int64
    order = np.argsort(later_rank.astype(small), kind="stable")
    later = later[order]
    bounds = np.searchsorted(later_rank[order], np.arange(1, int(later_rank.max()) + 2))
    for rank_first, rank_stop in itertools.pairwise(bounds.tolist()):
        if rank_first == rank_stop:
            continue
        # The k-th events of all clusters and radii: disjoint windows, their elements gathered.
        at_rank = later[rank_first:rank_stop]
        lengths = stop[at_rank] - first[at_rank]
        offsets = np.cumsum(lengths) - lengths
        position = np.arange(int(lengths.sum())) + np.repeat(first[at_rank] - offsets, lengths)
        radius_offset = (at_rank // count) * num_keys
        values = np.where(is_taken[np.repeat(radius_offset, lengths) + position], taken, priority[position])
        minima = np.minimum.reduceat(values, offsets)
        hit = minima < taken
        chosen = by_priority[minima[hit]]
        is_taken[radius_offset[hit] + chosen] = True
        radius_parts.append(at_rank[hit] // count)
        chosen_parts.append(chosen)
    return np.concatenate(radius_parts), np.concatenate(chosen_parts)


def _range_minima(values: np.ndarray, first: np.ndarray, stop: np.ndarray, empty: int) -> np.ndarray:
    """``[W]`` ``min(values[first:stop])`` of every window (``first <= stop``), ``empty`` for an empty one.

    A sparse table: level k holds the minima of the runs of 2**k values, so that a window
    is the minimum of two (overlapping) runs of the largest power of two in its length.
    """
    lengths = stop - first
    longest = int(lengths.max()) if len(lengths) else 0
    if longest == 0:
        return np.full(len(first), empty, dtype=values.dtype)
    levels = [values]
    while 2 ** len(levels) <= longest:
        span = 2 ** (len(levels) - 1)
        levels.append(np.minimum(levels[-1][:-span], levels[-1][span:]))
    # Where each level starts in the table; a sentinel before the first level and after the last.
    starts = np.cumsum([1] + [len(level) for level in levels[:-1]])
    table = np.concatenate([[empty], *levels, [empty]])
    level = np.zeros(longest + 1, dtype=np.int64)  # floor(log2(n)) for n >= 1, in integers
    for power in range(1, len(levels)):
        level[2**power :] += 1
    run_level = level[lengths]
    left = starts[run_level] + first
    minima = np.minimum(table[left], table[left + (lengths - (1 << run_level))])
    # An empty window read its start and the element before (level 0, or a sentinel): replaced.
    return np.where(lengths > 0, minima, empty)


def _priorities(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[P]`` rank of each prediction by score, highest first, ties in key order; and its inverse.

    Official: the strict ``>`` of the matching loop keeps the first of equal scores.
    """
    count = len(scores)
    # A fast unstable sort by score, then the ties put back in key order by sorting
    # (run of equal scores, index), which packs into one int64 as run * count + index.
    order = np.argsort(-scores)
    ordered = scores[order]
    run = np.zeros(count, dtype=np.int64)
    np.cumsum(ordered[1:] != ordered[:-1], out=run[1:])
    by_priority = np.sort(run * count + order) - run * count
    priority = np.empty(count, dtype=np.int64)
    priority[by_priority] = np.arange(count)
    return priority, by_priority


def _threshold_bins(scores: np.ndarray) -> np.ndarray:
    """``[P]`` the number of official thresholds ``linspace(0, 1, 200)`` that are <= each score.

    Equal to ``np.searchsorted(thresholds, scores, side="right")``, without its binary
    search: a guess from ``score * 199``, corrected by exact comparisons with the
    thresholds themselves (the guess is off by at most one where rounding bites).
    """
    thresholds = np.linspace(0, 1, NUM_THRESHOLDS)
    padded = np.concatenate([[-np.inf], thresholds, [np.inf]])  # padded[b] = thresholds[b - 1]
    guess = np.floor(np.minimum(scores, 2.0) * (NUM_THRESHOLDS - 1)).astype(np.int64) + 1
    guess = np.clip(guess, 0, NUM_THRESHOLDS)
    guess -= padded[guess] > scores  # thresholds[guess - 1] must be <= score
    guess += padded[guess + 1] <= scores  # and thresholds[guess] > score
    return np.minimum(guess, NUM_THRESHOLDS)  # an infinite score passes the sentinel too


def _count_at_thresholds(
    cell: np.ndarray, group: np.ndarray | None = None, num_groups: int = 0
) -> np.ndarray:
    """``[3, 17, 200]`` predictions with a score >= each threshold: all, visible, not shown.

    With ``group [N]`` (each cell's group, < ``num_groups``): ``[num_groups, 3, 17, 200]``.
    """
    cells = 2 * NUM_CLASSES * (NUM_THRESHOLDS + 1)
    if group is None:
        histogram = np.bincount(cell, minlength=cells).reshape(1, 2, NUM_CLASSES, NUM_THRESHOLDS + 1)
    else:
        histogram = np.bincount(group * cells + cell, minlength=num_groups * cells)
        histogram = histogram.reshape(num_groups, 2, NUM_CLASSES, NUM_THRESHOLDS + 1)
    # [g, v, c, b]: bin >= b (v: visible, not shown).
    at_least = np.cumsum(histogram[..., ::-1], axis=-1)[..., ::-1]
    above = at_least[..., 1:]  # score >= thresholds[i] is bin >= i + 1
    counts = np.stack([above[:, 0] + above[:, 1], above[:, 0], above[:, 1]], axis=1)
    return counts[0] if group is None else counts


def _average_precision(hits: np.ndarray, detected: np.ndarray, num_events: np.ndarray) -> np.ndarray:
    """``[..., 3, 17]`` official 11-point AP from ``[..., 3, 17, 200]`` true positives and
    ``[3, 17, 200]`` detections (leading axes: one per radius, say)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(hits.astype(np.float64) / detected)
        recall = np.nan_to_num(hits.astype(np.float64) / num_events[:, :, None])
    total = np.zeros(hits.shape[:-1])
    # Official: AP += max precision at recall >= j, j in np.arange(11) / 10, then / 11.
    for level in np.arange(11) / 10:
        total += np.where(recall >= level, precision, 0.0).max(axis=-1)
    return total / 11


def _trapezoid_mean(values: Sequence[float]) -> float:
    """Official ``average_mAP``: sum of (v[i] + v[i+1]) / 2, over len - 1, in that order."""
    integral = 0.0
    for left, right in itertools.pairwise(values):
        integral += (left + right) / 2
    return integral / (len(values) - 1)


# ----------------------------------------------------------------------------------
# Files


def _read_games(
    labels_root: Path, available: Mapping[str, Spots], games: list[str], workers: int
) -> tuple[dict[str, Annotations], dict[str, Spots]]:
    """Labels and predictions (none when missing) of ``games``, in ``workers`` processes."""
    workers = max(1, min(workers, len(games) // 4))  # a few games per process at least
    if workers > 1:
        import multiprocessing  # only here: its import is 2% of a whole evaluation

        if "fork" not in multiprocessing.get_all_start_methods():
            workers = 1
    if workers == 1:
        read = _read_some_games(labels_root, available, games)
    else:
        from concurrent.futures import ProcessPoolExecutor

        chunks = [games[number::workers] for number in range(workers)]
        # Forked workers start at once with everything imported; this process reads a share too.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers - 1, mp_context=context) as pool:
            futures = [pool.submit(_read_some_games, labels_root, available, chunk) for chunk in chunks[1:]]
            read = _read_some_games(labels_root, available, chunks[0])
            for future in futures:
                read += future.result()
        order = {game: number for number, game in enumerate(games)}
        read.sort(key=lambda item: order[item[0]])
    labels = {game: annotations for game, annotations, _ in read}
    spots = {game: predictions for game, _, predictions in read}
    return labels, spots


def _read_some_games(
    labels_root: Path, available: Mapping[str, Spots], games: list[str]
) -> list[tuple[str, Annotations, Spots]]:
    return [
        (
            game,
            read_labels(labels_root / game / LABELS_FILENAME),
            available[game] if game in available else Spots.empty(),
        )
        for game in games
    ]


def _games_with_labels(root: Path) -> list[str]:
    games = []
    for folder, _, files in os.walk(root):
        if LABELS_FILENAME in files and folder != str(root):
            games.append(Path(folder).relative_to(root).as_posix())
    return sorted(games)


def _check_missing(
    missing: list[str], allow_missing: bool, where: str = "the predictions", hint: str = ""
) -> None:
    """``hint``: where the missing games' files sit instead (``astra.submission.misplaced_games``)."""
    if not missing:
        return
    shown = ", ".join(repr(game) for game in missing[:3]) + (" ..." if len(missing) > 3 else "")
    found = f"; {hint}" if hint else ""
    if not allow_missing:
        raise EvaluationError(
            f"{where}: no predictions for {len(missing)} game(s) with labels: {shown} "
            f"(allow_missing scores them as games without predictions){found}"
        )
    logger.warning("no predictions for %d game(s), scored as none: %s%s", len(missing), shown, found)


def _log_ignored(items: Iterable[Annotations | Spots], what: str) -> None:
    ignored: Counter[str] = Counter()
    for item in items:
        ignored.update(item.ignored)
    if ignored:
        listed = ", ".join(f"{name!r} x{count}" for name, count in ignored.most_common())
        logger.info("%s outside the 17 classes, ignored as the official evaluator does: %s", what, listed)
