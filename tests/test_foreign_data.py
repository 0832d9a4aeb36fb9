"""The README's commands learn on SoccerNet-layout data that another tool wrote.

Nothing here comes from ``astra synth``: one 48-wide embedding instead of the
Baidu five, halves of uneven lengths that are not whole minutes (one shorter than a
training clip), game folders and a ``splits.json`` of other names, label files with
the quirks of real ones. Four classes leave a clear mark in the features around their
events; ``astra train`` on ``configs/small.yaml``, ``astra predict`` and ``astra
evaluate`` must spot them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from astra import per_position
from astra.classes import CLASS_INDEX
from astra.cli import main

SMALL = Path(__file__).resolve().parents[1] / "configs" / "small.yaml"

WIDTH = 48
PLANTED = ("Goal", "Corner", "Foul", "Throw-in")
SPLITS = {"train": 8, "valid": 2, "test": 2}


def _game_time(half: int, seconds: float) -> str:
    return f"{half} - {int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def _write_game(root: Path, name: str, rng: np.random.Generator, directions: np.ndarray) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    annotations = []
    for half in (1, 2):
        seconds = int(rng.integers(400, 500)) if half == 1 else int(rng.integers(40, 49))  # second: < a clip
        features = rng.normal(size=(seconds, WIDTH)).astype(np.float32) + 0.5  # neither centred nor white
        grid = np.arange(6.0, seconds - 4.0, 9.0)  # events 6-12 s apart, at fractional seconds
        times = grid + rng.uniform(-1.5, 1.5, size=len(grid))
        for time in times:
            label = int(rng.integers(len(PLANTED)))
            profile = np.exp(-0.5 * (np.arange(seconds) - time) ** 2)[:, None]  # +-1 s around the event
            features += (3.0 * profile * directions[label]).astype(np.float32)
            entry = {
                "gameTime": _game_time(half, time),
                "label": PLANTED[label],
                "position": str(int(time * 1000)),
                "team": "home",
                "visibility": "visible",
            }
            if rng.random() < 0.1:
                del entry["position"]  # as a few real labels: the gameTime second stands in
            annotations.append(entry)
        annotations.append(  # outside the 17 classes: counted in a warning, ignored
            {
                "gameTime": _game_time(half, 2),
                "label": "Drop ball",
                "position": "2000",
                "visibility": "visible",
            }
        )
        np.save(folder / f"{half}_baidu_soccer_embeddings.npy", features)
    labels = {"UrlLocal": name, "annotations": annotations}
    (folder / "Labels-v2.json").write_text(json.dumps(labels), encoding="utf-8")


@pytest.fixture(scope="module")
def foreign_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("foreign")
    rng = np.random.default_rng(7)
    directions = rng.normal(size=(len(PLANTED), WIDTH))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    splits: dict[str, list[str]] = {}
    for split, count in SPLITS.items():
        for index in range(count):
            name = f"other_league/season {index % 2}/match {split} {index} - Home v Away"
            _write_game(root, name, rng, directions)
            splits.setdefault(split, []).append(name)
    (root / "splits.json").write_text(json.dumps(splits), encoding="utf-8")
    return root


def test_train_predict_evaluate_learn_on_data_another_tool_wrote(
    foreign_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, out = tmp_path / "run", tmp_path / "test"
    train = ["train", "--config", str(SMALL), "--data", str(foreign_dataset), "--out", str(run)]
    train += [f"model.visual_dims=[{WIDTH}]", "model.use_audio=false", "train.epochs=30"]
    assert main(train) == 0
    predict = [
        "predict",
        "--checkpoint",
        str(run / "checkpoints" / "best.pt"),
        "--data",
        str(foreign_dataset),
    ]
    assert main([*predict, "--split", "test", "--out", str(out)]) == 0
    # Every half has its outputs, 2 per second, the second halves (shorter than a clip) included.
    games = json.loads((foreign_dataset / "splits.json").read_text(encoding="utf-8"))["test"]
    for game in games:
        halves = per_position.read_game(out / "per_position", game)
        for half in (1, 2):
            seconds = np.load(
                foreign_dataset / game / f"{half}_baidu_soccer_embeddings.npy", mmap_mode="r"
            ).shape[0]
            assert halves[half].shape == (2 * seconds, 17), (game, half)
    capsys.readouterr()
    evaluate = ["evaluate", "--labels", str(foreign_dataset), "--predictions", str(out / "predictions.zip")]
    assert main([*evaluate, "--split", "test", "--metric", "tight", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    planted = [result["a_mAP_per_class"][CLASS_INDEX[name]] for name in PLANTED]
    assert min(planted) > 0.5, planted
