"""Several metrics from one reading: ``evaluate_*_metrics`` and ``astra evaluate --metric a,b``.

Every metric's result must equal, to the last bit, that of a run with that metric alone
(which test_average_map_official.py ties to the official evaluator); bad metric lists
are refused with a message naming the value. Also the shared tolerance windows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from astra.cli import main
from astra.commands.evaluate import METRIC_NAMES
from astra.data.labels import Annotations, read_labels
from astra.evaluation import (
    METRICS,
    EvaluationError,
    evaluate_files,
    evaluate_files_metrics,
    evaluate_spots,
    evaluate_spots_metrics,
)
from astra.evaluation.average_map import _candidates, _windows
from astra.submission import Spots, open_predictions


def read_case(case: Any) -> tuple[dict[str, Annotations], dict[str, Spots]]:
    labels = {game: read_labels(case.labels_root / game / "Labels-v2.json") for game in case.games}
    available = open_predictions(case.predictions_root)
    return labels, {game: available[game] for game in case.games}


def test_every_metric_at_once_equals_each_alone(random_case: Callable[..., Any]) -> None:
    case = random_case(seed=31, num_games=4)
    metrics: list[str | tuple[float, ...]] = [*METRICS, (0.5, 7.0, 61.0), (2.5,)]
    together = evaluate_files_metrics(case.labels_root, case.predictions_root, metrics)
    assert len(together) == len(metrics)
    for metric, result in zip(metrics, together, strict=True):
        alone = evaluate_files(case.labels_root, case.predictions_root, metric=metric)
        assert result == alone, metric  # every field: values, per-delta mAPs, counts
    assert together[0].a_mAP != together[1].a_mAP  # tight and loose differ: not a vacuous test


def test_order_and_repetition_of_metrics_change_nothing(random_case: Callable[..., Any]) -> None:
    labels, spots = read_case(random_case(seed=32, num_games=3))
    forward = evaluate_spots_metrics(labels, spots, ["at1", "loose", "tight"])
    backward = evaluate_spots_metrics(labels, spots, ["tight", "tight", "loose", "at1"])
    assert forward == [backward[3], backward[2], backward[0]]
    assert backward[0] == backward[1] == evaluate_spots(labels, spots, "tight")


def test_a_metric_list_must_be_a_non_empty_list_of_metrics(random_case: Callable[..., Any]) -> None:
    labels, spots = read_case(random_case(seed=33, num_games=1))
    with pytest.raises(EvaluationError, match="no metric"):
        evaluate_spots_metrics(labels, spots, [])
    with pytest.raises(EvaluationError, match=r"list of metrics.*'tight'"):
        evaluate_spots_metrics(labels, spots, "tight")
    with pytest.raises(EvaluationError, match="unknown metric 'medium'"):
        evaluate_spots_metrics(labels, spots, ["tight", "medium"])


def test_cli_several_metrics_print_each_metric_as_alone(
    random_case: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    case = random_case(seed=34, num_games=3)
    arguments = ["evaluate", "--labels", str(case.labels_root), "--predictions", str(case.predictions_root)]

    def printed(*more: str) -> str:
        assert main([*arguments, *more]) == 0
        return capsys.readouterr().out

    metrics = ("tight", "loose", "at2")
    alone = {metric: json.loads(printed("--metric", metric, "--json")) for metric in metrics}
    together = json.loads(printed("--metric", "loose,tight,at2", "--json").strip().splitlines()[-1])
    assert list(together) == ["loose", "tight", "at2"]  # the order given
    assert together == alone
    # A duplicate is scored once; one metric keeps the official six keys at the top level.
    assert json.loads(printed("--metric", "tight,tight", "--json")) == alone["tight"]
    # The tables: one per metric, in the order given, a blank line between them.
    tables = printed("--metric", "tight,loose")
    assert tables == printed("--metric", "tight") + "\n" + printed("--metric", "loose")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("tigth", "unknown metric 'tigth'"),
        ("tight,lose", "unknown metric 'lose'"),
        ("Tight", "unknown metric 'Tight'"),
        ("tight,", "an empty metric name"),
        ("tight;loose", "unknown metric 'tight;loose'"),
    ],
)
def test_cli_bad_metric_is_an_error_naming_the_value(
    capsys: pytest.CaptureFixture[str], value: str, named: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--labels", "nowhere", "--predictions", "nowhere", "--metric", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--metric" in err and named in err and repr(value) in err
    assert ", ".join(METRIC_NAMES) in err  # the names it takes


@pytest.mark.parametrize("per_game", [3, 60, 4000])  # sparse keys, then keys on most frames
def test_shared_windows_equal_a_binary_search_per_radius(per_game: int) -> None:
    rng = np.random.default_rng(per_game)
    stride = 20_000
    blocks = rng.integers(0, 40, size=200)
    event_keys = np.unique(blocks * stride + rng.integers(0, 14_400, size=200))
    count = per_game * 40
    keys = np.unique(rng.integers(0, 40, size=count) * stride + rng.integers(0, 14_400, size=count))
    # Keys right at the window edges of every radius.
    keys = np.unique(np.concatenate([keys, event_keys - 5, event_keys + 5, event_keys + 60, event_keys]))
    radii = [0, 1, 2, 5, 10, 30, 60]
    windows = _windows(event_keys, keys, radii)
    for radius, (first, stop) in zip(radii, windows, strict=True):
        np.testing.assert_array_equal(first, np.searchsorted(keys, event_keys - radius, side="left"))
        np.testing.assert_array_equal(stop, np.searchsorted(keys, event_keys + radius, side="right"))
    near = (np.abs(keys[:, None] - event_keys[None, :]) <= 60).any(axis=1)
    np.testing.assert_array_equal(_candidates(event_keys, keys, 60), np.flatnonzero(near))


def test_shared_windows_without_events_or_keys() -> None:
    none = np.zeros(0, dtype=np.int64)
    some = np.array([10, 20, 30], dtype=np.int64)
    for event_keys, keys in ((none, some), (some, none), (none, none)):
        for first, stop in _windows(event_keys, keys, [1, 5]):
            assert first.shape == stop.shape == event_keys.shape
            assert (first == stop).all()
        assert len(_candidates(event_keys, keys, 5)) == 0
