"""Search spaces: every shipped one loads; mistakes are named with the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra.search.space import SpaceError, load_space, resolve_space

SHIPPED = sorted(Path(__file__).resolve().parents[2].joinpath("search_spaces").glob("*.yaml"))


def test_the_shipped_spaces_are_there() -> None:
    assert {p.stem for p in SHIPPED} >= {"smoke", "small", "paper"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_space_loads_and_its_base_config_builds(path: Path) -> None:
    space = load_space(path)
    base = space.base_config()
    assert space.parameters and base.train.epochs >= space.asha.grace_epochs
    assert space.optuna_space().keys() == space.parameters.keys()
    # The base configuration is inside the space where its values are (the first trial is the preset).
    point = space.base_point(base)
    assert space.trial_config(base, point) == base


def test_a_shipped_space_is_found_by_name_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # as on a cluster, where the script runs from the home folder
    assert resolve_space("smoke").name == "smoke.yaml"
    with pytest.raises(SpaceError, match="search space 'nope' not found"):
        resolve_space("nope")


def _space(tmp_path: Path, parameters: str, extra: str = "") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(f"settings:\n  train.epochs: 4\n{extra}parameters:\n{parameters}")
    return path


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            "  train.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n",
            r"parameters\.train\.learning_rate: unknown key",
        ),
        ("  trian.epochs: {int: [1, 4]}\n", "unknown section trian"),
        (
            "  model.pffn_dropout: {uniform: [0.0, 1.5]}\n",
            r"the bound 1\.5 is outside the range of model\.pffn_dropout",
        ),
        (
            "  train.base_learning_rate: {uniform: [-1.0, 1.0]}\n",
            "outside the range of train.base_learning_rate",
        ),
        ("  model.encoder_layers: {uniform: [1, 4]}\n", "takes an integer: use int or logint"),
        ("  train.ema_decay: {int: [0, 1]}\n", "takes a float"),
        ("  augment.mixup: {uniform: [0, 1]}\n", "is not a number .* use choice"),
        ("  augment.mixup: {choice: [none, cutmix]}\n", r"augment\.mixup: 'cutmix' is not one of"),
        ("  model.d_model: {int: [64, 32]}\n", "needs low < high"),
        ("  loss.focal_gamma: {normal: [0, 1]}\n", "unknown distribution 'normal'"),
        ("  clips.class_radius_seconds: {quniform: [0.5, 2.0, 0.4]}\n", "step > 0 that divides"),
        ("  train.base_learning_rate: {loguniform: [0.0, 1.0e-2]}\n", "loguniform needs low > 0"),
        ("  train.base_learning_rate: 0.01\n", "expected one distribution"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, parameters: str, message: str) -> None:
    path = _space(tmp_path, parameters)
    with pytest.raises(SpaceError, match=message) as error:
        load_space(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("budget: {trials: 0}\n", r"budget\.trials must be >= 1"),
        ("asha: {grace_epochs: 9}\n", r"asha\.grace_epochs \(9\) exceeds train\.epochs \(4\)"),
        ("asha: {reduction: 2}\n", r"unknown key asha\.reduction"),
        ("resources: {workers: 2, gpus_per_worker: 0.5}\n", "fractional GPUs"),
        (
            "resources: {workers: 3}\n",
            r"train\.batch_size \(8\) must split evenly over resources\.workers \(3\)",
        ),
        ("settings2: {}\n", "unknown key 'settings2'"),
        ("configs: [missing.yaml]\n", "missing.yaml not found"),
    ],
)
def test_budget_resources_and_layout_mistakes_are_named(tmp_path: Path, extra: str, message: str) -> None:
    path = _space(tmp_path, "  loss.focal_gamma: {uniform: [0.0, 2.0]}\n", extra)
    with pytest.raises(SpaceError, match=message):
        load_space(path)


def test_a_setting_out_of_range_is_named(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("settings:\n  train.epochs: 0\nparameters:\n  loss.focal_gamma: {uniform: [0.0, 2.0]}\n")
    with pytest.raises(SpaceError, match=r"settings\.train\.epochs: train\.epochs must be >= 1"):
        load_space(path)


def test_list_choices_travel_through_optuna_as_text_and_come_back(tmp_path: Path) -> None:
    path = _space(
        tmp_path, "  model.audio_input_pool: {choice: [[8, 4], [4, 4]]}\n  model.d_model: {int: [16, 64]}\n"
    )
    space = load_space(path)
    distribution = space.parameters["model.audio_input_pool"]
    encoded = distribution.optuna().choices
    assert all(isinstance(choice, str) for choice in encoded)
    assert distribution.decode(encoded[1]) == [4, 4]
    config = space.trial_config(
        space.base_config(), {"model.audio_input_pool": encoded[1], "model.d_model": 32}
    )
    assert config.model.audio_input_pool == (4, 4) and config.model.d_model == 32


def test_quantised_values_come_back_on_their_grid(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, "  clips.class_radius_seconds: {quniform: [0.5, 2.0, 0.5]}\n"))
    assert space.parameters["clips.class_radius_seconds"].decode(1.5000000000000002) == 1.5


def test_epochs_below_the_asha_grace_on_the_command_line_are_refused_before_ray_starts() -> None:
    from astra.search.run import SearchError, SearchOptions, make_plan

    with pytest.raises(SearchError, match=r"train.epochs=1 is below the ASHA grace period .*smoke.yaml"):
        make_plan(SearchOptions(space="smoke", overrides=["train.epochs=1"]))
    assert make_plan(SearchOptions(space="smoke", overrides=["train.epochs=2"])).base.train.epochs == 2
