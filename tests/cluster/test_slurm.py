"""cluster/slurm.sbatch's start-up, without SLURM: ``srun`` and ``scontrol`` are faked so that
every "node" of the allocation is this machine (two Ray nodes on one machine for a 2-node
allocation), and the search it runs must finish, with Ray stopped at the end."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

FAKE_SRUN = """#!/bin/bash
# srun on one machine: drop the placement options, run the command here.
while [[ $# -gt 0 ]]; do
    case "$1" in
        -w|--nodelist) shift 2 ;;
        --*) shift ;;
        *) break ;;
    esac
done
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
# scontrol show hostnames LIST: one name per line.
[[ "$1 $2" == "show hostnames" ]] || exit 2
tr ',' '\\n' <<< "$3"
"""


def _fake_slurm(folder: Path) -> Path:
    folder.mkdir()
    for name, body in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        path = folder / name
        path.write_text(body, encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


@pytest.mark.parametrize(
    "nodes", [pytest.param("n1", id="1-node"), pytest.param("n1,n2", id="2-node", marks=pytest.mark.slow)]
)
def test_the_sbatch_script_starts_ray_runs_the_search_and_stops_ray(
    nodes: str, tmp_path: Path, make_tiny_dataset: Callable[..., Any], tiny_overrides: list[str],
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    if shutil.which("bash") is None:
        pytest.skip("bash is needed")
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths
    request.addfinalizer(lambda: shutil.rmtree(ray_tmp, ignore_errors=True))
    data = make_tiny_dataset(tmp_path / "data").root
    settings = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in tiny_overrides)}
    settings.update({"train.epochs": 1, "train.warmup_epochs": 0, "train.patience_epochs": 1})
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "settings": settings,
                "parameters": {"loss.uncertainty_alpha": {"uniform": [0.2, 0.8]}},
                "budget": {"trials": 2, "concurrent": 2},
                "asha": {"enabled": False},
                "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
                "windows": {"search": False},
                "start_from_base": False,
            }
        ),
        encoding="utf-8",
    )
    count = len(nodes.split(","))
    environment = {
        **os.environ,
        "PATH": os.pathsep.join(
            [str(_fake_slurm(tmp_path / "bin")), str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "SLURM_JOB_NODELIST": nodes,
        "SLURM_CPUS_ON_NODE": str(2 // count),
        "SLURM_GPUS_ON_NODE": "0",
        "RAY_TMPDIR": str(ray_tmp),
        "ASTRA_PYTHON": sys.executable,
        "ASTRA_RUN_SEARCH": str(REPO / "run_search.py"),
        "ASTRA_RAY_PORT": "6391",
    }
    environment.pop("RAY_ADDRESS", None)
    experiment = tmp_path / "experiment"
    done = subprocess.run(
        ["bash", str(REPO / "cluster" / "slurm.sbatch"), "--space", str(space), "--data", str(data),
         "--experiment", str(experiment)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{count} Ray nodes up" in done.stdout
    table = pl.read_parquet(experiment / "results.parquet")
    assert table["status"].to_list() == ["finished", "finished"]
    # Ray is stopped at the end: no raylet of this test is left.
    left = subprocess.run(["pgrep", "-f", f"raylet.*{ray_tmp}"], capture_output=True, text=True).stdout
    assert not left.strip(), f"Ray processes left: {left}"
