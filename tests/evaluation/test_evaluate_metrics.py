"""The fast matching of the evaluator against plain loops, and ``--metric tight,loose`` as a whole process.

The matching takes the first event of every cluster from range minima (a sparse table)
and only the later events rank by rank; these tests hold both parts to loops written
from the official rule, on clustered events with many tied scores. The command line's
several metrics are also checked in test_several_metrics.py (in this process); here
one ``python -m astra evaluate --metric tight,loose`` process, as the speed benchmark
runs it, must print each metric's values as a run with that metric alone; and the
command loads numpy without OpenBLAS's threads, leaving the environment as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from astra.evaluation import evaluate_files
from astra.evaluation.average_map import _candidates, _match, _priorities, _range_minima, _windows


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1000])
def test_range_minima_equal_the_minimum_of_each_window(size: int) -> None:
    rng = np.random.default_rng(size)
    values = rng.integers(0, 50, size=size)  # ties on purpose
    first = rng.integers(0, size + 1, size=500)
    stop = np.minimum(first + rng.integers(0, size + 1, size=500) * (rng.random(500) < 0.8), size)
    empty = -1
    expected = [values[a:b].min() if b > a else empty for a, b in zip(first, stop, strict=True)]
    np.testing.assert_array_equal(_range_minima(values, first, stop, empty), expected)
    # Shaped like the matching's: windows given radius-major, flattened, and none at all.
    assert len(_range_minima(values, first[:0], stop[:0], empty)) == 0
    np.testing.assert_array_equal(_range_minima(values, first, first, empty), np.full(500, empty))


def greedy(event_keys: np.ndarray, keys: np.ndarray, scores: np.ndarray, radius: int) -> set[int]:
    """The official rule: events in order; each takes the best untaken prediction within
    ``radius``, the first in key order among equal scores (the official ``>``)."""
    taken: set[int] = set()
    for event in event_keys.tolist():
        best = None
        for index, key in enumerate(keys.tolist()):
            if index in taken or abs(key - event) > radius:
                continue
            if best is None or scores[index] > scores[best]:
                best = index
        if best is not None:
            taken.add(best)
    return taken


@pytest.mark.parametrize("seed", range(6))
def test_matching_equals_the_greedy_loop_on_clustered_events_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Two blocks far apart; events close enough to chain into clusters at the wider radii.
    stride = 100_000
    event_keys = np.unique(rng.integers(0, 400, size=40) + stride * rng.integers(0, 2, size=40))
    keys = np.unique(rng.integers(0, 500, size=300) + stride * rng.integers(0, 2, size=300))
    scores = rng.integers(0, 4, size=len(keys)) / 4  # four values: ties everywhere
    radii = [0, 1, 3, 10, 25, 60]
    candidates = _candidates(event_keys, keys, radii[-1])
    priority, by_priority = _priorities(scores[candidates])
    windows = _windows(event_keys, keys[candidates], radii)
    radius_index, chosen = _match(event_keys, priority, by_priority, radii, windows)
    assert len(set(zip(radius_index.tolist(), chosen.tolist(), strict=True))) == len(chosen)  # once each
    for number, radius in enumerate(radii):
        ours = set(candidates[chosen[radius_index == number]].tolist())
        assert ours == greedy(event_keys, keys, scores, radius), radius
    assert len(chosen) > 0


def test_one_process_for_tight_and_loose_prints_each_as_alone(random_case: Callable[..., Any]) -> None:
    case = random_case(seed=41, num_games=3)
    command = [sys.executable, "-m", "astra", "evaluate", "--labels", str(case.labels_root)]
    command += ["--predictions", str(case.predictions_root), "--metric", "tight,loose", "--json"]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    printed = json.loads(completed.stdout.strip().splitlines()[-1])
    assert list(printed) == ["tight", "loose"]
    for metric in ("tight", "loose"):
        alone = evaluate_files(case.labels_root, case.predictions_root, metric=metric).to_dict()
        assert printed[metric] == alone, metric


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_numpy_is_imported_with_one_blas_thread_and_the_environment_as_it_was() -> None:
    # In a fresh interpreter (here numpy is imported already, and the helper does nothing).
    script = (
        "import os, sys\n"
        "from astra.commands.evaluate import _import_numpy_with_one_blas_thread\n"
        "before = dict(os.environ)\n"
        "_import_numpy_with_one_blas_thread()\n"
        "assert 'numpy' in sys.modules and dict(os.environ) == before\n"
        "print(len(os.listdir('/proc/self/task')))\n"
    )
    environment = {name: value for name, value in os.environ.items() if name != "OPENBLAS_NUM_THREADS"}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment
    )
    assert completed.stdout.strip() == "1"  # no OpenBLAS threads beside the main one
