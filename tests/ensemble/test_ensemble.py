"""Ensembles: known averages, greedy selection of the complementary member over a duplicate, the
whole build on a constructed experiment folder (no training: members' outputs are made up), and
the errors a user meets first."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from astra import per_position
from astra.classes import CLASSES, FRAMES_PER_SECOND, NUM_CLASSES
from astra.config import ExperimentConfig, InferenceConfig
from astra.ensemble.build import EnsembleError, EnsembleOptions, build_ensemble
from astra.ensemble.outputs import (
    AveragedOutputs,
    MemberError,
    MemberOutputs,
    average,
    score_ensembles,
)
from astra.ensemble.selection import SelectionError, select

REPO = Path(__file__).resolve().parents[2]
HALF_SECONDS = 600
SPLITS = {"valid": 3, "test": 3, "challenge": 2}


def _games(split: str) -> list[str]:
    return [f"league/season/{split}-{i}" for i in range(SPLITS[split])]


def _events(game: str) -> dict[int, list[tuple[int, int]]]:
    """``{half: [(second, class)]}``: classes 0 and 1 alternate every 40 s, from a per-game seed."""
    rng = np.random.default_rng(abs(hash(game)) % 2**32)
    events = {}
    for half in (1, 2):
        seconds = np.arange(20, HALF_SECONDS - 20, 40) + rng.integers(-3, 4, size=14)
        events[half] = [(int(s), i % 2) for i, s in enumerate(seconds)]
    return events


def _write_labels(root: Path, labels_dir: Path, game: str) -> None:
    annotations = [
        {
            "gameTime": f"{half} - {second // 60:02d}:{second % 60:02d}",
            "label": CLASSES[c],
            "position": str(second * 1000),
            "team": "home",
            "visibility": "visible",
        }
        for half, events in _events(game).items()
        for second, c in events
    ]
    folder = labels_dir / game
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Labels-v2.json").write_text(json.dumps({"annotations": annotations}), encoding="utf-8")


def _member_outputs(game: str, good_at: int, seed: int) -> dict[int, np.ndarray]:
    """Outputs with a sharp peak at every event of class ``good_at`` and a late, weak one for the other."""
    rng = np.random.default_rng(seed)
    frames = HALF_SECONDS * FRAMES_PER_SECOND
    outputs = {}
    for half, events in _events(game).items():
        scores = rng.uniform(0.0, 0.02, size=(frames, NUM_CLASSES)).astype(np.float32)
        for second, c in events:
            if c == good_at:
                scores[second * FRAMES_PER_SECOND, c] = 0.9
            else:  # found 6 s late with a low score: outside the tight tolerances
                scores[(second + 6) * FRAMES_PER_SECOND, c] = 0.3
        outputs[half] = scores
    return outputs


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    """A search's experiment folder as the search leaves it: trials A (good at class 0), A2 (A with
    different noise: a near duplicate), B (good at class 1), with valid, test and challenge outputs."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "splits.json").write_text(
        json.dumps({split: _games(split) for split in SPLITS} | {"train": []}), encoding="utf-8"
    )
    for split in SPLITS:
        for game in _games(split):
            _write_labels(data, data if split != "challenge" else data / "challenge_labels", game)
    folder = tmp_path / "experiment"
    (folder / "trials").mkdir(parents=True)
    config = ExperimentConfig()
    (folder / "search.json").write_text(
        json.dumps({"base_config": config.to_dict(), "data": _roots(data)}),
        encoding="utf-8",
    )
    (folder / "results.parquet").write_bytes(b"")  # the table is the search's; the build reads the trials
    members = {"A": (0, 1), "A2": (0, 2), "B": (1, 3)}
    for trial, (good_at, seed) in members.items():
        trial_dir = folder / "trials" / trial
        for split in ("valid", "test", "challenge"):
            for game in _games(split):
                per_position.write_game(
                    trial_dir / split / "per_position", game, _member_outputs(game, good_at, seed)
                )
        own = {"A": 0.5, "A2": 0.49, "B": 0.45}[trial]
        result = {
            "valid_tight_paper": own,
            "valid_tight_per_class_paper": [own] * NUM_CLASSES,
            "test_tight_paper": own,
            "test_tight_searched": own,
            "test_tight_per_class_searched": [own] * NUM_CLASSES,
        }
        (trial_dir / "result.json").write_text(json.dumps(result), encoding="utf-8")
    return folder


def _roots(data: Path) -> dict[str, str]:
    return {
        "labels": str(data), "features": str(data), "audio": str(data),
        "features_pattern": "{half}_baidu_soccer_embeddings.npy", "audio_pattern": "audio{half}.npy",
    }  # fmt: skip


def test_the_average_weighs_members_by_their_picks() -> None:
    outputs = {"a": {1: np.full((4, 17), 0.2, np.float32), 2: np.zeros((2, 17), np.float32)},
               "b": {1: np.full((4, 17), 0.6, np.float32), 2: np.ones((2, 17), np.float32)}}  # fmt: skip
    mean = average(outputs, {"a": 1, "b": 3})
    np.testing.assert_allclose(mean[1], 0.5, rtol=1e-6)
    np.testing.assert_allclose(mean[2], 0.75, rtol=1e-6)


def test_the_averaged_split_is_read_game_by_game_when_asked_for(experiment: Path, monkeypatch) -> None:
    folders = {t: experiment / "trials" / t / "valid" / "per_position" for t in ("A", "B")}
    members = MemberOutputs(folders, _games("valid"), "valid")
    reads: list[tuple[str, str]] = []
    real_read = MemberOutputs.read
    monkeypatch.setattr(
        MemberOutputs,
        "read",
        lambda self, trial, game: reads.append((trial, game)) or real_read(self, trial, game),
    )
    weights = {"A": 2, "B": 1}
    averaged = AveragedOutputs(members, weights)
    assert reads == [] and len(averaged) == 3 and list(averaged) == _games("valid")
    assert _games("valid")[1] in averaged and "league/season/test-0" not in averaged
    with pytest.raises(KeyError):
        averaged["league/season/test-0"]
    game = _games("valid")[1]
    got = averaged[game]
    assert reads == [("A", game), ("B", game)]  # one game's members, nothing else
    expected = average(members.game(game, list(weights)), weights)
    for half in (1, 2):
        np.testing.assert_array_equal(got[half], expected[half])


def test_greedy_picks_the_complementary_member_over_the_duplicate(experiment: Path) -> None:
    labels = _labels_of(experiment, "valid")
    folders = {t: experiment / "trials" / t / "valid" / "per_position" for t in ("A", "A2", "B")}
    members = MemberOutputs(folders, list(labels), "valid")

    def score(ensembles):
        return [s.a_mAP for s in score_ensembles(members, labels, ensembles, InferenceConfig())]

    greedy = select(["A", "A2", "B"], [0.5, 0.49, 0.45], score, k=2, init=1)
    assert set(greedy.weights) == {"A", "B"}
    alone = score([{"A": 1}])[0]
    assert greedy.score > alone  # the complementary member raised the average's score
    top = select(["A", "A2", "B"], [0.5, 0.49, 0.45], score, k=2, method="top")
    assert list(top.weights) == ["A", "A2"]
    assert greedy.score > top.score
    bagged = select(["A", "A2", "B"], [0.5, 0.49, 0.45], score, k=2, bags=4, seed=1)
    assert len(bagged.weights) <= 2
    assert select(["A", "A2", "B"], [0.5, 0.49, 0.45], score, k=2, bags=4, seed=1).weights == bagged.weights


def test_ensembles_scored_in_two_processes_score_as_in_one(experiment: Path) -> None:
    labels = _labels_of(experiment, "valid")
    folders = {t: experiment / "trials" / t / "valid" / "per_position" for t in ("A", "B")}
    members = MemberOutputs(folders, list(labels), "valid")
    ensembles = [{"A": 1}, {"A": 1, "B": 2}]
    one = score_ensembles(members, labels, ensembles, InferenceConfig())
    two = score_ensembles(members, labels, ensembles, InferenceConfig(), workers=2)
    assert [s.a_mAP for s in two] == [s.a_mAP for s in one]
    assert [list(s.a_mAP_per_class) for s in two] == [list(s.a_mAP_per_class) for s in one]
    assert one[0].a_mAP != one[1].a_mAP  # two different ensembles, each kept apart


def test_build_writes_the_ensemble_report_and_challenge_submission(experiment: Path) -> None:
    out = experiment / "ens"
    record = build_ensemble(
        EnsembleOptions(experiment=str(experiment), top=2, init=1, out=str(out), split="challenge")
    )
    assert set(record["members"]) == {"A", "B"}
    assert (
        record["scores"]["valid"]["searched"]["tight"] >= record["scores"]["valid"]["paper"]["tight"] - 1e-9
    )
    # The written outputs are the weighted average of the members', game by game.
    game = _games("test")[0]
    written = per_position.read_game(out / "test" / "per_position", game)
    a = per_position.read_game(experiment / "trials" / "A" / "test" / "per_position", game)
    b = per_position.read_game(experiment / "trials" / "B" / "test" / "per_position", game)
    weights = record["members"]
    expected = (weights["A"] * a[1] + weights["B"] * b[1]) / (weights["A"] + weights["B"])
    np.testing.assert_allclose(written[1], expected, atol=2e-3)  # per-position files are float16
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "best single trial (A)" in report and "Diversity" in report and "challenge server" in report
    assert (out / "per_class.png").stat().st_size > 0
    with zipfile.ZipFile(out / "challenge" / "predictions.zip") as archive:
        assert sorted(n for n in archive.namelist() if n.endswith(".json")) == sorted(
            f"{g}/results_spotting.json" for g in _games("challenge")
        )
    assert 0 <= record["challenge"]["withheld_labels"]["tight"] <= 1
    assert np.asarray(record["correlation"]).shape == (2, 2)


def test_a_build_in_two_processes_is_the_build_of_one(experiment: Path) -> None:
    records = {}
    for workers in (1, 2):
        out = experiment / f"ens{workers}"
        options = EnsembleOptions(
            experiment=str(experiment), top=2, init=1, out=str(out), split="challenge", workers=workers
        )
        records[workers] = build_ensemble(options)
    for key in ("members", "windows", "scores", "challenge", "correlation"):
        if key == "challenge":
            for record in records.values():
                record[key].pop("submission")  # the path differs, not the file (below)
        assert records[2][key] == records[1][key], key
    with (
        zipfile.ZipFile(experiment / "ens1" / "challenge" / "predictions.zip") as one,
        zipfile.ZipFile(experiment / "ens2" / "challenge" / "predictions.zip") as two,
    ):
        assert two.namelist() == one.namelist()
        assert all(two.read(name) == one.read(name) for name in one.namelist())
    with pytest.raises(EnsembleError, match="--workers must be at least 1, got 0"):
        build_ensemble(EnsembleOptions(experiment=str(experiment), workers=0))


def _labels_of(experiment: Path, split: str):
    from astra.data.dataset import DataRoots
    from astra.ensemble.build import split_labels

    return split_labels(DataRoots.single(experiment.parent / "data"), split)


def test_bad_input_is_named(experiment: Path, tmp_path: Path) -> None:
    with pytest.raises(EnsembleError, match=r"no results\.parquet"):
        build_ensemble(EnsembleOptions(experiment=str(tmp_path / "nowhere")))
    with pytest.raises(EnsembleError, match=r"s3://bucket/exp: an experiment on object storage.*--report"):
        build_ensemble(EnsembleOptions(experiment="s3://bucket/exp"))
    with pytest.raises(EnsembleError, match="--top must be at least 1, got 0"):
        build_ensemble(EnsembleOptions(experiment=str(experiment), top=0))
    with pytest.raises(SelectionError, match="unknown selection"):
        select(["A"], [0.1], lambda e: [0.0] * len(e), 1, method="vote")
    game = _games("valid")[1]
    (experiment / "trials" / "B" / "valid" / "per_position" / game / per_position.FILENAME).unlink()
    with pytest.raises(
        MemberError, match=rf"trial B: .* no per-position outputs for 1 of the 3 games .*{game}"
    ):
        build_ensemble(EnsembleOptions(experiment=str(experiment), top=2))


def test_command_line_errors_are_one_sentence(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "ensembles" / "build.py"), "--experiment", str(tmp_path), "--top", "4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not a search experiment" in done.stderr and "Traceback" not in done.stderr
