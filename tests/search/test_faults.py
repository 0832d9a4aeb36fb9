"""Faults a search survives (slow: each runs a real search on a local Ray).

- a trial's worker process killed with SIGKILL: Tune restarts the trial, which resumes from its
  own ``last.pt`` (its reported epochs do not start over) and finishes;
- the driver (``run_search.py``) killed with SIGKILL: the next run resumes, keeps what was done and
  adds nothing twice to the Optuna study;
- a node of a multi-node cluster lost while it runs a trial: the trial restarts on another node
  from its last checkpoint and finishes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import polars as pl
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6


def _space(path: Path, overrides: list[str], trials: int, epochs: int = EPOCHS) -> Path:
    settings = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in overrides)}
    settings.update({"train.epochs": epochs, "train.warmup_epochs": 1, "train.patience_epochs": epochs})
    del settings["train.base_learning_rate"]
    space = {
        "settings": settings,
        "parameters": {"train.base_learning_rate": {"loguniform": [5.0e-4, 5.0e-3]}},
        "budget": {"trials": trials, "concurrent": 1},
        "asha": {"enabled": False},
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "windows": {"search": False},
        "start_from_base": False,
    }
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    return path


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _last_checkpoint(experiment: Path) -> Path | None:
    found = sorted(experiment.glob("trials/*/run/checkpoints/last.pt"))
    return found[0] if found else None


def _reported_epochs(experiment: Path) -> list[int]:
    epochs = []
    for progress in experiment.glob("tune/*/progress.csv"):
        with progress.open() as f:
            epochs += [int(float(row["epoch"])) for row in csv.DictReader(f) if row.get("epoch")]
    return epochs


def _trial_workers(session: int) -> list[int]:
    """The trial processes of the search started as session ``session``, never another Ray's."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(maxsplit=2) for line in out.splitlines()]
    return [int(pid) for pid, sid, args in rows if int(sid) == session and "ImplicitFunc" in args]


def _search(space: Path, data: Path, experiment: Path) -> list[str]:
    return [
        sys.executable, str(REPO / "run_search.py"), "--space", str(space), "--data", str(data),
        "--experiment", str(experiment),
    ]  # fmt: skip


@contextlib.contextmanager
def _search_past_its_first_checkpoint(
    command: list[str], cwd: Path, experiment: Path
) -> Iterator[subprocess.Popen]:
    """A search started in its own process group, once a trial has written ``last.pt``; the group
    (the driver and the Ray it started) is killed on the way out if it still runs."""
    search = subprocess.Popen(command, cwd=cwd, start_new_session=True)
    try:
        _wait_for(lambda: _last_checkpoint(experiment), "a first checkpoint")
        yield search
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
            search.wait()


def _study_trials(experiment: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{experiment / 'study.db'}").trials


def test_a_killed_trial_worker_resumes_from_its_last_checkpoint(
    tmp_path: Path, make_tiny_dataset: Callable[..., Any], tiny_overrides: list[str]
) -> None:
    data = make_tiny_dataset(tmp_path / "data").root
    space = _space(tmp_path / "kill.yaml", tiny_overrides, trials=1)
    experiment = tmp_path / "experiment"
    with _search_past_its_first_checkpoint(_search(space, data, experiment), tmp_path, experiment) as search:
        workers = _wait_for(lambda: _trial_workers(search.pid), "the trial's worker process")
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert search.wait(timeout=600) == 0
    table = pl.read_parquet(experiment / "results.parquet")
    assert table["status"].to_list() == ["finished"]
    assert table["epochs_run"].to_list() == [EPOCHS]
    epochs = _reported_epochs(experiment)
    assert epochs.count(1) == 1, f"the trial started over: reported epochs {epochs}"
    assert max(epochs) == EPOCHS
    assert len(_study_trials(experiment, "astra-kill")) == 1


def test_a_killed_driver_is_resumed_by_the_next_run(
    tmp_path: Path, make_tiny_dataset: Callable[..., Any], tiny_overrides: list[str]
) -> None:
    data = make_tiny_dataset(tmp_path / "data").root
    space = _space(tmp_path / "driver.yaml", tiny_overrides, trials=2)
    experiment = tmp_path / "experiment"
    command = _search(space, data, experiment)
    with _search_past_its_first_checkpoint(command, tmp_path, experiment):
        time.sleep(1.0)  # let Tune write its experiment state, then the driver and its Ray are killed
    # What the next run finds: one trial started, none finished.
    assert not list(experiment.glob("trials/*/result.json"))
    (unfinished,) = [p.name for p in (experiment / "trials").iterdir()]
    (before,) = _trained_epochs(experiment / "trials" / unfinished)
    assert before[0] == 1 and before[-1] < EPOCHS, before
    subprocess.run(command, cwd=tmp_path, check=True, timeout=900)
    table = pl.read_parquet(experiment / "results.parquet")
    assert table.height == 2 and table["status"].to_list() == ["finished", "finished"]
    assert table["epochs_run"].to_list() == [EPOCHS, EPOCHS]
    # Every trial of the study, whatever its state: a duplicate left RUNNING (or failed) counts.
    trials = _study_trials(experiment, "astra-driver")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2, trials
    values = sorted(t.value for t in trials)
    assert values == pytest.approx(sorted(table["best_valid_tight_a_map"].to_list()))
    # The unfinished trial went on from its last checkpoint: after the epochs it had trained (its
    # TensorBoard curve, written each epoch), the next run trained the others, none twice.
    assert table["trial_id"].to_list()[0] == unfinished
    runs = _trained_epochs(experiment / "trials" / unfinished)
    assert len(runs) >= 2 and runs[0][: len(before)] == before, runs
    epochs = [epoch for run in runs for epoch in run]
    assert epochs == sorted(set(epochs)) and epochs[-1] == EPOCHS, f"epochs trained, by process: {runs}"
    reported = [r["epoch"] for r in _tune_reports(experiment, unfinished)]
    assert len(reported) == len(set(reported)) and max(reported) == EPOCHS, reported


def _trained_epochs(trial: Path) -> list[list[int]]:
    """The epochs a trial trained, from its TensorBoard events: one list per process that trained it
    (each writes its own file), in the order they ran."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = []
    for path in sorted((trial / "run" / "tensorboard").glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), purge_orphaned_data=False)
        events.Reload()
        if "train_loss" in events.Tags()["scalars"]:
            runs.append([event.step for event in events.Scalars("train_loss")])
    return runs


def _tune_reports(experiment: Path, trial_id: str) -> list[dict[str, Any]]:
    """What a trial reported to Ray Tune, as Tune recorded it (in every run of the search)."""
    reports = []
    for path in sorted(experiment.glob(f"tune/*{trial_id}*/result.json")):
        reports += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return reports


def test_a_lost_node_does_not_lose_its_trial(
    tmp_path: Path, make_tiny_dataset: Callable[..., Any], tiny_overrides: list[str]
) -> None:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from astra.search.run import SearchOptions, run_search

    data = make_tiny_dataset(tmp_path / "data").root
    epochs = 3 * EPOCHS  # long enough to lose a node in the middle
    space = _space(tmp_path / "nodes.yaml", tiny_overrides, trials=1, epochs=epochs)
    experiment = tmp_path / "experiment"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    first = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=0, resources={"spare": 1})  # a node with no room for a trial yet
    lost: list[Any] = []
    replacement: list[subprocess.Popen[bytes]] = []
    search_over = threading.Event()

    def lose_the_first_node() -> None:
        try:
            _wait_for(lambda: search_over.is_set() or _last_checkpoint(experiment), "a first checkpoint")
            if search_over.is_set():
                return  # no node is started once the test is cleaning up
            cluster.remove_node(first, allow_graceful=False)
            lost.append(_reported_epochs(experiment))
            # Where the trial can go on. Not cluster.add_node: it starts Ray's processes with
            # signal handlers, which Python allows from the main thread only (ValueError here).
            command = ["ray", "start", f"--address={cluster.address}", "--num-cpus=1", "--block"]
            ray_cli = Path(sys.executable).with_name("ray")
            replacement.append(subprocess.Popen([str(ray_cli), *command[1:]], stdout=subprocess.DEVNULL))
        except BaseException as error:  # reported by the assertion below
            lost.append(error)

    ray.init(address=cluster.address)
    killer = threading.Thread(target=lose_the_first_node, daemon=True)
    try:
        killer.start()
        assert run_search(SearchOptions(space=str(space), data=str(data), experiment=str(experiment))) == 0
        killer.join(timeout=5)
    finally:
        search_over.set()
        killer.join(timeout=30)
        ray.shutdown()
        for process in replacement:  # ray start --block stops its node's processes on SIGTERM
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        cluster.shutdown()
    assert len(lost) == 1 and isinstance(lost[0], list), f"the node was not removed: {lost}"
    assert max(lost[0], default=0) < epochs, "the trial had finished before its node was lost"
    table = pl.read_parquet(experiment / "results.parquet")
    assert table["status"].to_list() == ["finished"]
    assert table["epochs_run"].to_list() == [epochs]
    epochs = _reported_epochs(experiment)
    assert epochs.count(1) == 1, f"the trial started over: reported epochs {epochs}"
