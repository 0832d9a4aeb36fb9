"""Bad configs, run folders, checkpoints and prediction folders through the command line.

Each case exits with status 2 and a sentence that names the key, the file or the folder,
and writes nothing: a config that cannot train is refused before any data is read, a run
folder holding another run is refused before the folder changes, a checkpoint that does
not fit says what does not, a prediction never mixes two splits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from astra.cli import main
from astra.training import checkpoint


class Foreign:
    """An object a checkpoint must not hold: loading it would run this module's code."""


VISUAL_ONLY = ["model.use_audio=false", "train.epochs=1"]


def _train(data: Path, out: Path, *overrides: str, tiny: list[str], extra: tuple[str, ...] = ()) -> int:
    return main(["train", "--data", str(data), "--out", str(out), *extra, *tiny, *VISUAL_ONLY, *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_dataset, tiny_overrides: list[str]) -> Path:
    """A finished one-epoch run of the tiny model (visual only) on the tiny dataset."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert _train(tiny_dataset.root, out, tiny=tiny_overrides) == 0
    return out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", r"train\.epochs must be >= 1, got 0"),
        ("train.warmup_epochs=-2", r"train\.warmup_epochs must be >= 0, got -2"),
        ("train.batch_size=0", r"train\.batch_size must be >= 1, got 0"),
        ("model.num_heads=0", r"model\.num_heads must be >= 1, got 0"),
        ("clips.class_radius_seconds=.nan", r"clips\.class_radius_seconds must be a finite number"),
        ("train.base_learning_rate=-0.001", r"train\.base_learning_rate must be > 0"),
        ("model.pffn_dropout=1.5", r"model\.pffn_dropout must be < 1, got 1\.5"),
    ],
)
def test_a_config_that_cannot_train_is_refused_before_anything_is_read_or_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_overrides: list[str], override: str, message: str
) -> None:
    missing_data = tmp_path / "no-such-data"  # never opened: the config is refused first
    out = tmp_path / "run"
    assert _train(missing_data, out, override, tiny=tiny_overrides) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("case", ["a file", "under a file", "not writable"])
def test_an_unusable_out_is_refused_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_overrides: list[str], case: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = {"a file": blocker, "under a file": blocker / "run", "not writable": Path("/proc/astra-run")}[case]
    assert _train(tmp_path / "no-such-data", out, tiny=tiny_overrides) == 2
    error = capsys.readouterr().err
    assert f"--out {out}" in error and ("is a file" in error or "cannot write" in error)
    assert blocker.read_text() == "a file"


# The other commands' outputs: refused with a sentence before any input is opened (the inputs
# named here do not exist, so an output checked only after them would report them instead).
OTHER_OUTPUTS = {
    "synth": lambda missing, out: ["synth", str(out), "--games", "4", "--half-minutes", "1", "--no-audio",
                                   "--quiet"],
    "baseline": lambda missing, out: ["baseline", "--data", str(missing), "--split", "test", "--out",
                                      str(out)],
    "search-windows": lambda missing, out: ["search-windows", "--per-position", str(missing), "--labels",
                                            str(missing), "--split", "valid", "--out", str(out)],
    "predict": lambda missing, out: ["predict", "--checkpoint", str(missing / "best.pt"), "--data",
                                     str(missing), "--split", "test", "--out", str(out)],
}  # fmt: skip


@pytest.mark.parametrize("case", ["a file", "under a file", "not writable"])
@pytest.mark.parametrize("command", sorted(OTHER_OUTPUTS))
def test_an_unusable_out_of_another_command_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, case: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = {"a file": blocker, "under a file": blocker / "out", "not writable": Path("/proc/astra-out")}[case]
    if command == "search-windows":  # its --out is a file: the unusable one is a folder
        out = {"a file": tmp_path, "under a file": blocker / "windows.yaml",
               "not writable": Path("/proc/windows.yaml")}[case]  # fmt: skip
    name = "OUT" if command == "synth" else "--out"
    assert main(OTHER_OUTPUTS[command](tmp_path / "no-such-input", out)) == 2
    error = capsys.readouterr().err
    assert f"{name} {out}: " in error, error
    assert re.search(r"is a (file|folder), not a (folder|file)|cannot write in /proc", error), error
    assert "Traceback" not in error and "Errno" not in error
    assert blocker.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


@pytest.mark.parametrize("restart", [False, True])
def test_train_on_ray_workers_reads_the_data_before_the_folder_becomes_its_run(
    tmp_path: Path,
    make_tiny_dataset,
    tiny_overrides: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    restart: bool,
) -> None:
    """``--workers 2`` on data missing a file: refused before run.json is written, before --restart
    deletes the earlier run, and before Ray starts."""
    from astra.training import ray_train

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started on data that cannot train")

    monkeypatch.setattr(ray_train, "connect_ray", no_ray)
    monkeypatch.setattr(ray_train, "train_with_ray", no_ray)
    data = make_tiny_dataset(tmp_path / "data")
    missing = data.root / data.splits["train"][0] / "2_baidu_soccer_embeddings.npy"
    missing.unlink()
    out = tmp_path / "run"
    if restart:  # an earlier run that --restart would delete
        (out / "checkpoints").mkdir(parents=True)
        (out / "checkpoints" / "last.pt").write_bytes(b"the earlier run")
        (out / "run.json").write_text("{}")
    before = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    extra = ("--workers", "2", *(("--restart",) if restart else ()))
    assert _train(data.root, out, tiny=tiny_overrides, extra=extra) == 2
    error = capsys.readouterr().err
    assert str(missing) in error, error
    after = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_train_on_ray_workers_claims_the_folder_of_usable_data_before_ray_starts(
    tmp_path: Path, tiny_dataset, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from astra.training import ray_train

    out = tmp_path / "run"
    started = []

    def fake_train_with_ray(config: object, roots: object, out_dir: str, **kwargs: object) -> SimpleNamespace:
        assert json.loads((Path(out_dir) / "run.json").read_text())["config"]["train"]["epochs"] == 1
        started.append(kwargs["num_workers"])
        return SimpleNamespace(metrics={"best_valid_tight_a_map": 0.5})

    monkeypatch.setattr(ray_train, "connect_ray", lambda: "local")
    monkeypatch.setattr(ray_train, "train_with_ray", fake_train_with_ray)
    assert _train(tiny_dataset.root, out, tiny=tiny_overrides, extra=("--workers", "2")) == 0
    assert started == [2]


def test_a_folder_of_another_model_size_is_refused_with_what_differs(
    trained: Path, tiny_dataset, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = (trained / "checkpoints" / "last.pt").read_bytes()
    assert _train(tiny_dataset.root, trained, "model.d_model=32", tiny=tiny_overrides) == 2
    error = capsys.readouterr().err
    assert f"{trained} holds another run" in error
    assert "model.d_model: 16 there, 32 now" in error and "--restart" in error
    assert (trained / "checkpoints" / "last.pt").read_bytes() == before


def test_a_folder_of_another_dataset_is_refused(
    trained: Path,
    make_tiny_dataset,
    tiny_overrides: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = make_tiny_dataset(tmp_path / "other").root
    assert _train(other, trained, tiny=tiny_overrides) == 2
    error = capsys.readouterr().err
    assert "data root labels" in error and str(other.resolve()) in error


def test_restart_starts_a_refused_folder_over(
    trained: Path, tiny_dataset, tiny_overrides: list[str], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    assert _train(tiny_dataset.root, copy, "model.d_model=32", tiny=tiny_overrides, extra=("--restart",)) == 0
    saved = checkpoint.load(copy / "checkpoints" / "best.pt")
    assert saved["config"]["model"]["d_model"] == 32
    assert json.loads((copy / "run.json").read_text())["config"]["model"]["d_model"] == 32


def test_a_checkpoint_of_another_size_names_the_keys_and_shapes(
    trained: Path, tiny_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = checkpoint.load(trained / "checkpoints" / "best.pt")
    saved["config"]["model"]["d_model"] = 32  # the weights stay those of d_model 16
    path = tmp_path / "mismatched.pt"
    torch.save(saved, path)
    out = tmp_path / "pred"
    code = main(["predict", "--checkpoint", str(path), "--data", str(tiny_dataset.root), "--split", "test",
                 "--out", str(out)])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert f"{path}: its weights do not fit this model" in error
    assert "of another shape" in error and "another model preset" in error
    assert not (out / "predictions.zip").exists()


def test_an_unreadable_checkpoint_never_suggests_loading_it_unsafely(
    tiny_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": Foreign()}, path)
    code = main(["predict", "--checkpoint", str(path), "--data", str(tiny_dataset.root), "--split", "test",
                 "--out", str(tmp_path / "pred")])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert f"{path}: not a checkpoint that astra wrote, or a damaged one" in error
    assert "weights_only" not in error.lower().replace(" ", "_")


def _predict_error(checkpoint_path: Path, tiny_dataset, tmp_path: Path, capsys) -> str:
    code = main(["predict", "--checkpoint", str(checkpoint_path), "--data", str(tiny_dataset.root),
                 "--split", "test", "--out", str(tmp_path / "pred")])  # fmt: skip
    assert code == 2
    return capsys.readouterr().err


def test_a_run_folder_given_as_checkpoint_points_to_its_best_pt(
    trained: Path, tiny_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _predict_error(trained, tiny_dataset, tmp_path, capsys)
    assert (
        f"{trained}: a folder, not a checkpoint file; did you mean {trained / 'checkpoints' / 'best.pt'}?"
        in error
    )
    assert "not found" not in error


def test_a_bare_state_dict_is_told_apart_from_a_damaged_checkpoint(
    trained: Path, tiny_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(checkpoint.load(trained / "checkpoints" / "best.pt")["model"], path)
    error = _predict_error(path, tiny_dataset, tmp_path, capsys)
    assert f"{path}: not an ASTRA checkpoint (it holds" in error and "as a bare state_dict does" in error
    torch.save({"model": {}}, path)
    assert "it lacks the key 'config'" in _predict_error(path, tiny_dataset, tmp_path, capsys)


def test_a_config_error_inside_a_checkpoint_says_it_comes_from_the_checkpoint(
    trained: Path, tiny_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = checkpoint.load(trained / "checkpoints" / "best.pt")
    saved["config"]["train"]["epochs"] = 0
    path = tmp_path / "bad-config.pt"
    torch.save(saved, path)
    code = main(["predict", "--checkpoint", str(path), "--data", str(tiny_dataset.root), "--split", "test",
                 "--out", str(tmp_path / "pred")])  # fmt: skip
    assert code == 2
    assert (
        f"{path}: the config stored in this checkpoint: train.epochs must be >= 1" in capsys.readouterr().err
    )


def test_a_prediction_folder_holds_one_split(
    trained: Path, tiny_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    best = str(trained / "checkpoints" / "best.pt")
    out = tmp_path / "pred"
    predict = ["predict", "--checkpoint", best, "--data", str(tiny_dataset.root), "--out", str(out)]
    assert main([*predict, "--split", "test"]) == 0
    test_games = sorted(p.parent.name for p in (out / "per_position").rglob("per_position.npz"))
    assert main([*predict, "--split", "valid"]) == 2
    assert "holds a prediction of split 'test'" in capsys.readouterr().err
    assert sorted(p.parent.name for p in (out / "per_position").rglob("per_position.npz")) == test_games
    assert main([*predict, "--split", "valid", "--overwrite"]) == 0
    manifest = json.loads((out / "prediction.json").read_text())
    assert manifest["split"] == "valid"
    games = sorted(
        str(p.parent.relative_to(out / "per_position")) for p in (out / "per_position").rglob("*.npz")
    )
    assert games == sorted(manifest["games"])
    results = sorted(
        str(p.parent.relative_to(out / "predictions")) for p in (out / "predictions").rglob("*.json")
    )
    assert results == games  # nothing of the test split is left beside the valid one
    assert not list(out.glob(".staging-*"))
