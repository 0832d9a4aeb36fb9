"""`RunFolder` on its own: a folder belongs to one run, a restart clears only what a run wrote,
and a folder a killed save left is repaired to the best checkpoint ``last.pt`` names.

The checkpoints here are small dictionaries with the keys the folder reads (``model``,
``config``, ``training``); no model is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from astra.data.dataset import DataRoots
from astra.training import checkpoint
from astra.training.run_folder import CONFIG_NAME, IDENTITY_NAME, RunFolder, RunFolderError


def _state(config, epoch: int, best_epoch: int) -> dict:
    return {"model": {}, "config": config.to_dict(), "training": {"epoch": epoch, "best_epoch": best_epoch}}


def test_a_claimed_folder_records_the_run_and_accepts_only_resumable_changes(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    folder = RunFolder(tmp_path / "run")
    config = tiny_config()
    folder.claim(config, roots)
    identity = json.loads((folder.root / IDENTITY_NAME).read_text())
    assert identity["config"] == config.to_dict()
    assert set(identity["splits"]) == {config.data.train_split, config.data.valid_split}
    assert yaml.safe_load((folder.root / CONFIG_NAME).read_text()) == config.to_dict()

    folder.check(tiny_config("train.epochs=7", "train.loader_workers=1"), roots)  # extends the run
    with pytest.raises(RunFolderError, match=r"holds another run \(train\.seed: 0 there, 5 now\).*--restart"):
        folder.check(tiny_config("train.seed=5"), roots)
    folder.check(tiny_config("train.seed=5"), roots, restart=True)  # to be cleared: accepted


def test_a_folder_without_run_json_is_judged_by_the_config_of_its_last_checkpoint(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints.mkdir(parents=True)
    checkpoint.save_atomic(_state(tiny_config("model.d_model=32"), 0, 0), folder.last)
    with pytest.raises(RunFolderError, match=r"model\.d_model: 32 there, 16 now"):
        folder.check(tiny_config(), roots)


def test_a_damaged_run_json_is_named(tiny_dataset, tiny_config, tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    (folder.root / IDENTITY_NAME).write_text('{"config": ')
    with pytest.raises(RunFolderError, match=r"run\.json: damaged .*--restart"):
        folder.check(tiny_config(), DataRoots.single(tiny_dataset.root))


def test_resumes_only_from_a_checkpoint_that_a_restart_does_not_delete(tiny_config, tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    assert not folder.resumes()
    folder.checkpoints.mkdir(parents=True)
    checkpoint.save_atomic(_state(tiny_config(), 0, 0), folder.last)
    assert folder.resumes()
    assert not folder.resumes(restart=True)  # last.pt is deleted by the restart
    elsewhere = tmp_path / "elsewhere.pt"
    checkpoint.save_atomic(_state(tiny_config(), 0, 0), elsewhere)
    assert folder.resumes(elsewhere, restart=True)  # a checkpoint outside the folder survives it


def test_a_restart_clears_what_a_run_wrote_and_keeps_other_files(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    folder = RunFolder(tmp_path / "run")
    folder.claim(tiny_config(), roots)
    checkpoint.save_atomic(_state(tiny_config(), 0, 0), folder.last)
    (folder.root / "tensorboard").mkdir()
    (folder.root / "notes.txt").write_text("mine")
    folder.claim(tiny_config("train.seed=5"), roots, restart=True)
    assert not folder.checkpoints.exists() and not (folder.root / "tensorboard").exists()
    assert (folder.root / "notes.txt").read_text() == "mine"
    assert json.loads((folder.root / IDENTITY_NAME).read_text())["config"]["train"]["seed"] == 5


def test_record_puts_back_the_best_checkpoint_that_last_pt_names(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    """A save killed after best.pt of epoch 3 was renamed in, before last.pt (which names epoch 2)."""
    roots, config = DataRoots.single(tiny_dataset.root), tiny_config()
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints.mkdir(parents=True)
    checkpoint.save_atomic(_state(config, 2, 2), folder.last)
    checkpoint.save_atomic(_state(config, 2, 2), folder.previous_best)
    checkpoint.save_atomic(_state(config, 3, 3), folder.best)
    (folder.checkpoints / ".last.pt.abc.tmp").write_bytes(b"torn")
    folder.record(config, roots)
    assert checkpoint.load(folder.best)["training"]["epoch"] == 2
    assert sorted(p.name for p in folder.checkpoints.iterdir()) == ["best.pt", "last.pt"]


def test_record_refuses_a_folder_whose_named_best_checkpoint_is_gone(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    roots, config = DataRoots.single(tiny_dataset.root), tiny_config()
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints.mkdir(parents=True)
    checkpoint.save_atomic(_state(config, 4, 2), folder.last)
    with pytest.raises(
        RunFolderError, match=r"last\.pt names epoch 3 as the best, but .*best\.pt is missing"
    ):
        folder.record(config, roots)


def test_a_fresh_start_drops_a_best_pt_whose_first_save_was_cut_short(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    roots, config = DataRoots.single(tiny_dataset.root), tiny_config()
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints.mkdir(parents=True)
    checkpoint.save_atomic(_state(config, 0, 0), folder.best)  # killed before its last.pt
    folder.record(config, roots)
    assert not folder.best.exists()


def test_an_out_that_is_a_file_is_refused(tiny_dataset, tiny_config, tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(RunFolderError, match=r"--out .*run: is a file, not a folder"):
        RunFolder(tmp_path / "run").check(tiny_config(), DataRoots.single(tiny_dataset.root))
    with pytest.raises(RunFolderError, match=r"--out .*run/inner: .*run is a file, not a folder"):
        RunFolder(tmp_path / "run" / "inner").check(tiny_config(), DataRoots.single(tiny_dataset.root))
