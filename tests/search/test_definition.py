"""What makes a search folder another search: its base config, compared setting by setting."""

from __future__ import annotations

from pathlib import Path

from astra.config import load_config
from astra.search.run import base_config_differences

SMALL = str(Path(__file__).resolve().parents[2] / "configs" / "small.yaml")


def test_a_setting_added_since_at_its_default_is_no_difference() -> None:
    current = load_config([SMALL])
    recorded = current.to_dict()
    del recorded["train"]["compile"]  # written before the project had the setting
    assert base_config_differences(recorded, current) == []


def test_speed_settings_are_no_difference_and_the_others_are_named() -> None:
    recorded = load_config([SMALL]).to_dict()
    faster = load_config([SMALL], ["train.training_audio_from_half=false", "train.compile=default"])
    assert base_config_differences(recorded, faster) == []
    other = load_config([SMALL], ["train.epochs=30", "model.d_model=32"])
    assert base_config_differences(recorded, other) == ["model.d_model", "train.epochs"]


def test_a_setting_since_removed_is_a_difference() -> None:
    current = load_config([])
    recorded = current.to_dict()
    recorded["train"]["retired_setting"] = 1
    assert base_config_differences(recorded, current) == ["train.retired_setting"]
