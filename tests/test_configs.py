"""Every shipped YAML loads and builds; the ablation files hold only their switches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from astra.config import ExperimentConfig, load_config
from astra.model import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ABLATIONS = CONFIGS / "ablations"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))

# The keys an ablation row may set (Table 2 of the paper): no sizes, so that rows stack on small.yaml.
SWITCHES = {
    "model.encoder",
    "model.temporal_dropout_p",
    "model.temporal_switch_p",
    "model.displacement_head",
    "model.use_audio",
    "clips.outputs_per_second",
    "clips.class_radius_seconds",
    "clips.displacement_radius_seconds",
    "augment.mixup",
    "augment.mixup_alpha",
    "augment.mixup_beta",
    "loss.classification",
}

# Each row of Table 2: its parent row and what it changes.
TABLE_2 = {
    "m1": ("m0", {"model.encoder": "hierarchical"}),
    "m2": ("m1", {"clips.class_radius_seconds": 2.0, "clips.displacement_radius_seconds": 3.0}),
    "m3": ("m2", {"augment.mixup": "plain", "augment.mixup_alpha": 0.6}),  # beta 0.6 already
    "m4": ("m2", {"augment.mixup": "balanced"}),
    "m5": ("m4", {"model.temporal_dropout_p": 0.5, "model.temporal_switch_p": 0.3}),
    "m6": ("m5", {"clips.outputs_per_second": 1}),
    "m7": ("m5", {"loss.classification": "focal"}),
    "m8": ("m7", {"model.displacement_head": "uncertainty"}),
    "m9": ("m8", {"model.use_audio": True}),
}


def _flat(config: ExperimentConfig) -> dict[str, object]:
    return {
        f"{section}.{key}": value for section, keys in config.to_dict().items() for key, value in keys.items()
    }


def test_every_ablation_row_is_shipped() -> None:
    assert sorted(path.stem for path in ABLATIONS.glob("*.yaml")) == [f"m{i}" for i in range(10)]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads_and_builds(path: Path) -> None:
    config = load_config([path])
    with torch.device("meta"):
        model = build_model(config.model, config.clips, load_pretrained=False)
    assert model.num_outputs == config.clips.num_outputs


def test_paper_preset_is_the_defaults() -> None:
    assert load_config([CONFIGS / "astra_paper.yaml"]) == ExperimentConfig()
    assert load_config([ABLATIONS / "m9.yaml"]) == ExperimentConfig()  # M9 is ASTRA


@pytest.mark.parametrize("row", sorted(TABLE_2))
def test_ablation_rows_follow_table_2(row: str) -> None:
    parent, changes = TABLE_2[row]
    ours, theirs = (
        _flat(load_config([ABLATIONS / f"{row}.yaml"])),
        _flat(load_config([ABLATIONS / f"{parent}.yaml"])),
    )
    assert {key: value for key, value in ours.items() if theirs[key] != value} == changes


def test_m0_is_the_base_model() -> None:
    m0 = load_config([ABLATIONS / "m0.yaml"])
    assert (m0.model.encoder, m0.model.use_audio, m0.model.displacement_head) == ("vanilla", False, "plain")
    assert (m0.clips.class_radius_seconds, m0.clips.displacement_radius_seconds) == (3.0, 6.0)
    assert (m0.augment.mixup, m0.model.temporal_dropout_p, m0.model.temporal_switch_p) == ("none", 0.0, 0.0)
    assert m0.loss.classification == "bce"


@pytest.mark.parametrize("row", [f"m{i}" for i in range(10)])
def test_ablations_set_only_switches_and_stack_on_small(row: str) -> None:
    document = yaml.safe_load((ABLATIONS / f"{row}.yaml").read_text())
    assert document.pop("base") == "../astra_paper.yaml"
    assert {f"{section}.{key}" for section, keys in document.items() for key in keys} == SWITCHES
    alone = _flat(load_config([ABLATIONS / f"{row}.yaml"]))
    small = load_config([CONFIGS / "small.yaml"])
    stacked = load_config([CONFIGS / "small.yaml", ABLATIONS / f"{row}.yaml"])
    # Sizes from small.yaml, switches from the row.
    switches = {name.partition(".")[2] for name in SWITCHES if name.startswith("model.")}
    sizes = {f.name for f in dataclasses.fields(small.model)} - switches
    assert all(getattr(stacked.model, name) == getattr(small.model, name) for name in sizes)
    assert all(_flat(stacked)[key] == alone[key] for key in SWITCHES)
