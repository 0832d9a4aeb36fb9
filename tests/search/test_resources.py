"""What a trial asks of Ray, and a trial bigger than the Ray it would run on."""

from __future__ import annotations

import logging

import pytest

from astra.search.run import SearchError, _check_trial_fits
from astra.search.space import TRAIN_DRIVER_CPUS, Resources


def test_a_ray_train_trial_holds_its_workers_and_its_own_process() -> None:
    assert Resources(workers=1, cpus_per_worker=2).trial_cpus == 2
    assert Resources(workers=2, cpus_per_worker=1).trial_cpus == pytest.approx(2 + TRAIN_DRIVER_CPUS)
    assert Resources(workers=4, gpus_per_worker=0.5).trial_gpus == 2


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})


@pytest.mark.usefixtures("two_cpus")
def test_a_trial_bigger_than_a_local_ray_is_refused_with_what_to_change() -> None:
    with pytest.raises(SearchError, match=r"2\.01 CPUs \(the Ray cluster has 2\).*cpus_per_worker"):
        _check_trial_fits(Resources(workers=2, cpus_per_worker=1), local=True)
    with pytest.raises(SearchError, match=r"1 GPUs \(the Ray cluster has 0\)"):
        _check_trial_fits(Resources(workers=1, gpus_per_worker=1), local=True)
    _check_trial_fits(Resources(workers=2, cpus_per_worker=0.99), local=True)  # fits


@pytest.mark.usefixtures("two_cpus")
def test_on_a_joined_cluster_a_trial_too_big_for_now_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="astra.search"):
        _check_trial_fits(Resources(workers=4, cpus_per_worker=1), local=False)
    assert "autoscaler" in caplog.text and "4.01 CPUs" in caplog.text
