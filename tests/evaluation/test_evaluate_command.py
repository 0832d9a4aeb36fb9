"""``astra evaluate``: the JSON line, the table, zips, splits, errors, and no torch on the way."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from astra.classes import CLASSES
from astra.cli import main
from astra.evaluation import evaluate_files

KEYS = {
    "a_mAP",
    "a_mAP_per_class",
    "a_mAP_visible",
    "a_mAP_per_class_visible",
    "a_mAP_unshown",
    "a_mAP_per_class_unshown",
}


def run_evaluate(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(["evaluate", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_is_the_last_line_with_the_official_keys(
    random_case: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    case = random_case(seed=21, num_games=3)
    arguments = ["--labels", str(case.labels_root), "--predictions", str(case.predictions_root)]
    code, out, _ = run_evaluate(capsys, *arguments, "--metric", "loose", "--json")
    assert code == 0
    values = json.loads(out.strip().splitlines()[-1])
    assert set(values) == KEYS
    assert len(values["a_mAP_per_class"]) == len(CLASSES)
    assert values == evaluate_files(case.labels_root, case.predictions_root, metric="loose").to_dict()


def test_table_shows_every_class(random_case: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    case = random_case(seed=22, num_games=2)
    code, out, _ = run_evaluate(
        capsys, "--labels", str(case.labels_root), "--predictions", str(case.predictions_root)
    )
    assert code == 0
    for name in CLASSES:
        assert name in out
    result = evaluate_files(case.labels_root, case.predictions_root, metric="tight")
    assert "a-mAP" in out and f"{100 * result.a_mAP:.2f}" in out


def test_a_zip_scores_as_its_folder(
    random_case: Callable[..., Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    case = random_case(seed=23, num_games=3)
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for game in case.games:
            path = case.predictions_root / game / "results_spotting.json"
            writer.write(path, f"{game}/results_spotting.json")
    outputs = []
    for predictions in (case.predictions_root, archive):
        code, out, _ = run_evaluate(
            capsys, "--labels", str(case.labels_root), "--predictions", str(predictions), "--json"
        )
        assert code == 0
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]


def test_split_selects_its_games(random_case: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    case = random_case(seed=24, num_games=3)
    (case.labels_root / "splits.json").write_text(json.dumps({"test": [case.games[1]]}))
    code, out, _ = run_evaluate(
        capsys,
        *("--labels", str(case.labels_root), "--predictions", str(case.predictions_root)),
        *("--split", "test", "--json"),
    )
    assert code == 0
    expected = evaluate_files(case.labels_root, case.predictions_root, games=[case.games[1]])
    assert json.loads(out.strip().splitlines()[-1]) == expected.to_dict()


def test_a_missing_predictions_file_is_an_error_naming_the_game(
    random_case: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    case = random_case(seed=25, num_games=3)
    shutil.rmtree(case.predictions_root / case.games[2])
    arguments = ["--labels", str(case.labels_root), "--predictions", str(case.predictions_root), "--json"]
    code, out, err = run_evaluate(capsys, *arguments)
    assert code == 2 and out == ""
    assert case.games[2] in err and "allow" in err
    code, out, err = run_evaluate(capsys, *arguments, "--allow-missing")
    assert code == 0 and set(json.loads(out.strip().splitlines()[-1])) == KEYS


def test_a_malformed_predictions_file_is_an_error_naming_it(
    random_case: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    case = random_case(seed=26, num_games=2)
    path = case.predictions_root / case.games[0] / "results_spotting.json"
    document = json.loads(path.read_text())
    document["predictions"][3]["half"] = "3"
    path.write_text(json.dumps(document))
    code, _, err = run_evaluate(
        capsys, "--labels", str(case.labels_root), "--predictions", str(case.predictions_root)
    )
    assert code == 2
    assert str(path) in err and "prediction 3" in err and "half" in err


def test_evaluate_imports_neither_torch_nor_ray(random_case: Callable[..., Any]) -> None:
    case = random_case(seed=27, num_games=1)
    command = [sys.executable, "-X", "importtime", "-m", "astra", "evaluate"]
    command += ["--labels", str(case.labels_root), "--predictions", str(case.predictions_root), "--json"]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in completed.stderr.splitlines() if "|" in line}
    assert "numpy" in imported  # the import log is there
    assert not {name for name in imported if name.split(".")[0] in ("torch", "ray", "polars", "optuna")}
    assert set(json.loads(completed.stdout.strip().splitlines()[-1])) == KEYS
