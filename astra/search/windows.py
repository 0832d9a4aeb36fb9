"""Per-class Soft-NMS windows, searched on per-position outputs (numpy and Optuna; no torch, no Ray).

The tight (or loose) AP of a class depends only on that class's window: Soft-NMS runs per
class, and the evaluator matches and ranks each class on its own. So the 17 windows are 17
one-dimensional problems. For each class, :func:`search_windows` evaluates candidate windows
on the validation outputs alone; ``method="optuna"`` runs a seeded TPE study per class over
``[low, high]`` seconds (the paper's window and a few spread-out values evaluated first),
``method="grid"`` every ``step`` seconds. The mean of the per-class APs is the a-mAP of all
windows together (a test checks it against the whole evaluator).

One evaluation is cheap: the class's column of every half is laid end to end, with gaps wider
than any window, and decoded by one Soft-NMS call; the detections go to the evaluator with the
events of that class only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from astra.classes import CLASSES, FRAMES_PER_SECOND, NUM_CLASSES
from astra.config import InferenceConfig
from astra.data.labels import Annotations
from astra.evaluation.average_map import VECTOR_FRAMES, EvaluationError, KeyedLabels
from astra.evaluation.outputs import Outputs
from astra.files import atomic_write
from astra.postprocess.nms import hard_nms, soft_nms

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("optuna", "grid")


class WindowsError(ValueError):
    """Window-search inputs or a windows file that cannot be used; the message names them."""


@dataclass(frozen=True)
class WindowSearch:
    """The searched windows and what they score on the split they were searched on.

    Attributes:
        windows_seconds: ``[17]`` the chosen window per class, in class order.
        per_class_ap: ``[17]`` the AP of each class with its chosen window (of ``metric``).
        start_windows_seconds: ``[17]`` the windows the search started from (the paper's).
        start_per_class_ap: ``[17]`` the AP of each class with those.
        metric: "tight" or "loose".
        split: the split searched on (validation: never the test split).
        evaluations: windows evaluated, all classes together.
    """

    windows_seconds: tuple[float, ...]
    per_class_ap: tuple[float, ...]
    start_windows_seconds: tuple[float, ...]
    start_per_class_ap: tuple[float, ...]
    metric: str
    split: str
    evaluations: int

    @property
    def a_map(self) -> float:
        """The a-mAP with the chosen windows: the mean of the per-class APs."""
        return float(np.mean(self.per_class_ap))

    @property
    def start_a_map(self) -> float:
        return float(np.mean(self.start_per_class_ap))

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "split": self.split,
            "a_map": self.a_map,
            "start_a_map": self.start_a_map,
            "evaluations": self.evaluations,
            "nms_windows_seconds": [float(w) for w in self.windows_seconds],
            "classes": {
                name: {
                    "window_seconds": float(self.windows_seconds[c]),
                    "ap": float(self.per_class_ap[c]),
                    "start_window_seconds": float(self.start_windows_seconds[c]),
                    "start_ap": float(self.start_per_class_ap[c]),
                }
                for c, name in enumerate(CLASSES)
            },
        }


def search_windows(
    labels: Mapping[str, Annotations],
    outputs: Outputs,
    inference: InferenceConfig,
    *,
    metric: str = "tight",
    method: str = "optuna",
    trials_per_class: int = 40,
    low_seconds: float = 1.0,
    high_seconds: float = 40.0,
    step_seconds: float = 0.5,
    seed: int = 0,
    split: str = "valid",
    workers: int = 1,
) -> WindowSearch:
    """Search each class's Soft-NMS window on ``outputs`` against ``labels`` (a validation split).

    ``inference`` gives the NMS (soft or hard), its threshold and the starting windows. Optuna
    runs ``trials_per_class`` evaluations per class; the grid evaluates ``low..high`` every
    ``step_seconds``. A class keeps its starting window unless another scores higher.
    ``workers`` > 1 searches the classes in that many processes, with the same result.
    """
    if split.lower().split("+").count("test"):
        raise WindowsError("windows are chosen on validation outputs, never on the test split")
    if method not in METHODS:
        raise WindowsError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if not (0 < low_seconds < high_seconds and math.isfinite(high_seconds)):
        raise WindowsError(f"window bounds must satisfy 0 < low < high, got {low_seconds} and {high_seconds}")
    if trials_per_class < 1 or not step_seconds > 0:
        raise WindowsError(
            f"trials_per_class must be >= 1 and step > 0, got {trials_per_class}, {step_seconds}"
        )
    from astra.processes import WorkerError, check_workers

    try:
        check_workers(workers)
    except WorkerError as error:
        raise WindowsError(str(error)) from None
    start = tuple(float(w) for w in inference.nms_windows_seconds)
    problem = ClassWindows(
        labels, outputs, inference, metric=metric, max_window_seconds=max(high_seconds, *start)
    )
    search = _ClassSearch(method, trials_per_class, low_seconds, high_seconds, step_seconds, seed, start)
    if workers == 1:
        per_class = [search(problem, c) for c in range(NUM_CLASSES)]
    else:
        per_class = _in_processes(problem, search, workers)
    chosen, best_ap, start_ap = [], [], []
    for c, scores in enumerate(per_class):
        # The starting window wins ties: a change must earn its place.
        best_window = max(scores, key=lambda w: (scores[w], w == start[c]))
        chosen.append(best_window)
        best_ap.append(scores[best_window])
        start_ap.append(scores[start[c]])
    evaluations = sum(len(scores) for scores in per_class)
    return WindowSearch(tuple(chosen), tuple(best_ap), start, tuple(start_ap), metric, split, evaluations)


@dataclass(frozen=True)
class _ClassSearch:
    """One class's search: every window it evaluated, with its AP (the starting window's included)."""

    method: str
    trials_per_class: int
    low_seconds: float
    high_seconds: float
    step_seconds: float
    seed: int
    start: tuple[float, ...]

    def __call__(self, problem: ClassWindows, c: int) -> dict[float, float]:
        scores: dict[float, float] = {self.start[c]: problem.ap(c, self.start[c])}
        if self.method == "grid":
            for window in np.arange(self.low_seconds, self.high_seconds + 1e-9, self.step_seconds):
                window = round(float(window), 6)
                if window not in scores:
                    scores[window] = problem.ap(c, window)
            return scores
        return _optuna_class_search(
            problem, c, self.start[c], self.trials_per_class, self.low_seconds, self.high_seconds,
            self.seed, scores,
        )  # fmt: skip


_WORKER_PROBLEM: list[ClassWindows] = []  # the problem a worker process was given


def _in_processes(problem: ClassWindows, search: _ClassSearch, workers: int) -> list[dict[float, float]]:
    """The classes' searches in ``workers`` processes, classes handed out one at a time.

    Each class's search is seeded on its own, so the result is that of one process. Spawned,
    not forked: the caller may hold threads (Ray's, torch's) that a fork would copy mid-work.
    """
    from concurrent.futures.process import BrokenProcessPool

    from astra.processes import died, spawn_pool

    # The classes with the most events first: the longest searches do not start last.
    order = sorted(range(NUM_CLASSES), key=lambda c: -problem.events_of_class(c))
    try:
        with spawn_pool(
            min(workers, NUM_CLASSES), initializer=_set_worker_problem, initargs=(problem,)
        ) as pool:
            results = dict(zip(order, pool.map(_search_in_worker, [search] * len(order), order), strict=True))
    except BrokenProcessPool as error:
        raise died(error) from None
    return [results[c] for c in range(NUM_CLASSES)]


def _set_worker_problem(problem: ClassWindows) -> None:
    _WORKER_PROBLEM[:] = [problem]


def _search_in_worker(search: _ClassSearch, c: int) -> dict[float, float]:
    return search(_WORKER_PROBLEM[0], c)


class ClassWindows:
    """The AP of one class under one window, evaluated fast (see the module docstring)."""

    def __init__(
        self,
        labels: Mapping[str, Annotations],
        outputs: Outputs,
        inference: InferenceConfig,
        *,
        metric: str = "tight",
        max_window_seconds: float = 60.0,
    ) -> None:
        missing = [game for game in labels if game not in outputs]
        if missing:
            raise WindowsError(
                f"no per-position outputs for {len(missing)} games of the labels, e.g. {missing[0]!r}"
            )
        self.metric = metric
        self.inference = inference
        self.games = list(labels)
        self.labels = labels
        # One long column per class: every half end to end, separated by gaps no window crosses.
        gap = math.ceil(max_window_seconds * FRAMES_PER_SECOND) + 2
        pieces, starts = [], []
        position = 0
        self.longest = 0  # frames of the longest half
        for game in self.games:
            halves = outputs[game]
            if sorted(halves) != [1, 2]:
                raise WindowsError(f"game {game!r}: expected outputs of halves 1 and 2, got {sorted(halves)}")
            for half in (1, 2):
                array = np.asarray(halves[half], dtype=np.float32)
                if array.ndim != 2 or array.shape[1] != NUM_CLASSES:
                    raise WindowsError(f"game {game!r} half {half}: outputs of shape {array.shape}")
                pieces += [array.T, np.zeros((NUM_CLASSES, gap), np.float32)]
                starts.append(position)
                position += array.shape[0] + gap
                self.longest = max(self.longest, array.shape[0])
        # Class-major, [17, frames]: each evaluation reads one class's column, contiguous.
        self.columns = np.concatenate(pieces, axis=1) if pieces else np.zeros((NUM_CLASSES, 0), np.float32)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.max_window_seconds = max_window_seconds
        self._keyed_labels: dict[int, KeyedLabels] = {}

    def events_of_class(self, class_index: int) -> int:
        """The events of class ``class_index`` in the labels: what one evaluation's cost grows with."""
        return sum(int(np.count_nonzero(self.labels[game].class_index == class_index)) for game in self.games)

    def ap(self, class_index: int, window_seconds: float) -> float:
        """The AP (``metric``) of class ``class_index`` with Soft-NMS window ``window_seconds``."""
        if window_seconds > self.max_window_seconds:
            raise WindowsError(
                f"window {window_seconds} s is wider than the gaps laid for {self.max_window_seconds} s"
            )
        suppress = soft_nms if self.inference.nms == "soft" else hard_nms
        # In frame order where the evaluator does not need Soft-NMS's: the column's frames are then
        # in key order, piece by piece, and the evaluator skips its sort. A half longer than the
        # official 120 minutes folds its tail onto the last frame, where the later detection in the
        # results file wins: those keep Soft-NMS's order (the file's).
        order = "selection" if self.longest > VECTOR_FRAMES else "frame"
        detections = suppress(
            self.columns[class_index][:, None], [window_seconds], FRAMES_PER_SECOND,
            self.inference.nms_threshold, order=order,
        )  # fmt: skip
        # Piece p (the halves end to end, game by game, half 1 then 2) is segment p of the labels.
        if order == "frame":  # the pieces' bounds among the sorted frames: cheaper than a search each
            bounds = np.searchsorted(detections.frame, self.starts)
            piece = np.repeat(np.arange(len(self.starts)), np.diff(bounds, append=len(detections)))
        else:
            piece = np.searchsorted(self.starts, detections.frame, side="right") - 1
        frames = detections.frame - self.starts[piece]
        try:
            result = self._keyed(class_index).evaluate(
                piece, np.full_like(piece, class_index), frames, detections.score
            )
        except EvaluationError as error:
            raise WindowsError(str(error)) from None
        return float(result.a_mAP_per_class[class_index])

    def _keyed(self, class_index: int) -> KeyedLabels:
        """The labels of class ``class_index`` alone, keyed once for all its evaluations."""
        if class_index not in self._keyed_labels:
            labels = {game: self.labels[game].of_class(class_index) for game in self.games}
            self._keyed_labels[class_index] = KeyedLabels(labels, self.metric)
        return self._keyed_labels[class_index]


def write_windows(path: str | Path, search: WindowSearch) -> None:
    """``windows.yaml``: the chosen windows (``nms_windows_seconds``, class order) and what they scored."""
    with atomic_write(path, "w") as f:
        yaml.safe_dump(search.to_dict(), f, sort_keys=False)


def read_windows(path: str | Path) -> tuple[float, ...]:
    """The 17 windows of a ``windows.yaml`` (or of any YAML with ``nms_windows_seconds``), checked."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WindowsError(f"{path}: windows file not found") from None
    except yaml.YAMLError as error:
        raise WindowsError(f"{path}: not valid YAML ({error})") from None
    windows = document.get("nms_windows_seconds") if isinstance(document, dict) else None
    if (
        not isinstance(windows, list)
        or len(windows) != NUM_CLASSES
        or not all(
            isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0
            for w in windows
        )
    ):
        raise WindowsError(f"{path}: expected nms_windows_seconds, a list of {NUM_CLASSES} positive seconds")
    return tuple(float(w) for w in windows)


def read_split_outputs(
    per_position_dir: str | Path, labels_root: str | Path, split: str
) -> tuple[dict[str, Annotations], dict[str, dict[int, np.ndarray]]]:
    """The labels and per-position outputs of every game of ``split`` (from files on disk)."""
    from astra import per_position
    from astra.data.labels import read_labels
    from astra.data.splits import games_of_split
    from astra.layout import LABELS_FILENAME

    games = games_of_split(split, labels_root)
    labels = {game: read_labels(Path(labels_root) / game / LABELS_FILENAME) for game in games}
    outputs = {game: per_position.read_game(per_position_dir, game) for game in games}
    return labels, outputs


def _optuna_class_search(
    problem: ClassWindows,
    class_index: int,
    start: float,
    trials: int,
    low: float,
    high: float,
    seed: int,
    known: Mapping[float, float],
) -> dict[float, float]:
    """The windows TPE tried and their APs, with ``known`` (already evaluated: not again)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scores = dict(known)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed * 1000 + class_index)
    )
    # Spread-out first guesses, so that TPE starts from the shape of the whole range.
    for window in sorted({min(max(start, low), high), low, (low + high) / 4, (low + high) / 2, high}):
        study.enqueue_trial({"window_seconds": window})

    def objective(trial: optuna.Trial) -> float:
        window = round(trial.suggest_float("window_seconds", low, high), 3)
        if window not in scores:
            scores[window] = problem.ap(class_index, window)
        return scores[window]

    study.optimize(objective, n_trials=trials)
    return scores
