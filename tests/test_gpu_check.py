"""benchmarks/gpu_check.sh, the GPU path's one script, rehearsed on the CPU: every step runs and it
ends green, so that the script is ready for the day a GPU is at hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_rehearses_every_step_on_the_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "check")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    steps = [line for line in completed.stdout.splitlines() if line.startswith("== ")]
    assert [step.split(" (")[0] for step in steps] == [
        "== machine",
        "== where a bf16 step goes",
        "== training throughput, small preset",
        "== torch.compile of the training step against eager, bf16",
        "== inference of a half, small preset",
        "== end to end on a simulated dataset: train",
        "== done",
    ], steps
    assert "s per step" in completed.stdout and "windows/s" in completed.stdout


def test_the_gpu_check_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    completed = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "mine")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert completed.returncode == 2 and "was not made by this script" in completed.stderr
