"""``astra p1`` end to end on a local Ray: two rows (the base and an ablation file) with two seeds
of one epoch on the tiny dataset, then a rerun that trains nothing and keeps the report, then
another configuration into the same folder, refused. Bad input is refused before anything runs.

One end-to-end test, because Ray's start-up is most of its cost; each step asserts what a user
relies on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from astra.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _settings(tiny_overrides: list[str]) -> list[str]:
    """The tiny config, trained for one epoch (validated: the last epoch always is)."""
    kept = [o for o in tiny_overrides if not o.startswith(("train.epochs=", "train.warmup_epochs="))]
    return [*kept, "train.epochs=1", "train.warmup_epochs=0"]


def test_p1_trains_two_rows_over_two_seeds_reports_and_resumes_without_training(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_tiny_dataset: Callable[..., Any],
    tiny_overrides: list[str],
    local_ray: None,
) -> None:
    data = make_tiny_dataset(tmp_path / "data").root
    ablation = tmp_path / "alpha.yaml"
    ablation.write_text("loss:\n  uncertainty_alpha: 0.6\n", encoding="utf-8")
    out = tmp_path / "p1"
    command = [
        "p1", "--ablations", str(ablation), "--seeds", "2", "--data", str(data), "--out", str(out),
        "--bootstrap", "50", *_settings(tiny_overrides),
    ]  # fmt: skip

    assert main(command) == 0
    table = pl.read_parquet(out / "p1.parquet")
    assert table.select("row", "seed").rows() == [("base", 0), ("base", 1), ("alpha", 0), ("alpha", 1)]
    assert table["status"].to_list() == ["finished"] * 4
    for run in table.iter_rows(named=True):
        folder = out / "runs" / run["row"] / f"seed{run['seed']}"
        assert Path(run["run_dir"]) == folder
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        # Each run trained its own seed, with its row's configuration.
        config = json.loads((folder / "run" / "run.json").read_text(encoding="utf-8"))["config"]
        assert config["train"]["seed"] == run["seed"]
        assert config["loss"]["uncertainty_alpha"] == (0.6 if run["row"] == "alpha" else 0.3)
        assert (folder / "run" / "checkpoints" / "best.pt").is_file()
        for split in ("valid", "test"):
            assert any((folder / split / "per_position").iterdir())
        assert run["epochs_run"] == 1 and run["best_epoch"] == 1
        assert run["test_tight"] == pytest.approx(result["test_tight_paper"])
        assert run["valid_loose"] == pytest.approx(result["valid_loose_paper"])
        assert len(run["test_tight_per_class"]) == 17
        assert run["wall_seconds"] > 0
        # The tiny test split has one game: every resample is that game, scored as the run was.
        bootstrap = json.loads((folder / "bootstrap.json").read_text(encoding="utf-8"))
        assert len(bootstrap["scores"]) == 50
        assert bootstrap["scores"] == pytest.approx([run["test_tight"]] * 50, abs=1e-12)
    report = (out / "report.md").read_text(encoding="utf-8")
    for row in ("base", "alpha"):
        line = next(line for line in report.splitlines() if line.startswith(f"| `{row}` | 2/2 |"))
        assert line.count("±") >= 5, line  # tight, loose, visible, not shown, valid, ...
        mean = 100 * table.filter(pl.col("row") == row)["test_tight"].mean()
        assert f"{mean:.2f} ±" in line
    assert "## Against `base`" in report and "sign-flip p" in report
    assert "`alpha` scores" in report and "within the noise" in report  # 2 seeds: p >= 0.5
    assert {p.name for p in (out / "plots").iterdir()} == {"per_class.png", "tight_a_map.png"}

    # The same command again: every run is done, nothing trains, no Ray starts.
    modified = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.json")}
    capsys.readouterr()
    started = time.monotonic()
    assert main(command) == 0
    assert time.monotonic() - started < 20
    assert "all 4 runs are done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.json")} == modified
    assert (out / "report.md").read_text(encoding="utf-8") == report

    # Other bootstrap settings: the resamples are drawn again from the runs' test outputs, no training.
    # A speed switch changed is not another configuration.
    assert (
        main([*command, "--bootstrap", "30", "--bootstrap-seed", "7", "train.prepare_audio_in_loader=true"])
        == 0
    )
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.json")} == modified
    for path in out.glob("runs/*/*/bootstrap.json"):
        redrawn = json.loads(path.read_text(encoding="utf-8"))
        assert (len(redrawn["scores"]), redrawn["seed"]) == (30, 7)
    assert "30 resamples of the test games (seed 7)" in (out / "report.md").read_text(encoding="utf-8")

    # Another configuration into the same folder: refused, naming what differs.
    assert main([*command, "loss.focal_gamma=2"]) == 2
    error = capsys.readouterr().err
    assert "holds another P1" in error and "loss.focal_gamma: 1.0 there, 2.0 here" in error
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.json")} == modified

    # Without p1.json, a run folder of another configuration is still refused, before Ray starts.
    (out / "p1.json").unlink()
    (out / "runs" / "base" / "seed0" / "result.json").unlink()
    assert main([*command, "loss.focal_gamma=2"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"astra p1: error: row 'base' seed 0: {out / 'runs' / 'base' / 'seed0' / 'run'}")
    assert "loss.focal_gamma: 1.0 there, 2.0 now" in error and "Traceback" not in error
    assert not (out / "p1.json").exists()  # nothing recorded for a refused command


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--seeds", "0"], "--seeds must be at least 1, got 0"),
        (["--config", "{tmp}/nowhere.yaml"], "--config {tmp}/nowhere.yaml: no such file"),
        (["--ablations", "{tmp}/missing.yaml"], "--ablations {tmp}/missing.yaml: no such file"),
        (["--ablations", "{tmp}/a/m4.yaml", "{tmp}/b/m4.yaml"], "two rows are named 'm4'"),
        (["--name", "m4", "--ablations", "{tmp}/a/m4.yaml"], "two rows are named 'm4'"),
        (["train.seed=3"], "train.seed is set by P1 itself"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--bootstrap", "0"], "--bootstrap must be at least 1 resample, got 0"),
    ],
)
def test_bad_input_is_refused_with_a_sentence_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_dataset: Any,
    arguments: list[str],
    message: str,
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m4.yaml").write_text("loss:\n  uncertainty_alpha: 0.5\n", encoding="utf-8")
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    out = tmp_path / "out"
    status = main(["p1", "--data", str(tiny_dataset.root), "--out", str(out), *arguments])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("astra p1: error: ") and message.replace("{tmp}", str(tmp_path)) in error
    assert "Traceback" not in error
    assert not out.exists()  # refused before anything is written


def test_data_without_the_splits_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["p1", "--data", str(empty), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert str(empty) in error and "official games of split 'train'" in error
    assert main(["p1", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert f"--data {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err


@pytest.mark.slow
def test_a_half_trained_run_resumes_and_more_seeds_train_only_what_they_add(
    tmp_path: Path,
    make_tiny_dataset: Callable[..., Any],
    tiny_overrides: list[str],
    tiny_config: Callable[..., Any],
    local_ray: None,
) -> None:
    """Seed 0 was cut short after one of its two epochs (trained here with fit, as a killed run
    leaves it): P1 resumes it from its last.pt and trains seed 1 from scratch. Then --seeds 3 with
    --workers 2 trains seed 2 alone, on two Ray Train workers."""
    from astra.data.dataset import DataRoots
    from astra.training.loop import fit

    data = make_tiny_dataset(tmp_path / "data").root
    out = tmp_path / "p1"
    settings = [*_settings(tiny_overrides)[:-2], "train.epochs=2", "train.warmup_epochs=0"]
    fit(
        tiny_config(*settings, "train.epochs=1", "train.seed=0"), DataRoots.single(data),
        out / "runs" / "base" / "seed0" / "run", progress=False,
    )  # fmt: skip
    command = ["p1", "--data", str(data), "--out", str(out), "--bootstrap", "20", *settings]
    assert main([*command, "--seeds", "2"]) == 0
    table = pl.read_parquet(out / "p1.parquet")
    assert table.select("seed", "status", "epochs_run", "resumed_after_epochs").rows() == [
        (0, "finished", 2, 1),
        (1, "finished", 2, 0),
    ]
    assert "seed 0: resumed after 1 epochs" in (out / "report.md").read_text(encoding="utf-8")

    modified = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.json")}
    assert main([*command, "--seeds", "3", "--workers", "2", "--cpus-per-worker", "0.5"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.json") if p in modified} == modified
    table = pl.read_parquet(out / "p1.parquet")
    assert table["status"].to_list() == ["finished"] * 3
    assert table.filter(pl.col("seed") == 2)["epochs_run"].to_list() == [2]
    # Seed 2 trained under Ray Train: rank 1 kept its files apart, Ray kept one checkpoint.
    seed2 = out / "runs" / "base" / "seed2"
    assert (seed2 / "run" / "rank1").is_dir()
    assert len([p for p in (seed2 / "run" / "ray").rglob("checkpoint_*") if p.is_dir()]) == 1
    assert "| `base` | 3/3 |" in (out / "report.md").read_text(encoding="utf-8")
