"""Protocol P2 for an ensemble's members: each trial's config retrained on train+valid+test for its
best epoch, with nothing held out, on Ray, then predicting the challenge split that the submission
averages. The whole path runs on the tiny dataset with a challenge game added."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from astra import per_position
from astra.config import load_config
from astra.ensemble.build import EnsembleError, EnsembleOptions, build_ensemble
from astra.ensemble.p2 import DONE_NAME, P2Error, p2_config, plan_retraining
from astra.inference import group_by_game, num_frames_of


def test_p2_trains_on_every_labelled_split_for_the_chosen_epochs_with_nothing_held_out() -> None:
    config = p2_config(load_config([], ["data.train_split=train+valid"]), 7)
    assert config.data.train_split == "train+valid+test" and config.data.valid_split == ""
    assert config.train.epochs == 7 and config.train.patience_epochs == 7
    with pytest.raises(P2Error, match="at least 1 epoch, got 0"):
        p2_config(load_config([]), 0)


def test_a_member_without_its_config_or_best_epoch_is_named(tmp_path: Path) -> None:
    with pytest.raises(P2Error, match=r"trial t1: .*run/config\.yaml is missing"):
        plan_retraining([("t1", tmp_path / "t1", {"best_epoch": 3})], tmp_path / "out")
    (tmp_path / "t1" / "run").mkdir(parents=True)
    (tmp_path / "t1" / "run" / "config.yaml").write_text("{}\n", encoding="utf-8")
    with pytest.raises(P2Error, match=r"trial t1: .*result\.json has no best_epoch"):
        plan_retraining([("t1", tmp_path / "t1", {})], tmp_path / "out")


def test_p2_needs_the_challenge_split(tmp_path: Path) -> None:
    with pytest.raises(EnsembleError, match=r"--protocol p2 retrains .* add --split challenge"):
        build_ensemble(EnsembleOptions(experiment=str(tmp_path), protocol="p2"))


def _experiment(tmp_path: Path, data, tiny_config, trials: dict[str, tuple[str, ...]]) -> Path:
    """An experiment folder as a search leaves it, for ``trials`` (id -> overrides of the tiny config):
    each with its run's config.yaml, a best epoch of 1 and made-up valid and test outputs."""
    from astra.data.dataset import DataRoots, load_split

    folder = tmp_path / "experiment"
    roots = DataRoots.single(data.root)
    base = tiny_config("model.use_audio=false")
    (folder / "trials").mkdir(parents=True)
    (folder / "results.parquet").write_bytes(b"")
    data_roots = {
        "labels": str(data.root), "features": str(data.root), "audio": str(data.root),
        "features_pattern": roots.features_pattern, "audio_pattern": roots.audio_pattern,
    }  # fmt: skip
    resources = {"workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}
    definition = {"base_config": base.to_dict(), "data": data_roots, "resources": resources}
    (folder / "search.json").write_text(json.dumps(definition), encoding="utf-8")
    rng = np.random.default_rng(0)
    for number, (trial, overrides) in enumerate(trials.items()):
        trial_dir = folder / "trials" / trial
        (trial_dir / "run").mkdir(parents=True)
        config = tiny_config("model.use_audio=false", *overrides)
        (trial_dir / "run" / "config.yaml").write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
        for split in ("valid", "test"):
            halves = load_split(roots, split, with_audio=False, require_labels=True)
            for game, game_halves in group_by_game(halves).items():
                outputs = {
                    h.half: rng.uniform(0, 1, size=(num_frames_of(h), 17)).astype(np.float32)
                    for h in game_halves
                }
                per_position.write_game(trial_dir / split / "per_position", game, outputs)
        own = 0.5 - 0.1 * number
        result = {
            "best_epoch": 1, "valid_tight_paper": own, "valid_tight_per_class_paper": [own] * 17,
            "test_tight_paper": own, "test_tight_searched": own, "test_tight_per_class_searched": [own] * 17,
        }  # fmt: skip
        (trial_dir / "result.json").write_text(json.dumps(result), encoding="utf-8")
    return folder


def test_build_with_p2_retrains_each_member_and_submits_their_challenge_average(
    tmp_path: Path, make_tiny_dataset, tiny_games, tiny_config, local_ray: None
) -> None:
    challenge = dataclasses.replace(
        tiny_games[2], name="europe_uefa-champions-league/2016-2017/2017-03-08 - 22-45 Barcelona 6 - 1 PSG",
        split="challenge", labels=None,
    )  # fmt: skip
    data = make_tiny_dataset(tmp_path / "data", with_audio=False, games=(*tiny_games, challenge))
    experiment = _experiment(tmp_path, data, tiny_config, {"t1": (), "t2": ("loss.uncertainty_alpha=0.6",)})
    out = tmp_path / "ensemble"
    options = EnsembleOptions(
        experiment=str(experiment), top=2, selection="top", out=str(out), split="challenge", protocol="p2"
    )
    record = build_ensemble(options)
    assert record["protocol"] == "p2" and record["challenge"]["protocol"] == "p2"
    assert set(record["members"]) == {"t1", "t2"}
    for trial in ("t1", "t2"):
        member = out / "p2" / trial
        identity = json.loads((member / "run" / "run.json").read_text(encoding="utf-8"))
        assert identity["config"]["data"]["train_split"] == "train+valid+test"
        assert identity["config"]["data"]["valid_split"] == ""
        assert identity["config"]["train"]["epochs"] == 1  # the trial's best epoch
        done = json.loads((member / DONE_NAME).read_text(encoding="utf-8"))
        assert done["split"] == "challenge"
        assert per_position.list_games(member / "challenge" / "per_position") == [challenge.name]
    # The submission averages the retrained members' challenge outputs, not the trials'.
    written = per_position.read_game(out / "challenge" / "per_position", challenge.name)
    retrained = [
        per_position.read_game(out / "p2" / t / "challenge" / "per_position", challenge.name)
        for t in ("t1", "t2")
    ]
    np.testing.assert_allclose(written[1], (retrained[0][1] + retrained[1][1]) / 2, atol=2e-3)
    assert not (experiment / "trials" / "t1" / "challenge").exists()
    assert "retrained under protocol P2" in (out / "report.md").read_text(encoding="utf-8")
    with zipfile.ZipFile(out / "challenge" / "predictions.zip") as archive:
        assert f"{challenge.name}/results_spotting.json" in archive.namelist()

    # Again: the members are done, nothing retrains (their folders are untouched).
    modified = {p: p.stat().st_mtime_ns for p in (out / "p2").rglob("*.pt")}
    build_ensemble(options)
    assert {p: p.stat().st_mtime_ns for p in (out / "p2").rglob("*.pt")} == modified
