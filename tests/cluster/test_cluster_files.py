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


# The shipped spaces each cluster file is for: the GPU cloud and the on-premise servers run them all.
SERVED = {"gpu.yaml": ("smoke", "small", "paper"), "onprem.yaml": ("smoke", "small", "paper")}


def _prepared(path: Path) -> dict:
    """The cluster file as Ray reads it (the local provider's servers become one node type)."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(yaml.safe_load(path.read_text(encoding="utf-8"))))


def _declared(config: dict, node_type: str) -> tuple[float | None, float | None]:
    """The CPUs and GPUs a node type gives Ray: its ``resources``, or the ``--num-cpus`` and
    ``--num-gpus`` of its ``ray start``; None where Ray detects the machine's own."""
    start = " ".join(
        config[
            "head_start_ray_commands"
            if node_type == config["head_node_type"]
            else "worker_start_ray_commands"
        ]
    )
    resources = config["available_node_types"][node_type].get("resources", {})
    declared = []
    for key, flag in (("CPU", "--num-cpus"), ("GPU", "--num-gpus")):
        flags = re.findall(rf"{flag}[= ]\"?([0-9.]+)", start)
        declared.append(float(flags[-1]) if flags else resources.get(key))
    return declared[0], declared[1]


def _trials_per_node(
    cpus: float | None, gpus: float | None, trial_cpus: float, trial_gpus: float
) -> float | None:
    """How many trials one node takes; None where that depends on what Ray detects there (any
    machine has a CPU for a 1-CPU trial, but not necessarily a GPU)."""
    fits, unknown = [], False
    for declared, need, detected_enough in ((cpus, trial_cpus, trial_cpus <= 1), (gpus, trial_gpus, False)):
        if need == 0:
            continue
        if declared is not None:
            fits.append(declared // need)
        elif detected_enough:
            fits.append(1.0)
        else:
            unknown = True
    if unknown and not (fits and min(fits) == 0):  # a resource declared too small decides
        return None
    return min(fits) if fits else float("inf")


@pytest.mark.parametrize(
    ("cluster", "space"),
    [(cluster, space) for cluster, spaces in SERVED.items() for space in spaces],
    ids=lambda value: value.removesuffix(".yaml"),
)
def test_the_cluster_nodes_fit_the_trials_of_the_spaces_it_serves(cluster: str, space: str) -> None:
    config = _prepared(REPO / "cluster" / cluster)
    searched = load_space(REPO / "search_spaces" / f"{space}.yaml")
    resources, concurrent = searched.resources, searched.budget.concurrent
    head = config["head_node_type"]
    capacity, unknown = 0.0, False
    for name, node in config["available_node_types"].items():
        nodes = (1 if name == head else 0) + min(node.get("max_workers", 0), config["max_workers"])
        assert node.get("max_workers", 0) <= config["max_workers"], name
        per_node = _trials_per_node(*_declared(config, name), resources.trial_cpus, resources.trial_gpus)
        if per_node is None:
            unknown = True
        else:
            capacity += per_node * nodes
    assert unknown or capacity >= 1, f"{cluster}: no node takes a trial of {space} ({resources})"
    if not unknown:  # one trial per node at least: the search's concurrency fits
        assert capacity >= concurrent, (
            f"{cluster}: room for {capacity:g} trials of {space}, it runs {concurrent}"
        )


def test_every_onprem_server_is_started_and_gives_ray_all_it_has() -> None:
    """The local provider runs exactly the servers listed; Ray detects each one's CPUs and GPUs
    (none is capped, so that the GPU trials of the paper space find the GPUs)."""
    raw = yaml.safe_load((REPO / "cluster" / "onprem.yaml").read_text(encoding="utf-8"))
    workers = raw["provider"]["worker_ips"]
    assert raw["min_workers"] == raw["max_workers"] == len(workers) >= 1
    assert raw["provider"]["head_ip"] not in workers and len(set(workers)) == len(workers)
    config = _prepared(REPO / "cluster" / "onprem.yaml")
    for name in config["available_node_types"]:
        assert _declared(config, name) == (None, None), name


def test_gpu_cluster_workers_come_and_go_and_only_ssh_is_open() -> None:
    config = yaml.safe_load((REPO / "cluster" / "gpu.yaml").read_text(encoding="utf-8"))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0, "no trial on the head"
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers
    for node in workers:
        assert node.get("min_workers", 0) == 0  # GPUs are paid for only while trials run
    ports = config["provider"]["security_group"]["IpPermissions"]
    assert [(p["FromPort"], p["ToPort"]) for p in ports] == [(22, 22)]  # SSH only
    assert all(r["CidrIp"] != "0.0.0.0/0" for p in ports for r in p["IpRanges"])
