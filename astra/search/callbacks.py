"""Ray Tune callbacks of the search driver: the results table kept current, a progress line."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from astra.search.space import SearchSpace
from astra.storage import Mirror

log = logging.getLogger("astra.search")


class ResultsTable(Callback):
    """Rewrites ``results.parquet`` as trials report, finish or fail (at most every ``interval`` s)."""

    def __init__(
        self,
        experiment: Path,
        space: SearchSpace,
        interval_seconds: float = 15.0,
        mirror: Mirror | None = None,
    ) -> None:
        self.experiment = experiment
        self.space = space
        self.interval_seconds = interval_seconds
        self.statuses: dict[str, str] = {}
        self._written = 0.0
        self.mirror = mirror  # an experiment on object storage: its local copy is kept in step

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.statuses[trial.trial_id] = "running"
        self._push_state()  # a new trial is on the storage's record before it trains

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.statuses[trial.trial_id] = "running"
        self._write(force=False)

    def _push_state(self) -> None:
        """Ray Tune's state and the Optuna study to the storage: what a driver started elsewhere
        resumes from, should this one be lost."""
        if self.mirror is None:
            return
        try:
            for sub in ("tune", "study.db", "search.json"):
                self.mirror.push(sub)
        except (OSError, ValueError) as error:
            log.warning("could not copy the search's state to %s: %s", self.mirror.uri, error)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.statuses.pop(trial.trial_id, None)  # finished or stopped: the trial's files say which
        self._sync(trial, lambda: self._write(force=True))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.statuses[trial.trial_id] = "errored"
        self._sync(trial, lambda: self._write(force=True))

    def _sync(self, trial: Any, write: Any) -> None:
        """``write()`` between bringing the trial's folder from the storage (it may have run on
        another node) and copying the experiment there."""
        if self.mirror is None:
            write()
            return
        try:
            self.mirror.pull(f"trials/{trial.trial_id}")
        except (OSError, ValueError) as error:
            log.warning("could not bring trial %s from %s: %s", trial.trial_id, self.mirror.uri, error)
        write()
        try:
            self.mirror.push()
        except (OSError, ValueError) as error:  # the next push copies it; the search goes on
            log.warning("could not copy the experiment to %s: %s", self.mirror.uri, error)

    def _write(self, *, force: bool) -> None:
        if not force and time.monotonic() - self._written < self.interval_seconds:
            return
        from astra.search.results import trial_rows, write_results

        try:
            write_results(self.experiment, trial_rows(self.experiment, self.space, self.statuses), self.space)
        except OSError as error:  # the table is a view: the search goes on without it
            log.warning("could not write the results table: %s", error)
        self._written = time.monotonic()


class ProgressLine(Callback):
    """One line now and then: trials running, done, stopped, errored; best so far; time left."""

    def __init__(self, trials: int, concurrent: int, interval_seconds: float = 30.0) -> None:
        self.trials = trials
        self.concurrent = concurrent
        self.interval_seconds = interval_seconds
        self.started = time.monotonic()
        self._printed = 0.0
        self.best: tuple[float, str] = (-1.0, "")
        self.durations: list[float] = []
        self.started_at: dict[str, float] = {}
        self.done = {"complete": 0, "errored": 0}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started_at.setdefault(trial.trial_id, time.monotonic())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        score = result.get("best_valid_tight_a_map")
        if score is not None and score > self.best[0]:
            self.best = (float(score), trial.trial_id)
        self._line(trials, force=False)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial)
        self.done["complete"] += 1
        self._line(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial)
        self.done["errored"] += 1
        self._line(trials, force=True)

    def _finished(self, trial: Any) -> None:
        start = self.started_at.pop(trial.trial_id, None)
        if start is not None:
            self.durations.append(time.monotonic() - start)

    def _line(self, trials: list, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._printed < self.interval_seconds:
            return
        self._printed = now
        running = sum(t.status == "RUNNING" for t in trials)
        ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        left = max(0, self.trials - ended)
        elapsed = now - self.started
        estimate = ""
        if self.durations and left:
            mean = sum(self.durations) / len(self.durations)
            estimate = f", about {left * mean / max(1, self.concurrent) / 60:.0f} min left"
        best = f"best so far {self.best[0]:.4f} ({self.best[1]})" if self.best[1] else "no score yet"
        log.info(
            "trials: %d running, %d done (%d errored), %d to go; %s; %.0f min%s",
            running, ended, self.done["errored"], left, best, elapsed / 60, estimate,
        )  # fmt: skip
