"""Labels, features and audio under three roots, with file names of the config's ``data`` section.

``astra check-data`` and ``astra train`` take the roots as ``--data``, ``--features-root`` and
``--audio-root`` and the file names from ``--config`` (``data.features_filename``,
``data.audio_filename``); ``astra predict`` takes the roots and the names its checkpoint holds.
The three roots are disjoint, and no file has its default name: a command that looked in the
wrong root, or for the default name, would not find it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from astra.cli import main

NAMES = {"features_filename": "visual_{half}.npy", "audio_filename": "mel_{half}.npy"}
# One step of 10-s clips: the audio network, most of the test's time, sees few frames.
SHORT_CLIPS = (
    "clips.clip_seconds=10", "clips.train_stride_seconds=5", "clips.inference_stride_seconds=5",
    "train.clips_per_epoch=4",
)  # fmt: skip
LABELS = tuple(
    {
        "gameTime": f"{half} - 00:{second:02d}",
        "label": label,
        "position": str(second * 1000),
        "visibility": "visible",
    }
    for half, second, label in ((1, 10, "Kick-off"), (1, 40, "Foul"), (2, 5, "Corner"), (2, 50, "Goal"))
)


@pytest.fixture
def roots(tmp_path: Path, make_tiny_dataset, tiny_games) -> dict[str, Path]:
    """The tiny dataset (one-minute halves) split into ``labels/``, ``features/`` and ``audio/``,
    its files renamed, and a config with the names."""
    games = tuple(
        dataclasses.replace(game, half_seconds=(69, 64), audio_frames=(6_930, 6_380), labels=LABELS)
        for game in tiny_games
    )
    dataset = make_tiny_dataset(tmp_path / "written", games=games)
    paths = {name: tmp_path / name for name in ("labels", "features", "audio")}
    for name in paths.values():
        name.mkdir()
    (dataset.root / "splits.json").rename(paths["labels"] / "splits.json")
    for game in dataset.games:
        for root in paths.values():
            (root / game.name).mkdir(parents=True)
        source = dataset.root / game.name
        (source / "Labels-v2.json").rename(paths["labels"] / game.name / "Labels-v2.json")
        for half in (1, 2):
            (source / f"{half}_baidu_soccer_embeddings.npy").rename(
                paths["features"] / game.name / NAMES["features_filename"].format(half=half)
            )
            (source / f"audio{half}.npy").rename(
                paths["audio"] / game.name / NAMES["audio_filename"].format(half=half)
            )
    config = tmp_path / "names.yaml"
    config.write_text(json.dumps({"data": NAMES}), encoding="utf-8")  # JSON is YAML
    return {**paths, "config": config}


def _data(roots: dict[str, Path]) -> list[str]:
    return ["--data", str(roots["labels"]), "--features-root", str(roots["features"]),
            "--audio-root", str(roots["audio"])]  # fmt: skip


def test_check_data_reads_three_roots_with_the_config_s_file_names(
    roots: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-data", "--config", str(roots["config"]), *_data(roots)]) == 0
    output = capsys.readouterr().out
    assert "no problems found" in output
    assert output.count("1 games, 2 halves opened") == 3, output  # train, valid, test
    assert "audio shorter than its half (padded" in output  # the audio was opened, from its root
    # Without the config the default names are looked for, and are not there.
    assert main(["check-data", *_data(roots)]) == 2
    assert f"{roots['features']}" in capsys.readouterr().out
    # Overrides name the files too; after --split, which takes every word, one is refused by name.
    overrides = [f"data.{key}={value}" for key, value in NAMES.items()]
    assert main(["check-data", *_data(roots), *overrides, "--split", "valid"]) == 0
    assert main(["check-data", *_data(roots), "--split", "valid", *overrides[:1]]) == 2
    assert f"--split {overrides[0]}: not a split name" in capsys.readouterr().err


def test_train_and_predict_read_three_roots(
    roots: dict[str, Path], tmp_path: Path, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code = main(["train", "--config", str(roots["config"]), *_data(roots), "--out", str(run),
                 *tiny_overrides, "train.epochs=1", *SHORT_CLIPS])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    recorded = json.loads((run / "run.json").read_text())["data"]
    assert recorded["features"] == str(roots["features"].resolve())
    assert recorded["audio"] == str(roots["audio"].resolve())
    assert recorded["audio_pattern"] == NAMES["audio_filename"]
    out = tmp_path / "prediction"
    code = main(["predict", "--checkpoint", str(run / "checkpoints" / "best.pt"), *_data(roots),
                 "--split", "test", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (out / "predictions.zip").is_file()
