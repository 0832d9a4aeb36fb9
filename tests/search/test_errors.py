"""A trial that fails with an error a retry would meet again (here a drawn config that cannot train)
is recorded with its error, and the search goes on to run and finish the others.

The Optuna study is in a database given with ``--storage`` (an SQLite URL outside the experiment
folder), created beforehand with two points enqueued: the first trial draws ``model.num_heads: 3``
(the tiny model's ``d_model`` of 16 does not divide by 3), the second a config that trains.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import polars as pl
import pytest

from astra.search.run import SearchOptions, run_search

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

INVALID = {"clips.class_radius_seconds": 1.5, "model.num_heads": 3}
VALID = {"clips.class_radius_seconds": 1.0, "model.num_heads": 2}
MESSAGE = "model.d_model (16) must be a multiple of model.num_heads (3)"


def test_an_errored_trial_is_recorded_with_its_error_and_the_search_goes_on(
    tmp_path: Path,
    tiny_dataset: Any,
    tiny_overrides: list[str],
    tiny_space: Callable[..., Path],
    local_ray: None,
) -> None:
    space = tiny_space(
        tmp_path / "errors.yaml", tiny_overrides, trials=2,
        parameters={"model.num_heads": {"choice": [2, 3]},
                    "clips.class_radius_seconds": {"quniform": [1.0, 2.0, 0.5]}},
        settings={"train.epochs": 1, "train.warmup_epochs": 0, "train.patience_epochs": 1},
        windows={"search": False},
    )  # fmt: skip
    storage = f"sqlite:///{tmp_path / 'studies' / 'all.db'}"
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(storage=storage, study_name="astra-errors", direction="maximize")
    study.enqueue_trial(INVALID)
    study.enqueue_trial(VALID)
    experiment = tmp_path / "experiment"
    options = SearchOptions(
        space=str(space), data=str(tiny_dataset.root), experiment=str(experiment), storage=storage
    )
    assert run_search(options) == 0

    table = pl.read_parquet(experiment / "results.parquet")
    errored, finished = table.iter_rows(named=True)
    assert errored["status"] == "errored"
    assert errored["error"] == f"ConfigError: {MESSAGE}"
    # What was drawn, to see what failed (a choice's values are shown as text), in its turn.
    assert (errored["model.num_heads"], errored["clips.class_radius_seconds"]) == ("3", 1.5)
    assert (errored["number"], finished["number"]) == (0, 1)
    assert errored["epochs_run"] is None and errored["best_valid_tight_a_map"] is None
    folder = experiment / "trials" / errored["trial_id"]
    assert json.loads((folder / "error.json").read_text())["error"] == f"ConfigError: {MESSAGE}"
    assert not (folder / "run").exists()  # nothing trained, not even on Tune's retries
    # The search went on: the next trial trained, predicted and scored.
    assert finished["status"] == "finished" and finished["error"] == ""
    assert (finished["model.num_heads"], finished["clips.class_radius_seconds"]) == ("2", 1.0)
    assert finished["epochs_run"] == 1 and finished["test_tight_paper"] is not None
    summary = (experiment / "summary.md").read_text()
    assert "1 finished, 1 errored" in summary
    assert f"- {errored['trial_id']}: ConfigError: {MESSAGE}" in summary

    # The study given with --storage holds both, the failed one as failed; the folder has none.
    trials = optuna.load_study(study_name="astra-errors", storage=storage).trials
    assert [(t.state, t.params) for t in trials] == [
        (optuna.trial.TrialState.FAIL, INVALID),
        (optuna.trial.TrialState.COMPLETE, VALID),
    ]
    assert trials[1].value == pytest.approx(finished["best_valid_tight_a_map"])
    assert not (experiment / "study.db").exists()


def test_what_a_trial_raises_reaches_the_driver_as_an_error_of_its_own_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The driver unpickles what a trial raises; one error it cannot rebuild ended a whole search.
    # A trial raises this module's errors, the original's type, message and traceback in the text.
    import pickle
    import subprocess
    import sys
    from types import SimpleNamespace

    import ray.tune

    from astra.search import trial
    from astra.training.loop import DivergenceError

    monkeypatch.setattr(ray.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t1"))
    context = SimpleNamespace(
        trial_dir=lambda trial_id: tmp_path / trial_id, mirror=None, data_mirrors=()
    )  # fmt: skip
    raised = {}
    for name, error in (
        ("deterministic", DivergenceError("the loss became nan")),
        ("other", OSError(5, "disk")),
    ):

        def fail(*_: Any, error: Exception = error) -> None:
            raise error

        monkeypatch.setattr(trial, "_run_trial", fail)
        (tmp_path / "t1").mkdir(exist_ok=True)
        with pytest.raises((trial.TrialError, trial.TrialFailure)) as caught:
            trial.run_trial({}, context)  # type: ignore[arg-type]
        raised[name] = caught.value
        assert caught.value.__cause__ is None
        (tmp_path / "t1" / trial.ERROR_NAME).unlink(missing_ok=True)
    assert type(raised["deterministic"]) is trial.TrialError
    assert str(raised["deterministic"]).startswith("DivergenceError: the loss became nan")
    assert "raise error" in str(raised["deterministic"])  # the traceback travels in the text
    assert type(raised["other"]) is trial.TrialFailure  # retried by Tune
    assert str(raised["other"]).startswith("OSError: [Errno 5] disk")
    # A process that has imported what the driver imports (not astra.training) rebuilds both.
    code = (
        "import pickle, sys; import astra.search.run; "
        "errors = pickle.loads(sys.stdin.buffer.read()); "
        "assert 'astra.training.loop' not in sys.modules; print([type(e).__name__ for e in errors])"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(list(raised.values())), capture_output=True
    )
    assert completed.returncode == 0, completed.stderr.decode()
    assert completed.stdout.decode().strip() == "['TrialError', 'TrialFailure']"


def test_a_diverging_trial_is_recorded_and_the_search_goes_on(
    tmp_path: Path,
    tiny_dataset: Any,
    tiny_overrides: list[str],
    tiny_space: Callable[..., Path],
    local_ray: None,
) -> None:
    space = tiny_space(
        tmp_path / "diverge.yaml", tiny_overrides, trials=2,
        parameters={"train.base_learning_rate": {"loguniform": [1.0e-4, 1.0e6]}},
        settings={"train.epochs": 2, "train.warmup_epochs": 0, "train.patience_epochs": 2},
        windows={"search": False},
    )  # fmt: skip
    storage = f"sqlite:///{tmp_path / 'diverge.db'}"
    study = optuna.create_study(storage=storage, study_name="astra-diverge", direction="maximize")
    study.enqueue_trial({"train.base_learning_rate": 1.0e6})
    study.enqueue_trial({"train.base_learning_rate": 1.0e-3})
    experiment = tmp_path / "experiment"
    options = SearchOptions(
        space=str(space), data=str(tiny_dataset.root), experiment=str(experiment), storage=storage
    )
    assert run_search(options) == 0
    diverged, finished = pl.read_parquet(experiment / "results.parquet").iter_rows(named=True)
    assert diverged["status"] == "errored"
    assert diverged["error"].startswith("DivergenceError: the training loss became nan at epoch 1/2")
    assert finished["status"] == "finished" and finished["epochs_run"] == 2
