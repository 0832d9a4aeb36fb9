"""cluster/slurm.sbatch's start-up, without SLURM: ``srun`` and ``scontrol`` are faked so that
every "node" of the allocation is this machine (two Ray nodes on one machine for a 2-node
allocation), and the search it runs must finish, with Ray stopped at the end. With ``ray`` and
Python faked as well, nothing starts: what each node's ``ray start`` is asked (the allocation's
CPUs and GPUs) is checked for allocations with GPUs that this machine does not have."""

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


# `ray` and the job's Python faked as well: each records what it was asked, nothing starts.
FAKE_RAY = """#!/bin/bash
echo "ray $*" >> "$FAKE_LOG"
"""
FAKE_PYTHON = """#!/bin/bash
# The script's Python: `-c` makes the job's token, `- ADDRESS [NODES]` waits for the head (and then
# for NODES Ray nodes: here, until that many `ray start` were recorded), anything else is the search.
case "$1" in
    -c) echo fake-token ;;
    -) cat > /dev/null
       if [[ $# -eq 3 ]]; then
           for _ in $(seq 100); do
               [[ $(grep -c "^ray start" "$FAKE_LOG") -ge $3 ]] && break
               sleep 0.1
           done
       fi ;;
    *) echo "search RAY_ADDRESS=$RAY_ADDRESS $*" >> "$FAKE_LOG" ;;
esac
"""


@pytest.mark.parametrize(
    ("nodes", "gpus", "expected"),
    [("n1,n2", "2", "2"), ("n1", "1", "1"), ("n1,n2", None, "0")],
    ids=["2-nodes-2-gpus", "1-node-1-gpu", "no-gpus"],
)
def test_the_sbatch_script_gives_ray_the_allocations_cpus_and_gpus_on_every_node(
    nodes: str, gpus: str | None, expected: str, tmp_path: Path
) -> None:
    """What each node's `ray start` is asked, with `ray` and Python faked: the GPUs and CPUs SLURM
    gave the node (SLURM_GPUS_ON_NODE, SLURM_CPUS_ON_NODE), none without GPUs; then the search,
    on the head's address, with the arguments given."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed")
    bin_dir = _fake_slurm(tmp_path / "bin")
    for name, body in (("ray", FAKE_RAY), ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(body, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_", "ASTRA_"))},
        "PATH": os.pathsep.join([str(bin_dir), os.environ["PATH"]]),
        "FAKE_LOG": str(log),
        "SLURM_JOB_NODELIST": nodes,
        "SLURM_CPUS_ON_NODE": "6",
        "ASTRA_PYTHON": str(bin_dir / "python"),
        "ASTRA_RAY_PORT": "6391",
    }
    if gpus is not None:
        environment["SLURM_GPUS_ON_NODE"] = gpus
    done = subprocess.run(
        ["bash", str(REPO / "cluster" / "slurm.sbatch"), "--space", "paper", "--trials", "3"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    starts = [call.split() for call in calls if call.startswith("ray start")]
    head = [args for args in starts if "--head" in args]
    workers = [args for args in starts if "--head" not in args]
    count = len(nodes.split(","))
    assert len(head) == 1 and len(workers) == count - 1, calls
    # The head's address: its IP (this machine's: the faked srun ran hostname here) and the port.
    ip = subprocess.run(["hostname", "--ip-address"], capture_output=True, text=True).stdout.split()[0]
    address = f"{ip}:6391"
    assert f"--node-ip-address={ip}" in head[0] and "--port=6391" in head[0]
    for args in starts:
        assert f"--num-gpus={expected}" in args and "--num-cpus=6" in args, args
    for args in workers:
        assert f"--address={address}" in args
    (search,) = [call for call in calls if call.startswith("search ")]
    assert search == f"search RAY_ADDRESS={address} run_search.py --space paper --trials 3"
