"""The P1 report from run records written by hand: the verdicts, the tables, what is listed apart.

No training and no Ray: ``write_report`` reads only the records and the runs' bootstrap scores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from astra.protocols.report import compare, write_report

RESAMPLES = 20


def _record(row: str, seed: int, tight: float, status: str = "finished") -> dict[str, Any]:
    finished = status == "finished"
    value = tight if finished else None
    return {
        "row": row, "seed": seed, "status": status,
        "error": "ValueError: diverged" if status == "errored" else "",
        "epochs_run": 3 if finished else None, "best_epoch": 2 if finished else None,
        "best_valid_tight_a_map": value, "valid_tight": value, "valid_loose": value,
        "valid_visible": value, "valid_unshown": value, "test_tight": value,
        "test_loose": None if value is None else value + 0.1, "test_visible": value, "test_unshown": value,
        "test_tight_per_class": [tight] * 17 if finished else None,
        "resumed_after_epochs": (1 if seed == 0 else 0) if finished else None,
        "wall_seconds": 90.0 + seed if finished else None, "run_dir": f"runs/{row}/seed{seed}",
    }  # fmt: skip


def _scores(records: list[dict[str, Any]], spread: float) -> dict[tuple[str, int], np.ndarray]:
    """Bootstrap scores around each finished run's test score, at most ``spread`` away, in an order
    of the run's own (as if each run did better on other games)."""
    noise = np.linspace(-spread, spread, RESAMPLES)
    return {
        (r["row"], r["seed"]): r["test_tight"]
        + np.random.default_rng([r["seed"], len(r["row"])]).permutation(noise)
        for r in records
        if r["status"] == "finished"
    }


def _write(tmp_path: Path, records: list[dict[str, Any]], scores: dict, seeds: int) -> tuple[str, Any]:
    outcome = write_report(
        tmp_path, records, scores, rows=[("base", ["configs/small.yaml"]), ("m4", ["configs/small.yaml",
        "configs/ablations/m4.yaml"])], seeds=seeds, overrides=["train.epochs=3"], data="data",
        bootstrap=(RESAMPLES, 0),
    )  # fmt: skip
    return (tmp_path / "report.md").read_text(encoding="utf-8"), outcome


def test_six_consistent_seeds_and_an_interval_above_zero_are_beyond_the_noise(tmp_path: Path) -> None:
    records = [_record("base", s, 0.40 + 0.01 * s) for s in range(6)]
    records += [_record("m4", s, 0.43 + 0.01 * s + 0.001 * (s % 2)) for s in range(6)]
    scores = _scores(records, spread=0.005)
    comparison = compare(records, scores, "m4", "base")
    assert comparison is not None
    assert comparison.pairs == 6 and comparison.p_value == pytest.approx(2 / 64)
    assert comparison.interval[0] > 0 and not comparison.within_noise
    report, outcome = _write(tmp_path, records, scores, seeds=6)
    assert outcome.all_finished
    assert "| `m4` | +3.05 | +3.05 | 6 | 0.0312 |" in report
    assert "`m4` scores 3.05 points of tight a-mAP above `base`: beyond the noise" in report
    assert "| `base` | 6/6 | 42.50 ± 1.87 |" in report  # mean and sample std of 0.40..0.45
    assert "| Penalty | 42.50 ± 1.87 |" in report
    assert "resumed after 1 epochs" in report  # seed 0's wall time covers its last attempt only
    table = pl.read_parquet(tmp_path / "p1.parquet")
    assert table.height == 12 and table.schema["test_tight_per_class"] == pl.List(pl.Float64)


def test_five_seeds_that_all_agree_pass_at_the_sign_flip_floor_and_the_report_says_so(tmp_path: Path) -> None:
    records = [_record("base", s, 0.40) for s in range(5)] + [_record("m4", s, 0.45) for s in range(5)]
    scores = _scores(records, spread=0.001)
    comparison = compare(records, scores, "m4", "base")
    assert comparison is not None and comparison.p_value == pytest.approx(1 / 16)
    assert comparison.interval[0] > 0 and not comparison.within_noise
    report, _ = _write(tmp_path, records, scores, seeds=5)
    assert (
        "beyond the noise (p = 0.0625 over 5 paired seeds, the smallest 5 pairs can give: "
        "every seed agrees in sign;" in report
    )


def test_five_seeds_with_one_against_and_four_seeds_that_agree_are_within_the_noise(tmp_path: Path) -> None:
    records = [_record("base", s, 0.40) for s in range(5)]
    records += [_record("m4", s, 0.45 if s else 0.39) for s in range(5)]  # seed 0 below the base
    scores = _scores(records, spread=0.001)
    comparison = compare(records, scores, "m4", "base")
    assert comparison is not None and comparison.p_value == pytest.approx(
        4 / 32
    )  # as observed, or seed 0 flipped, and both negated
    assert comparison.within_noise
    report, _ = _write(tmp_path, records, scores, seeds=5)
    assert "within the noise, since the sign-flip p over 5 paired seeds is" in report

    four = [_record("base", s, 0.40) for s in range(4)] + [_record("m4", s, 0.45) for s in range(4)]
    comparison = compare(four, _scores(four, spread=0.001), "m4", "base")
    assert comparison is not None and comparison.p_value == pytest.approx(2 / 16) and comparison.within_noise
    report, _ = _write(tmp_path, four, _scores(four, spread=0.001), seeds=4)
    assert "(the smallest 4 pairs can give is 0.1250)" in report


def test_an_interval_holding_zero_is_within_the_noise_and_failed_runs_are_listed(tmp_path: Path) -> None:
    records = [_record("base", s, 0.40 + 0.02 * s) for s in range(3)]
    records += [_record("m4", 0, 0.41), _record("m4", 1, 0.0, "errored"), _record("m4", 2, 0.0, "unfinished")]
    scores = _scores(records, spread=0.05)
    report, outcome = _write(tmp_path, records, scores, seeds=3)
    assert not outcome.all_finished and "1 errored, 1 unfinished" in outcome.summary
    assert "| `m4` | 1/3 | 41.00 |" in report  # one seed: no standard deviation
    assert "the interval over test games, [" in report and "contains 0" in report
    assert "- `m4` seed 1: errored: ValueError: diverged" in report
    assert "- `m4` seed 2: not finished (run the command again to resume it)" in report


def test_a_row_without_a_finished_seed_is_shown_and_not_compared(tmp_path: Path) -> None:
    records = [_record("base", 0, 0.4), _record("m4", 0, 0.0, "errored")]
    report, _ = _write(tmp_path, records, _scores(records, spread=0.01), seeds=1)
    assert "| `m4` | 0/1 | - |" in report and "## Against" not in report


@pytest.mark.parametrize(
    "module", ["astra.protocols.statistics", "astra.protocols.report", "astra.protocols.p1"]
)
def test_the_protocol_modules_import_neither_torch_nor_ray(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "print(','.join(sorted(m for m in ('torch', 'ray', 'scipy') if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "", f"importing {module} imports {result.stdout.strip()}"
