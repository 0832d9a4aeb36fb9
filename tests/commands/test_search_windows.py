"""`astra search-windows` on a validation split's per-position outputs, then `astra predict --windows`
with the windows it wrote, as a user runs them on the tiny dataset.

One model (trained one epoch) and its prediction of the valid split serve the module.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from astra.classes import CLASSES, NUM_CLASSES
from astra.cli import main
from astra.config import InferenceConfig
from astra.evaluation.outputs import score_outputs
from astra.search.windows import read_split_outputs

PAPER = InferenceConfig().nms_windows_seconds


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Any, tiny_overrides: list[str]) -> Any:
    """A checkpoint of the tiny model and its prediction of the valid split (the paper's windows)."""
    tmp = tmp_path_factory.mktemp("windows")
    data = str(tiny_dataset.root)
    overrides = [*tiny_overrides, "model.use_audio=false", "train.epochs=1", "train.warmup_epochs=0"]
    assert main(["train", "--data", data, "--out", str(tmp / "run"), *overrides]) == 0
    checkpoint = str(tmp / "run" / "checkpoints" / "best.pt")
    assert main(["predict", "--checkpoint", checkpoint, "--data", data, "--split", "valid",
                 "--out", str(tmp / "valid")]) == 0  # fmt: skip
    return SimpleNamespace(tmp=tmp, data=data, checkpoint=checkpoint, valid=tmp / "valid")


def _search(model: Any, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[dict, str]:
    capsys.readouterr()
    code = main(["search-windows", "--per-position", str(model.valid / "per_position"), "--labels",
                 model.data, "--split", "valid", "--out", str(out), "--method", "grid", *extra])  # fmt: skip
    assert code == 0
    return yaml.safe_load(out.read_text(encoding="utf-8")), capsys.readouterr().out


def _score(model: Any, windows: list[float], metric: str) -> float:
    """The valid a-mAP of the per-position outputs on disk with ``windows``, from the evaluator."""
    labels, outputs = read_split_outputs(model.valid / "per_position", model.data, "valid")
    inference = InferenceConfig(nms_windows_seconds=tuple(windows))
    return float(score_outputs(labels, outputs, inference, metric).a_mAP)


@pytest.mark.parametrize("metric", ["tight", "loose"])
def test_search_windows_writes_17_windows_that_score_at_least_the_papers(
    model: Any, capsys: pytest.CaptureFixture[str], metric: str
) -> None:
    out = model.tmp / f"windows-{metric}.yaml"
    document, printed = _search(model, out, capsys, *(["--metric", metric] if metric == "loose" else []))
    windows = document["nms_windows_seconds"]
    assert len(windows) == NUM_CLASSES and all(w > 0 for w in windows)
    assert (document["metric"], document["split"]) == (metric, "valid")
    assert list(document["classes"]) == list(CLASSES)
    for c, name in enumerate(CLASSES):
        entry = document["classes"][name]
        assert entry["window_seconds"] == windows[c] and entry["start_window_seconds"] == PAPER[c]
        assert entry["ap"] >= entry["start_ap"]  # a class keeps the paper's window unless another wins
    # What it reports is what the evaluator gives those windows on that split, and never less than
    # the paper's windows there.
    assert document["a_map"] == pytest.approx(_score(model, windows, metric), abs=1e-9)
    assert document["start_a_map"] == pytest.approx(_score(model, list(PAPER), metric), abs=1e-9)
    assert document["a_map"] >= document["start_a_map"]
    line = re.search(rf"{metric} a-mAP on valid: ([0-9.]+) with the searched windows, ([0-9.]+)", printed)
    assert line, printed
    assert float(line[1]) == pytest.approx(document["a_map"], abs=1e-4)
    assert float(line[2]) == pytest.approx(document["start_a_map"], abs=1e-4)
    assert document["a_map"] > document["start_a_map"], "no window changed: the check below would be empty"


def test_predict_with_windows_decodes_with_them(model: Any, capsys: pytest.CaptureFixture[str]) -> None:
    windows_file = model.tmp / "windows-for-predict.yaml"
    document, _ = _search(model, windows_file, capsys)
    windows = document["nms_windows_seconds"]
    changed = [CLASSES[c] for c in range(NUM_CLASSES) if windows[c] != PAPER[c]]
    assert changed
    out = model.tmp / "valid-searched"
    assert main(["predict", "--checkpoint", model.checkpoint, "--data", model.data, "--split", "valid",
                 "--out", str(out), "--windows", str(windows_file)]) == 0  # fmt: skip
    manifest = json.loads((out / "prediction.json").read_text())
    assert manifest["nms_windows_seconds"] == windows
    # The same network outputs; the detections of the classes whose window changed differ, the
    # others' are the same.
    default, searched = _spots(model.valid), _spots(out)
    assert set(default) == set(searched)
    for name in CLASSES:
        mine = {game: spots.get(name, []) for game, spots in searched.items()}
        paper = {game: spots.get(name, []) for game, spots in default.items()}
        if name not in changed:
            assert mine == paper, name
    assert any(
        searched[game].get(name, []) != default[game].get(name, []) for game in default for name in changed
    )


def test_search_windows_decodes_with_the_configs_inference_settings(
    model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run whose config changes its inference settings: the search starts from its windows and
    # decodes with its NMS and threshold, as astra predict of that run does.
    own = tuple(float(w) + 2.0 for w in PAPER)
    config = model.tmp / "run-config.yaml"
    config.write_text(yaml.safe_dump({"inference": {"nms_windows_seconds": list(own)}}), encoding="utf-8")
    out = model.tmp / "windows-own.yaml"
    document, _ = _search(model, out, capsys, "--config", str(config), "inference.nms=hard")
    assert [document["classes"][name]["start_window_seconds"] for name in CLASSES] == list(own)
    labels, outputs = read_split_outputs(model.valid / "per_position", model.data, "valid")
    hard = InferenceConfig(nms="hard", nms_windows_seconds=own)
    assert document["start_a_map"] == pytest.approx(
        float(score_outputs(labels, outputs, hard, "tight").a_mAP)
    )
    capsys.readouterr()
    arguments = ["--per-position", str(model.valid / "per_position"), "--labels", model.data]
    code = main(["search-windows", *arguments, "--split", "valid", "--out", str(out), "train.epochs=3"])
    assert code == 2 and "only inference.* settings" in capsys.readouterr().err


def _spots(prediction: Path) -> dict[str, dict[str, list[tuple[str, str, str]]]]:
    """The detections of a prediction's zip, by game and class: (half, position, confidence)."""
    spots: dict[str, dict[str, list[tuple[str, str, str]]]] = {}
    with zipfile.ZipFile(prediction / "predictions.zip") as archive:
        for name in archive.namelist():
            game = name.rsplit("/", 1)[0]
            by_class: dict[str, list[tuple[str, str, str]]] = {}
            for spot in json.loads(archive.read(name))["predictions"]:
                by_class.setdefault(spot["label"], []).append(
                    (str(spot["half"]), str(spot["position"]), str(spot["confidence"]))
                )
            spots[game] = {label: sorted(found) for label, found in by_class.items()}
    return spots
