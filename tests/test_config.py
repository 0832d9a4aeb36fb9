"""The config loader: defaults are the paper, YAML overrides layer, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    field_bounds,
    load_config,
    parse_overrides,
    replace,
)


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", r"train\.epochs must be >= 1, got 0"),
        ("train.warmup_epochs=-2", r"train\.warmup_epochs must be >= 0, got -2"),
        ("train.batch_size=0", r"train\.batch_size must be >= 1, got 0"),
        ("model.num_heads=0", r"model\.num_heads must be >= 1, got 0"),
        ("clips.class_radius_seconds=.nan", r"clips\.class_radius_seconds must be a finite number"),
        ("train.base_learning_rate=-1e-3", r"train\.base_learning_rate must be > 0"),
        ("model.pffn_dropout=1.5", r"model\.pffn_dropout must be < 1, got 1\.5"),
        ("model.visual_dims=[64, 0]", r"model\.visual_dims\[1\] must be >= 1, got 0"),
        ("inference.nms_windows_seconds=[5, 7]", r"inference\.nms_windows_seconds must list at least 17"),
        ("loss.uncertainty_alpha=.inf", r"loss\.uncertainty_alpha must be a finite number"),
    ],
)
def test_values_out_of_range_are_refused_with_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.d_model=60", "model.num_heads=8"],
            r"model\.d_model \(60\) must be a multiple of model\.num_heads",
        ),
        (
            ["clips.train_stride_seconds=7"],
            r"clips\.clip_seconds \(50\) must be a multiple of clips\.train_stride",
        ),
        (["clips.class_radius_seconds=1.25"], r"whole number of positions"),
        (["clips.class_radius_seconds=4"], r"whole number of positions >= 0"),
        (["model.audio_input_pool=[5, 4]"], r"model\.audio_input_pool \[5, 4\] .* must divide"),
        (["model.audio_conv_channels=[8, 8]"], r"model\.audio_conv_channels must list 6"),
        (
            ["clips.clip_seconds=1", "clips.train_stride_seconds=1", "model.audio_patch_frames=192"],
            "holds no audio patch",
        ),
    ],
)
def test_settings_that_cannot_work_together_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_a_file_may_hold_half_of_a_relation_that_the_next_file_completes(tmp_path: Path) -> None:
    # Relations are checked once all files are in, not file by file.
    (tmp_path / "heads.yaml").write_text("model:\n  num_heads: 6\n")
    (tmp_path / "width.yaml").write_text("model:\n  d_model: 96\n")
    config = load_config([tmp_path / "heads.yaml", tmp_path / "width.yaml"])
    assert (config.model.num_heads, config.model.d_model) == (6, 96)
    with pytest.raises(ConfigError, match=r"multiple of model\.num_heads"):
        load_config([tmp_path / "heads.yaml"])


def test_replace_refuses_out_of_range_updates_by_name() -> None:
    with pytest.raises(ConfigError, match=r"augment\.mixup_beta must be > 0"):
        replace(ExperimentConfig(), {"augment.mixup_beta": 0.0})


def test_field_bounds_name_the_type_and_range_of_a_dotted_path() -> None:
    hint, bounds = field_bounds("model.pffn_dropout")
    assert hint is float and bounds.describe() == ">= 0 and < 1"
    hint, bounds = field_bounds("train.epochs")
    assert hint is int and bounds.violation(0) and not bounds.violation(1)
    with pytest.raises(ConfigError, match=r"unknown key train\.epoch;"):
        field_bounds("train.epoch")
    with pytest.raises(ConfigError, match="unknown section trian"):
        field_bounds("trian.epochs")


def test_overrides_parse_as_yaml_values() -> None:
    assert parse_overrides(["train.epochs=3", "model.visual_dims=[8, 8]", "inference.nms=soft"]) == {
        "train.epochs": 3,
        "model.visual_dims": [8, 8],
        "inference.nms": "soft",
    }
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["train="])


def test_overrides_may_follow_later_options_and_anything_else_is_still_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    from astra.commands.arguments import parse_with_overrides

    parser = argparse.ArgumentParser(prog="astra")
    parser.add_argument("--out")
    parser.add_argument("overrides", nargs="*")
    args = parse_with_overrides(parser, ["train.seed=1", "--out", "o", "model.d_model=8", "train.seed=2"])
    assert args.out == "o" and args.overrides == ["train.seed=1", "model.d_model=8", "train.seed=2"]
    with pytest.raises(SystemExit):
        parse_with_overrides(parser, ["train.seed=1", "--out", "o", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err
