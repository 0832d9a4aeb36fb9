"""The search end to end on a local Ray: two short trials on the tiny dataset, then a resume that
runs nothing again and adds nothing to the Optuna study, then a report rebuilt from the disk.

One test, because Ray's start-up is most of its cost; each step asserts what a user relies on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import polars as pl
import pytest
import yaml

from astra.search.run import SearchOptions, run_search

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_search_runs_resumes_without_duplicates_and_reports(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_tiny_dataset: Callable[..., Any],
    tiny_overrides: list[str],
    tiny_space: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    # A cluster recorded on this machine that is gone (killed without `ray stop`) must not
    # stall the search: Ray's own retries take many minutes; the search starts a local Ray.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    request.addfinalizer(lambda: shutil.rmtree(ray_tmp, ignore_errors=True))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    data = make_tiny_dataset(tmp_path / "data").root
    space = tiny_space(tmp_path / "tiny.yaml", tiny_overrides, trials=2)
    experiment = tmp_path / "experiment"
    options = SearchOptions(space=str(space), data=str(data), experiment=str(experiment), seed=3)

    assert run_search(options) == 0
    out = capsys.readouterr().out
    assert "best trial" in out.lower() and str(experiment) in out

    table = pl.read_parquet(experiment / "results.parquet")
    assert table.height == 2
    assert table["status"].to_list() == ["finished", "finished"]
    assert table["train.base_learning_rate"].n_unique() == 2  # two proposals, not one twice
    for row in table.iter_rows(named=True):
        folder = experiment / "trials" / row["trial_id"]
        result = json.loads((folder / "result.json").read_text())
        # The trial's score is its best validated epoch's, and its test figures come from that
        # same checkpoint: best.pt, which predicted both splits.
        assert result["best_valid_tight_a_map"] == pytest.approx(row["best_valid_tight_a_map"])
        assert Path(row["best_checkpoint"]) == folder / "run" / "checkpoints" / "best.pt"
        for split in ("valid", "test"):
            assert any((folder / split / "per_position").iterdir())
        windows = yaml.safe_load((folder / "windows.yaml").read_text())
        assert len(windows["nms_windows_seconds"]) == 17
        assert len(row["windows"]) == 17
        # Searched windows never score lower on the split they were searched on.
        assert row["valid_tight_searched"] >= row["valid_tight_paper"] - 1e-9
        # Only the last and best checkpoints are kept.
        kept = sorted(p.name for p in (folder / "run" / "checkpoints").iterdir())
        assert set(kept) <= {"best.pt", "last.pt", "best-previous.pt"}, kept
    assert (experiment / "summary.md").is_file()
    assert {p.name for p in (experiment / "plots").iterdir()} >= {"score_by_trial.png", "valid_vs_test.png"}
    # Ray keeps no copies of the checkpoints: a trial resumes from its own last.pt.
    assert not [p for p in (experiment / "tune").rglob("checkpoint_*")]
    assert list((experiment / "tune").rglob("events.out.tfevents.*"))  # TensorBoard, per trial

    study = optuna.load_study(study_name="astra-tiny", storage=f"sqlite:///{experiment / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert sorted(t.value for t in study.trials) == sorted(table["best_valid_tight_a_map"].to_list())

    # Re-running the same search finds both trials done: nothing trains, nothing is added.
    modified = {p: p.stat().st_mtime_ns for p in experiment.glob("trials/*/result.json")}
    assert run_search(options) == 0
    assert {p: p.stat().st_mtime_ns for p in experiment.glob("trials/*/result.json")} == modified
    study = optuna.load_study(study_name="astra-tiny", storage=f"sqlite:///{experiment / 'study.db'}")
    assert len(study.trials) == 2
    assert pl.read_parquet(experiment / "results.parquet").height == 2

    # A larger budget continues the same study: one trial more, and only one.
    more = SearchOptions(**{**options.__dict__, "trials": 3, "resume": True})
    assert run_search(more) == 0
    study = optuna.load_study(study_name="astra-tiny", storage=f"sqlite:///{experiment / 'study.db'}")
    assert len(study.trials) == 3
    table = pl.read_parquet(experiment / "results.parquet")
    assert table["status"].to_list() == ["finished"] * 3
    assert table["train.base_learning_rate"].n_unique() == 3  # not a repeat of an earlier proposal

    # --report rebuilds the table and the summary from the files alone.
    (experiment / "summary.md").unlink()
    (experiment / "results.parquet").unlink()
    capsys.readouterr()
    assert run_search(SearchOptions(experiment=str(experiment), report=True)) == 0
    assert pl.read_parquet(experiment / "results.parquet").height == 3
    assert "best" in (experiment / "summary.md").read_text().lower()

    # An ensemble of the search's trials: chosen on valid, written for valid and test.
    from astra.ensemble.build import EnsembleOptions, build_ensemble

    record = build_ensemble(EnsembleOptions(experiment=str(experiment), top=2))
    assert 1 <= len(record["members"]) <= 2
    assert set(record["members"]) <= set(table["trial_id"].to_list())
    best_valid = max(table["valid_tight_paper"].to_list())
    assert record["valid_selection_score"] >= best_valid - 1e-9  # greedy starts from the best trial
    assert (Path(record["out"]) / "test" / "predictions.zip").is_file()


def test_a_trial_under_ray_train_trains_predicts_and_scores(
    tmp_path: Path,
    make_tiny_dataset: Callable[..., Any],
    tiny_overrides: list[str],
    tiny_space: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Two DDP workers per trial: the trial trains under a TorchTrainer, then predicts and searches
    its windows in a task outside the trial's placement group (which holds only its own process)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(ray_tmp, ignore_errors=True))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    data = make_tiny_dataset(tmp_path / "data").root
    resources = {"workers": 2, "cpus_per_worker": 0.5, "gpus_per_worker": 0}
    space = tiny_space(tmp_path / "ddp.yaml", tiny_overrides, trials=1, resources=resources)
    experiment = tmp_path / "experiment"
    assert run_search(SearchOptions(space=str(space), data=str(data), experiment=str(experiment))) == 0
    (row,) = pl.read_parquet(experiment / "results.parquet").iter_rows(named=True)
    assert row["status"] == "finished" and row["epochs_run"] == 2
    assert row["test_tight_paper"] is not None and len(row["windows"]) == 17
    # Ray Train keeps its latest checkpoint only (what it resumes from), not one per epoch.
    copies = [p for p in (experiment / "trials" / row["trial_id"]).rglob("checkpoint_*") if p.is_dir()]
    assert len(copies) == 1, copies
