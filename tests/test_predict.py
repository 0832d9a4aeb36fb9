"""`astra train` then `astra predict` then `astra evaluate`, as a user runs them, on the tiny dataset."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from astra import per_position
from astra.cli import main

TINY = [
    "model.visual_dims=[8, 8, 4, 8, 8]",
    "model.d_model=16",
    "model.num_heads=2",
    "model.use_audio=false",
    "clips.clip_seconds=20",
    "clips.train_stride_seconds=10",
    "clips.inference_stride_seconds=10",
    "train.epochs=1",
    "train.batch_size=4",
    "train.loader_workers=0",
]


def test_train_predict_evaluate_from_the_command_line(tiny_dataset, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset.root), "--out", str(run), *TINY]) == 0
    out = tmp_path / "test"
    checkpoint = run / "checkpoints" / "best.pt"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(tiny_dataset.root),
                "--split",
                "test",
                "--out",
                str(out),
            ]
        )
        == 0
    )

    games = tiny_dataset.splits["test"]
    assert per_position.list_games(out / "per_position") == sorted(games)
    halves = per_position.read_game(out / "per_position", games[0])
    assert set(halves) == {1, 2}
    for array in halves.values():
        assert array.shape[1] == 17 and np.isfinite(array).all() and (array >= 0).all()
    with zipfile.ZipFile(out / "predictions.zip") as archive:
        assert sorted(archive.namelist()) == sorted(f"{g}/results_spotting.json" for g in games)

    capsys.readouterr()
    code = main(
        [
            "evaluate",
            "--labels",
            str(tiny_dataset.root),
            "--predictions",
            str(out / "predictions.zip"),
            "--split",
            "test",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= result["a_mAP"] <= 1.0 and len(result["a_mAP_per_class"]) == 17

    # Only post-processing may change at prediction time: the network is the checkpoint's.
    bad = ["predict", "--checkpoint", str(checkpoint), "--data", str(tiny_dataset.root)]
    bad += ["--split", "test", "--out", str(tmp_path / "other"), "model.d_model=32"]
    assert main(bad) == 2
    assert "only inference.* settings" in capsys.readouterr().err


def test_predict_uses_the_weight_average_of_last_pt_as_of_best_pt(tiny_dataset, tmp_path: Path) -> None:
    # One epoch with train.ema_decay: best.pt holds the average, and last.pt the raw weights beside it.
    run = tmp_path / "run"
    assert (
        main(["train", "--data", str(tiny_dataset.root), "--out", str(run), *TINY, "train.ema_decay=0.9"])
        == 0
    )
    outputs = {}
    for name in ("best.pt", "last.pt"):
        out = tmp_path / name
        args = ["predict", "--checkpoint", str(run / "checkpoints" / name), "--data", str(tiny_dataset.root)]
        assert main([*args, "--split", "test", "--out", str(out)]) == 0
        game = tiny_dataset.splits["test"][0]
        outputs[name] = per_position.read_game(out / "per_position", game)
    for half, array in outputs["best.pt"].items():
        np.testing.assert_array_equal(outputs["last.pt"][half], array)
