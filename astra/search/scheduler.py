"""The search's ASHA: trials compared at rungs of the reported epoch, and a trial that reports its
last epoch never stopped (it goes on to predict, search its windows and write its result)."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler


class LastEpochASHA(AsyncHyperBandScheduler):
    """Ray's ASHA, except that a report of the last epoch (``max_t``) never stops its trial.

    Ray puts a rung at ``max_t`` itself when ``max_t / grace_period`` is a power of the
    reduction factor (8 epochs, grace 2, factor 2: rungs at 2, 4 and 8), and
    ``stop_last_trials=False`` does not keep a trial from being stopped there: a trial that had
    trained every epoch would be stopped on its last report, before it predicted, searched its
    windows and wrote its result, all its training lost. The trial's score is still recorded at
    that rung; only the stop is not carried out.
    """

    def __init__(self, *, time_attr: str, max_t: int, **kwargs: Any) -> None:
        super().__init__(time_attr=time_attr, max_t=max_t, stop_last_trials=False, **kwargs)
        self.last_time_attr = time_attr
        self.last = max_t

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self.last_time_attr, 0) >= self.last:
            self._num_stopped -= 1  # Ray's own count, shown in Tune's status lines
            return TrialScheduler.CONTINUE
        return action
