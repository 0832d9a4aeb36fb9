"""The ridge baseline: on features that carry a class signature at labelled seconds, it must spot
the events far better than the same predictions shuffled in time."""

from __future__ import annotations

import argparse
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from astra.baseline import (
    BaselineConfig,
    BaselineError,
    RidgeProbe,
    per_second_to_per_position,
    run_baseline,
)
from astra.classes import CLASSES, NUM_CLASSES
from astra.commands import baseline as baseline_command
from astra.config import ConfigError
from astra.data.dataset import DataError, DataRoots

HALF_SECONDS = 240
FEATURE_DIM = 40
TOLERANCE_MS = 2000
SPLIT_GAMES = {"train": 3, "test": 2, "challenge": 1}


@dataclass(frozen=True)
class SignatureDataset:
    """Games whose features hold ``signatures[c]`` at the seconds of the events of class ``c``.

    ``events[game]`` lists ``(half, position_ms, class_index)`` for every game, challenge games
    included (their labels are not written: the baseline must not need them).
    """

    root: Path
    splits: dict[str, list[str]]
    events: dict[str, list[tuple[int, int, int]]]


@pytest.fixture(scope="module")
def signature_dataset(tmp_path_factory: pytest.TempPathFactory) -> SignatureDataset:
    root = tmp_path_factory.mktemp("signature_soccernet")
    rng = np.random.default_rng(0)
    signatures = rng.standard_normal((NUM_CLASSES, FEATURE_DIM)).astype(np.float32)
    splits: dict[str, list[str]] = {}
    events: dict[str, list[tuple[int, int, int]]] = {}
    for split, count in SPLIT_GAMES.items():
        for number in range(count):
            game = f"league/2020-2021/2021-01-0{number + 1} - 20-00 {split.title()} {number} - 0 Rivals"
            splits.setdefault(split, []).append(game)
            events[game] = _write_game(root / game, rng, signatures, with_labels=split != "challenge")
    (root / "splits.json").write_text(json.dumps(splits), encoding="utf-8")
    return SignatureDataset(root, splits, events)


@pytest.fixture(scope="module")
def test_predictions(signature_dataset: SignatureDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("baseline_test")
    run_baseline(DataRoots.single(signature_dataset.root), "test", out, progress=False)
    return out


def test_baseline_spots_events_far_better_than_shuffled_predictions(
    signature_dataset: SignatureDataset, test_predictions: Path
) -> None:
    games = signature_dataset.splits["test"]
    predictions = {game: _read_predictions(test_predictions, game) for game in games}
    labels = {game: signature_dataset.events[game] for game in games}
    rng = np.random.default_rng(1)
    shuffled = {}
    for game, spots in predictions.items():
        # Same confidences and classes, positions permuted within each half.
        spots = list(spots)
        for half in (1, 2):
            mine = [i for i, spot in enumerate(spots) if spot[0] == half]
            positions = rng.permutation([spots[i][1] for i in mine])
            for i, position in zip(mine, positions, strict=True):
                spots[i] = (half, int(position), spots[i][2], spots[i][3])
        shuffled[game] = spots
    ours = _mean_average_precision(predictions, labels)
    chance = _mean_average_precision(shuffled, labels)
    assert ours > 0.8
    assert ours > chance + 0.5


def test_baseline_writes_a_zip_of_every_game_and_confidences_in_unit_range(
    signature_dataset: SignatureDataset, test_predictions: Path
) -> None:
    with zipfile.ZipFile(test_predictions / "predictions.zip") as archive:
        names = set(archive.namelist())
    for game in signature_dataset.splits["test"]:
        assert any(name.endswith(f"{game}/results_spotting.json") for name in names)
        spots = _read_predictions(test_predictions, game)
        assert {half for half, *_ in spots} == {1, 2}
        assert all(0 < confidence <= 1 for *_, confidence in spots)
        assert all(0 <= position < HALF_SECONDS * 1000 for _, position, _, _ in spots)


def test_command_predicts_a_split_without_labels(signature_dataset: SignatureDataset, tmp_path: Path) -> None:
    out = tmp_path / "challenge"
    parser = argparse.ArgumentParser()
    baseline_command.add_arguments(parser)
    args = parser.parse_args(
        [
            "--data",
            str(signature_dataset.root),
            "--split",
            "challenge",
            "--out",
            str(out),
            "--context-seconds",
            "1",
            "--projection-dim",
            "16",
            "--no-progress",
        ]
    )
    assert baseline_command.run(args) == 0
    (game,) = signature_dataset.splits["challenge"]
    assert (out / "predictions.zip").is_file()
    # With a 16-d random projection of the 40-d features the signatures still show through.
    predictions = _read_predictions(out, game)
    assert _mean_average_precision({game: predictions}, {game: signature_dataset.events[game]}) > 0.6


def test_fitting_on_a_split_without_labels_is_an_error(
    signature_dataset: SignatureDataset, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="label"):
        run_baseline(
            DataRoots.single(signature_dataset.root),
            "test",
            tmp_path,
            train_split="challenge",
            progress=False,
        )


def test_probe_rejects_features_of_another_width() -> None:
    probe = RidgeProbe(
        feature_dim=4,
        projection=None,
        weights=np.zeros((12, NUM_CLASSES), dtype=np.float32),
        input_mean=np.zeros(12, dtype=np.float32),
        bias=np.full(NUM_CLASSES, 0.5, dtype=np.float32),
        context_seconds=1,
    )
    assert probe.predict(np.ones((7, 4), dtype=np.float32)).shape == (7, NUM_CLASSES)
    with pytest.raises(BaselineError, match="fitted on 4 features"):
        probe.predict(np.ones((7, 5), dtype=np.float32))


def test_per_second_scores_cover_both_frames_of_their_second() -> None:
    per_second = np.arange(6, dtype=np.float32).reshape(3, 2)
    per_position = per_second_to_per_position(per_second)
    assert per_position.shape == (6, 2)
    np.testing.assert_array_equal(per_position[0::2], per_second)
    np.testing.assert_array_equal(per_position[1::2], per_second)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"context_seconds": -1}, "context_seconds"),
        ({"projection_dim": 0}, "projection_dim"),
        ({"ridge": 0.0}, "ridge"),
        ({"target_radius_seconds": -2}, "target_radius_seconds"),
    ],
)
def test_bad_settings_raise_a_clear_error(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BaselineConfig(**settings)


def _write_game(
    folder: Path, rng: np.random.Generator, signatures: np.ndarray, *, with_labels: bool
) -> list[tuple[int, int, int]]:
    """Two halves of noise with each class's signature added around one event per class per half."""
    folder.mkdir(parents=True)
    events = []
    annotations = []
    for half in (1, 2):
        features = rng.standard_normal((HALF_SECONDS, FEATURE_DIM)).astype(np.float32)
        # One event per class, at least 12 s apart, so that tolerance windows do not overlap.
        seconds = rng.choice(np.arange(6, HALF_SECONDS - 6, 12), size=NUM_CLASSES, replace=False)
        for class_index, second in enumerate(seconds):
            position_ms = int(second) * 1000 + int(rng.integers(0, 1000))
            features[second - 1 : second + 2] += 2.5 * signatures[class_index]
            features[second] += 1.5 * signatures[class_index]
            events.append((half, position_ms, class_index))
            annotations.append(
                {
                    "gameTime": f"{half} - {second // 60:02d}:{second % 60:02d}",
                    "label": CLASSES[class_index],
                    "position": str(position_ms),
                    "team": "home",
                    "visibility": "visible",
                }
            )
        np.save(folder / f"{half}_baidu_soccer_embeddings.npy", features)
    if with_labels:
        (folder / "Labels-v2.json").write_text(json.dumps({"annotations": annotations}), encoding="utf-8")
    return events


def _read_predictions(out: Path, game: str) -> list[tuple[int, int, int, float]]:
    """``(half, position_ms, class_index, confidence)`` of one game's results_spotting.json."""
    document = json.loads((out / game / "results_spotting.json").read_text(encoding="utf-8"))
    return [
        (int(p["half"]), int(p["position"]), CLASSES.index(p["label"]), float(p["confidence"]))
        for p in document["predictions"]
    ]


def _mean_average_precision(
    predictions: dict[str, list[tuple[int, int, int, float]]],
    labels: dict[str, list[tuple[int, int, int]]],
) -> float:
    """Mean over classes of the average precision at a +-2 s tolerance: detections in decreasing
    confidence, each a true positive when an unmatched event of its game, half and class is in reach."""
    precisions = []
    for class_index in range(NUM_CLASSES):
        detections = sorted(
            (
                (confidence, game, half, position)
                for game, spots in predictions.items()
                for half, position, c, confidence in spots
                if c == class_index
            ),
            reverse=True,
        )
        unmatched = {
            (game, half, position)
            for game, events in labels.items()
            for half, position, c in events
            if c == class_index
        }
        num_events = len(unmatched)
        true_positives = 0
        precision_sum = 0.0
        for rank, (_, game, half, position) in enumerate(detections, start=1):
            reachable = [
                e for e in unmatched if e[:2] == (game, half) and abs(e[2] - position) <= TOLERANCE_MS
            ]
            if reachable:
                unmatched.remove(min(reachable, key=lambda e: abs(e[2] - position)))
                true_positives += 1
                precision_sum += true_positives / rank
        precisions.append(precision_sum / num_events)
    return float(np.mean(precisions))


def test_targets_leave_out_events_past_the_end_of_the_features(tmp_path: Path) -> None:
    """An event past the last feature row is kept for scoring, not learnt at the last second."""
    from astra.baseline import _targets
    from astra.data.dataset import Half
    from astra.data.labels import Annotations

    annotations = Annotations(
        half=np.array([1, 1], dtype=np.int8),
        position_ms=np.array([3_500, 12_000], dtype=np.int64),
        class_index=np.array([2, 5], dtype=np.int16),
        visible=np.array([True, True]),
        past_end=np.array([False, True]),
    )
    half = Half("g", 1, np.zeros((10, 4), np.float32), None, annotations, tmp_path / "f.npy")
    targets = _targets(half, radius_seconds=1)
    assert targets[:, 2].nonzero()[0].tolist() == [2, 3, 4]
    assert not targets[:, 5].any()
