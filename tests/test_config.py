"""The config loader: defaults are the paper, YAML overrides layer, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra.config import ConfigError, ExperimentConfig, config_from_dict, load_config, replace


def test_defaults_are_the_paper_preset() -> None:
    config = load_config()
    assert config == ExperimentConfig()
    assert config.model.d_model == 512 and config.model.visual_dims == (2048, 2048, 384, 2048, 2048)
    assert config.clips.num_outputs == 100
    assert config.train.learning_rate == pytest.approx(5e-5)


def test_learning_rate_scales_with_the_square_root_of_the_batch() -> None:
    assert load_config(overrides=["train.batch_size=32"]).train.learning_rate == pytest.approx(1e-4)


def test_files_layer_in_order_and_overrides_win(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model:\n  d_model: 64\n  num_heads: 2\n")
    (tmp_path / "b.yaml").write_text("model:\n  d_model: 96\n")
    config = load_config([tmp_path / "a.yaml", tmp_path / "b.yaml"], ["train.epochs=3"])
    assert (config.model.d_model, config.model.num_heads, config.train.epochs) == (96, 2, 3)


def test_base_is_read_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("model:\n  d_model: 64\n")
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\ntrain:\n  epochs: 2\n")
    config = load_config([tmp_path / "sub" / "child.yaml"])
    assert (config.model.d_model, config.train.epochs) == (64, 2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dmodel=3", "unknown key model.dmodel"),
        ("modle.d_model=3", "unknown section modle"),
        ("model.d_model=3.5", "model.d_model: expected an integer"),
        ("model.use_audio=1", "model.use_audio: expected true or false"),
        ("model.encoder=global", "model.encoder: 'global' is not one of"),
        ("model.visual_dims=8", "model.visual_dims: expected a list"),
        ("model.visual_dims=[8, x]", "model.visual_dims[1]: expected an integer"),
        ("d_model=3", "not of the form section.key=value"),
    ],
)
def test_mistakes_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(overrides=[override])


def test_a_bad_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key train\.epoch"):
        load_config([path])
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "missing.yaml"])


def test_round_trip_through_a_plain_dict() -> None:
    config = load_config(overrides=["model.d_model=64", "inference.nms=hard"])
    assert config_from_dict(config.to_dict()) == config


def test_replace_checks_the_updates() -> None:
    config = replace(ExperimentConfig(), {"loss.uncertainty_alpha": 0.4})
    assert config.loss.uncertainty_alpha == 0.4
    with pytest.raises(ConfigError, match=r"loss\.alpha"):
        replace(config, {"loss.alpha": 0.4})


def test_off_means_the_choice_named_off(tmp_path: Path) -> None:
    # YAML 1.1 reads a bare `off` as false; the choice spelt "off" is what the user means.
    assert load_config(overrides=["train.mixed_precision=off"]).train.mixed_precision == "off"
    (tmp_path / "cpu.yaml").write_text("train:\n  mixed_precision: off\n")
    assert load_config([tmp_path / "cpu.yaml"]).train.mixed_precision == "off"
    # Where no choice is spelt so, a boolean is still named as the mistake it is.
    with pytest.raises(ConfigError, match=r"augment\.mixup: True is not one of"):
        load_config(overrides=["augment.mixup=yes"])
