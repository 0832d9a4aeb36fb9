"""The search's summary from trial folders alone (no Ray): the per-class plot sets the best trial
beside the base configuration's trial when the space starts from the base config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from astra.classes import NUM_CLASSES
from astra.search.results import trial_rows, write_summary
from astra.search.run import _base_trial
from astra.search.space import load_space

BEST, BASE = "#1f77b4", "#ff7f0e"  # matplotlib's first two colours: the best trial's bars, the base's


def _trial(experiment: Path, trial_id: str, created: float, valid: float, per_class: list[float]) -> None:
    folder = experiment / "trials" / trial_id
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"created": created, "params": {}}))
    result = {
        "epochs_run": 2, "best_epoch": 2, "best_valid_tight_a_map": valid, "wall_seconds": 1.0,
        "valid_tight_paper": valid, "test_tight_paper": float(np.mean(per_class)),
        "test_tight_per_class_paper": per_class,
    }  # fmt: skip
    (folder / "result.json").write_text(json.dumps(result))


def _share_of(png: Path, colour: str) -> float:
    import matplotlib.colors
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    target = np.array(matplotlib.colors.to_rgb(colour))
    return float(np.mean(np.all(np.abs(pixels - target) < 0.02, axis=-1)))


@pytest.mark.parametrize(
    ("start_from_base", "base_is_best", "base_bars"),
    [(True, False, True), (True, True, False), (False, False, False)],
    ids=["base-below-best", "base-is-best", "no-base-trial"],
)
def test_the_per_class_plot_shows_the_base_trial_beside_the_best(
    tmp_path: Path,
    tiny_space: Callable[..., Path],
    tiny_overrides: list[str],
    start_from_base: bool,
    base_is_best: bool,
    base_bars: bool,
) -> None:
    space = load_space(tiny_space(tmp_path / "s.yaml", tiny_overrides, 2, start_from_base=start_from_base))
    experiment = tmp_path / "experiment"
    ramp = [0.1 + 0.5 * c / NUM_CLASSES for c in range(NUM_CLASSES)]
    _trial(experiment, "firsttri", 1.0, 0.4 if base_is_best else 0.2, ramp)  # the first trial run
    _trial(experiment, "second00", 2.0, 0.3, ramp[::-1])
    rows = trial_rows(experiment, space)
    base = _base_trial(rows, space)
    assert base == ("firsttri" if start_from_base else "")
    summary = write_summary(experiment, rows, space, base_trial=base).read_text()
    png = experiment / "plots" / "per_class.png"
    assert "(plots/per_class.png)" in summary
    assert _share_of(png, BEST) > 0.01
    if base_bars:
        assert _share_of(png, BASE) > 0.01, "the base trial's bars are missing"
        assert "The base configuration (trial `firsttri`)" in summary
    else:
        assert _share_of(png, BASE) < 0.001  # the legend's colours aside, one series of bars
        assert "The base configuration" not in summary


def test_best_yaml_is_the_best_trials_config_and_goes_when_no_trial_has_finished(
    tmp_path: Path, tiny_space: Callable[..., Path], tiny_overrides: list[str]
) -> None:
    from astra.config import load_config, replace

    space = load_space(tiny_space(tmp_path / "s.yaml", tiny_overrides, 2))
    experiment = tmp_path / "experiment"
    ramp = [0.2] * NUM_CLASSES
    configs = {}
    for number, (trial_id, valid) in enumerate([("lowvalid", 0.2), ("highvali", 0.4)]):
        _trial(experiment, trial_id, float(number), valid, ramp)
        configs[trial_id] = replace(space.base_config(), {"train.base_learning_rate": 1e-3 * (number + 1)})
        (experiment / "trials" / trial_id / "run").mkdir()
        text = yaml.safe_dump(configs[trial_id].to_dict(), sort_keys=False)
        (experiment / "trials" / trial_id / "run" / "config.yaml").write_text(text)
    write_summary(experiment, trial_rows(experiment, space), space)
    best = experiment / "best.yaml"
    assert "highvali" in best.read_text().splitlines()[0]
    assert load_config([best]) == configs["highvali"]

    for trial_id in configs:  # a --report after every result is gone: no best, no best.yaml
        (experiment / "trials" / trial_id / "result.json").unlink()
    write_summary(experiment, trial_rows(experiment, space), space)
    assert not best.exists()
