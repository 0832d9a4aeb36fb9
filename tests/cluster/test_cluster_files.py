"""The shipped cluster files, checked offline: Ray's own validator, and what it does not check
(the nodes against the search spaces' trials, node type limits, the Ray pin, exposed ports)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from astra.search.space import load_space

REPO = Path(__file__).resolve().parents[2]
CLUSTER_FILES = sorted((REPO / "cluster").glob("*.yaml"))


def _pinned_ray() -> str:
    (pin,) = re.findall(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return pin


def test_there_are_cluster_files() -> None:
    assert {p.name for p in CLUSTER_FILES} >= {"gpu.yaml", "onprem.yaml"}


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_ray_validates_the_cluster_file(path: Path) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_setup_installs_the_ray_the_package_pins_and_the_project(path: Path) -> None:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    commands = " ".join(config["setup_commands"])
    pins = re.findall(r"ray\[[^\]]*\]==([0-9.]+)", commands)
    assert pins == [_pinned_ray()], f"{path.name}: setup pins Ray {pins}, pyproject.toml {_pinned_ray()}"
    assert "-e ~/astra" in commands and config["file_mounts"] == {"~/astra": "."}


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_the_dashboard_is_not_exposed(path: Path) -> None:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_no_credentials_in_cluster_files(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for pattern in (r"AKIA[0-9A-Z]{16}", r"aws_secret_access_key", r"BEGIN [A-Z ]*PRIVATE KEY", r"password"):
        assert not re.search(pattern, text, re.IGNORECASE), f"{path.name} holds {pattern}"


def test_gpu_cluster_nodes_fit_the_paper_search() -> None:
    config = yaml.safe_load((REPO / "cluster" / "gpu.yaml").read_text(encoding="utf-8"))
    space = load_space(REPO / "search_spaces" / "paper.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0, "no trial on the head"
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers
    for node in workers:
        assert node["max_workers"] <= config["max_workers"]
        assert node.get("min_workers", 0) == 0  # GPUs are paid for only while trials run
        assert node["resources"]["CPU"] >= space.resources.trial_cpus
        assert node["resources"]["GPU"] >= space.resources.trial_gpus
    # Enough nodes for the search's concurrency, one trial per node.
    per_node = min(
        min(
            n["resources"]["CPU"] // space.resources.trial_cpus,
            n["resources"]["GPU"] // space.resources.trial_gpus,
        )
        for n in workers
    )
    assert per_node * config["max_workers"] >= space.budget.concurrent
    ports = config["provider"]["security_group"]["IpPermissions"]
    assert [(p["FromPort"], p["ToPort"]) for p in ports] == [(22, 22)]  # SSH only
    assert all(r["CidrIp"] != "0.0.0.0/0" for p in ports for r in p["IpRanges"])
