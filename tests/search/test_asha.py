"""A search with ASHA on a local Ray, its Optuna study in a journal file (``--storage``), validating
every other epoch; then the same command again, which resumes it and adds nothing.

One search serves every test of the module (Ray's start-up is most of its cost). The searched
Soft-NMS threshold makes the trials' scores predictable: at 0.01 (the base config's) a trial keeps
its detections and scores above 0; at 0.99 and above no detection is left (the tiny model's
outputs stay near 0.5) and it scores 0. So the first trial to draw a high threshold is below
every trial before it at ASHA's rung, and is stopped there.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import polars as pl
import pytest

from astra.search.run import SearchOptions, _scheduler, make_plan, run_search

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EPOCHS = 4
GRACE = 2  # ASHA's first rung: epoch 2; the second (epoch 4) is the last epoch
VALIDATE_EVERY = 2  # epochs 1 and 3 are not validated: the trials report at epochs 2 and 4 only
GOOD, BAD = 0.01, (0.99, 0.995, 0.999)
PARAMETERS = ["clips.class_radius_seconds", "inference.nms_threshold"]  # in the space's order
# The documented columns of results.parquet (astra/search/results.py, README), in order.
COLUMNS = [
    "trial_id", "number", "status", "error", *PARAMETERS, "epochs_run", "best_epoch",
    "best_valid_tight_a_map", "valid_tight_paper", "valid_loose_paper", "test_tight_paper",
    "test_loose_paper", "valid_tight_searched", "valid_loose_searched", "test_tight_searched",
    "test_loose_searched", "windows", "wall_seconds", "best_checkpoint", "valid_per_position",
    "test_per_position",
]  # fmt: skip


def _space(path: Path, overrides: list[str], tiny_space: Any, trials: int = 3) -> Path:
    return tiny_space(
        path, overrides, trials,
        settings={"train.epochs": EPOCHS, "train.patience_epochs": EPOCHS,
                  "train.validate_every_epochs": VALIDATE_EVERY},
        parameters={"inference.nms_threshold": {"choice": [GOOD, *BAD]},
                    "clips.class_radius_seconds": {"quniform": [1.0, 2.0, 0.5]}},
        asha={"enabled": True, "grace_epochs": GRACE, "reduction_factor": 2},
        windows={"search": True, "method": "grid", "low_seconds": 5.0, "high_seconds": 12.0},
        start_from_base=True,
    )  # fmt: skip


def _journal(path: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _tune_reports(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """What each trial reported to Ray Tune, by trial id (Tune's own record of it)."""
    reports: dict[str, list[dict[str, Any]]] = {}
    for path in (experiment / "tune").glob("*/result.json"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                report = json.loads(line)
                reports.setdefault(report["trial_id"], []).append(report)
    return reports


@pytest.fixture(scope="module")
def search(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_dataset: Any,
    tiny_overrides: list[str],
    tiny_space: Any,
    module_ray: None,
) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("asha")
    space = _space(tmp / "asha.yaml", tiny_overrides, tiny_space)
    journal = tmp / "studies" / "asha.journal"
    experiment = tmp / "experiment"
    options = SearchOptions(
        space=str(space), data=str(tiny_dataset.root), experiment=str(experiment), storage=str(journal)
    )
    assert run_search(options) == 0
    first = SimpleNamespace(
        table=pl.read_parquet(experiment / "results.parquet"),
        study=optuna.load_study(study_name="astra-asha", storage=_journal(journal)).trials,
        reports=_tune_reports(experiment),
        summary=(experiment / "summary.md").read_text(encoding="utf-8"),
        modified={p: p.stat().st_mtime_ns for p in experiment.glob("trials/*/*.json")},
    )
    # The same command again: the search is done, it resumes and runs nothing.
    assert run_search(options) == 0
    return SimpleNamespace(
        **first.__dict__,
        space=space,
        journal=journal,
        experiment=experiment,
        again_table=pl.read_parquet(experiment / "results.parquet"),
        again_study=optuna.load_study(study_name="astra-asha", storage=_journal(journal)).trials,
        again_modified={p: p.stat().st_mtime_ns for p in experiment.glob("trials/*/*.json")},
    )


def _rows(search: SimpleNamespace) -> list[dict[str, Any]]:
    return list(search.table.iter_rows(named=True))


def test_asha_stops_a_trial_at_its_rung_by_the_reported_epoch(search: SimpleNamespace) -> None:
    rows = _rows(search)
    drawn = [(r["inference.nms_threshold"], r["status"], r["epochs_run"]) for r in rows]
    assert rows[0]["status"] == "finished" and float(rows[0]["inference.nms_threshold"]) == GOOD, drawn
    bad = [r for r in rows if float(r["inference.nms_threshold"]) in BAD]
    assert bad, f"no trial drew a high threshold (change the search's seed): {drawn}"
    # The first one scored 0 at the rung of epoch 2, below every trial before it: stopped there.
    stopped = bad[0]
    assert stopped["status"] == "stopped", drawn
    assert stopped["epochs_run"] == GRACE < EPOCHS
    assert stopped["best_valid_tight_a_map"] == 0.0
    assert stopped["best_checkpoint"] is not None  # what it trained is kept (not reported on)
    # Its one report to Tune was its first (training_iteration 1) at epoch 2: ASHA's rung of
    # epoch 2 was reached by the epoch it reported, not by its count of reports.
    (report,) = search.reports[stopped["trial_id"]]
    assert (report["epoch"], report["training_iteration"]) == (GRACE, 1)
    # Every trial that ASHA let through trained to the last epoch and finished: none is stopped
    # on its last epoch (its training would be lost before it predicted and scored).
    for row in rows:
        assert row["status"] in ("finished", "stopped"), drawn
        assert (row["status"], row["epochs_run"]) in (("finished", EPOCHS), ("stopped", GRACE)), drawn
    summary = search.summary
    assert f"{sum(r['status'] == 'stopped' for r in rows)} stopped" in summary


def test_epochs_without_validation_are_never_reported_to_tune(search: SimpleNamespace) -> None:
    """Epochs 1 and 3 are trained but not validated: no report of theirs reaches Tune and ASHA,
    where their stale score would look like a fresh one."""
    rows = _rows(search)
    assert set(search.reports) == {row["trial_id"] for row in rows}
    for row in rows:
        reports = search.reports[row["trial_id"]]
        expected = [2, 4] if row["status"] == "finished" else [2]
        assert [r["epoch"] for r in reports] == expected, (row["trial_id"], reports)
        assert all(r["validated"] == 1.0 for r in reports)


def test_the_study_in_a_journal_file_holds_every_trial_and_a_resume_adds_none(
    search: SimpleNamespace,
) -> None:
    rows = _rows(search)
    study = search.study
    assert len(study) == len(rows)
    # Stopped trials too are complete, with their last reported score as value.
    assert [t.state for t in study] == [optuna.trial.TrialState.COMPLETE] * len(rows)
    assert all(set(t.params) == set(PARAMETERS) for t in study)

    def point(params: dict[str, Any], value: float) -> tuple[float, float, float]:
        return (float(params["inference.nms_threshold"]), params["clips.class_radius_seconds"], value)

    in_study = sorted(point(t.params, t.value) for t in study)
    in_table = sorted(point(r, r["best_valid_tight_a_map"]) for r in rows)
    assert [p[:2] for p in in_study] == [p[:2] for p in in_table]
    assert [p[2] for p in in_study] == pytest.approx([p[2] for p in in_table])
    # The journal is the study: no SQLite file beside it, and the search records where it is.
    assert not (search.experiment / "study.db").exists()
    definition = json.loads((search.experiment / "search.json").read_text(encoding="utf-8"))
    assert definition["options"]["storage"] == str(search.journal)

    # The same command again: nothing is added to the study, no trial runs again.
    assert [(t.number, t.state, t.params, t.value) for t in search.again_study] == [
        (t.number, t.state, t.params, t.value) for t in study
    ]
    assert search.again_modified == search.modified
    assert search.again_table.equals(search.table)


def test_the_results_table_plots_and_tensorboard_of_each_trial(
    search: SimpleNamespace, tiny_overrides: list[str]
) -> None:
    assert search.table.columns == COLUMNS
    rows = _rows(search)
    assert [r["number"] for r in rows] == list(range(len(rows)))
    # start_from_base: the first trial is the base config itself.
    base = make_plan(SearchOptions(space=str(search.space))).base
    assert float(rows[0]["inference.nms_threshold"]) == base.inference.nms_threshold
    assert rows[0]["clips.class_radius_seconds"] == base.clips.class_radius_seconds
    for row in rows:
        folder = search.experiment / "trials" / row["trial_id"]
        if row["status"] == "finished":
            result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
            assert row["wall_seconds"] == pytest.approx(result["wall_seconds"]) and row["wall_seconds"] > 0
            assert row["best_epoch"] == result["best_epoch"] and 1 <= row["best_epoch"] <= EPOCHS
            for split in ("valid", "test"):
                for metric in ("tight", "loose"):
                    for windows in ("paper", "searched"):
                        column = f"{split}_{metric}_{windows}"
                        assert row[column] == pytest.approx(result[column]), column
                assert row[f"{split}_per_position"] == str(folder / split / "per_position")
                assert list((folder / split / "per_position").rglob("per_position.npz"))
            assert len(row["windows"]) == 17
        else:  # stopped: what it trained, nothing it did not predict
            assert row["wall_seconds"] is None and row["windows"] is None
            assert row["test_loose_paper"] is None and row["valid_per_position"] is None
            assert row["best_epoch"] == GRACE
        # Each trial's own training curve, every epoch it trained (validated or not).
        events = list((folder / "run" / "tensorboard").glob("events.out.tfevents.*"))
        assert len(events) == 1, events
        assert _scalar_steps(events[0], "train_loss") == list(range(1, row["epochs_run"] + 1))
        assert _scalar_steps(events[0], "valid_tight_a_map") == list(
            range(VALIDATE_EVERY, row["epochs_run"] + 1, VALIDATE_EVERY)
        )
    plots = search.experiment / "plots"
    for name in ("score_by_trial", "valid_vs_test", "parameter_importance", "per_class"):
        assert (plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(plots/{name}.png)" in search.summary


def _scalar_steps(path: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path))
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def test_asha_never_stops_a_trial_on_its_last_epoch(
    tmp_path: Path, tiny_overrides: list[str], tiny_space: Any
) -> None:
    """The scheduler of the search, fed reports by hand: ranked at the rung of the epoch reported
    (whatever the count of reports), and never stopped on the last epoch, where a stop would lose a
    trial that has trained every epoch before it predicts and scores."""
    from ray.tune.schedulers import TrialScheduler

    space = _space(tmp_path / "asha.yaml", tiny_overrides, tiny_space)
    scheduler = _scheduler(make_plan(SearchOptions(space=str(space), experiment=str(tmp_path / "e"))))
    trials = [SimpleNamespace(trial_id=name) for name in ("a", "b", "c")]
    for trial in trials:
        scheduler.on_trial_add(None, trial)

    def report(trial: SimpleNamespace, epoch: int, iteration: int, score: float) -> str:
        result = {"epoch": epoch, "training_iteration": iteration, "best_valid_tight_a_map": score}
        return scheduler.on_trial_result(None, trial, result)

    a, b, c = trials
    assert report(a, 2, 1, 0.5) == TrialScheduler.CONTINUE
    assert report(a, 4, 2, 0.6) == TrialScheduler.CONTINUE
    # b is ranked at epoch 2 (its first report), above the rung's cut: it goes on ...
    assert report(b, 2, 1, 0.55) == TrialScheduler.CONTINUE
    # ... and is not stopped at the rung of epoch 4, its last, though below a's score there.
    assert report(b, 4, 2, 0.58) == TrialScheduler.CONTINUE
    # c's first report at epoch 2 is ranked at that rung (below the cut: stopped), not at a rung
    # of its number of reports.
    assert report(c, 2, 1, 0.1) == TrialScheduler.STOP
