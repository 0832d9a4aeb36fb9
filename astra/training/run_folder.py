"""A run folder: one training run's files, what defines the run, and saves that a kill cannot tear.

Layout of ``OUT``::

    run.json               what defines the run: its config, its data roots, a fingerprint of its splits
    config.yaml            the full config, readable by ``--config``
    checkpoints/last.pt    everything a resumed run needs (rewritten every epoch)
    checkpoints/best.pt    the weights of the best validated epoch (what predictions use)
    tensorboard/           training curves

Guarantees:

- A folder belongs to one run. Resuming with another config, other data roots or other split
  lists is refused with what differs (``restart`` clears the folder and starts over). Only
  ``train.epochs``, ``train.patience_epochs``, ``train.loader_workers`` and the speed switches
  (``RESUMABLE_CHANGES``) may change on resume: they extend or stop a run, or change how fast it
  runs, without changing what it has done so far.
- ``last.pt`` never claims a best checkpoint that is not on disk. An epoch that improves
  saves ``best.pt`` first (the previous one kept aside as a hard link), then ``last.pt``, then
  drops the previous one; a run killed anywhere in that sequence restarts from the last
  ``last.pt`` and finds the ``best.pt`` it names (put back from the kept one if needed).
- Each file is written atomically (a temporary file renamed over it); temporary files of a
  killed run are removed on the next start.
- An unusable folder (a file, under a file, not writable) is refused before any data loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from astra.config import SPEED_SETTINGS, ExperimentConfig, flatten
from astra.data.dataset import DataRoots
from astra.data.splits import games_of_split
from astra.files import OutputPathError, atomic_write, check_output_folder, link_or_copy
from astra.training import checkpoint

log = logging.getLogger(__name__)

IDENTITY_NAME = "run.json"
CONFIG_NAME = "config.yaml"
PREVIOUS_BEST = "best-previous.pt"
# Settings that may change when a run resumes: they extend or end it, and change nothing it did.
RESUMABLE_CHANGES: tuple[str, ...] = (
    "train.epochs",
    "train.patience_epochs",
    "train.loader_workers",
    *SPEED_SETTINGS,  # how fast an epoch runs, not what it computes
)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message names it and says what to do."""


class RunFolder:
    """The files of one training run under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / checkpoint.LAST
        self.best = self.checkpoints / checkpoint.BEST
        self.previous_best = self.checkpoints / PREVIOUS_BEST

    def claim(
        self,
        config: ExperimentConfig,
        roots: DataRoots,
        *,
        resume_path: Path | None = None,
        restart: bool = False,
        write: bool = True,
    ) -> None:
        """Make the folder this run's: :meth:`check`, then :meth:`record` (``write=False``: check only)."""
        self.check(config, roots, resume_path=resume_path, restart=restart)
        if write:
            self.record(config, roots, resume_path=resume_path, restart=restart)

    def check(
        self,
        config: ExperimentConfig,
        roots: DataRoots,
        *,
        resume_path: Path | None = None,
        restart: bool = False,
    ) -> None:
        """Refuse, before any data loads and writing nothing but the folder itself, a folder that is
        unusable or holds another run (``run.json``, or the config of the checkpoint to resume from).
        With ``restart`` the folder's run is to be cleared, so what it holds does not matter."""
        check_writable(self.root)
        if restart:
            return
        identity = run_identity(config, roots)
        recorded = self._recorded_identity()
        resume_path = resume_path or self.last
        if recorded is None and resume_path.is_file():
            recorded = {"config": checkpoint.load(resume_path, map_location="cpu", mmap=True)["config"]}
        if recorded is not None:
            differences = identity_differences(recorded, identity)
            if differences:
                raise RunFolderError(
                    f"{self.root} holds another run ({'; '.join(differences[:5])}"
                    + (f"; {len(differences) - 5} more" if len(differences) > 5 else "")
                    + "): use another --out, or --restart to delete its checkpoints and start over"
                )

    def resumes(self, resume_path: Path | None = None, *, restart: bool = False) -> bool:
        """Whether a run started with these arguments continues from ``resume_path`` (by default
        ``last.pt``): the file exists and is not one that ``restart`` is about to delete (a
        checkpoint inside this folder). Ask before :meth:`record`, which clears the folder."""
        resume_path = resume_path or self.last
        return resume_path.is_file() and not (
            restart and resume_path.resolve().is_relative_to(self.root.resolve())
        )

    def record(
        self,
        config: ExperimentConfig,
        roots: DataRoots,
        *,
        resume_path: Path | None = None,
        restart: bool = False,
    ) -> None:
        """Clear the folder (``restart``), repair what a killed save left, and record this run."""
        if restart:
            self.clear()
        resume_path = resume_path or self.last
        identity = run_identity(config, roots)
        self._repair(resume_path)
        with atomic_write(self.root / IDENTITY_NAME, "w") as f:
            json.dump(identity, f, indent=1)
        with atomic_write(self.root / CONFIG_NAME, "w") as f:
            yaml.safe_dump(config.to_dict(), f, sort_keys=False)

    def save(self, last: dict[str, Any], best: dict[str, Any] | None) -> None:
        """Save an epoch: ``best.pt`` first when the epoch is the best so far, then ``last.pt``.

        The previous ``best.pt`` stays as a hard link until ``last.pt`` (which names the best
        epoch) is written, so that a kill in between finds the best checkpoint ``last.pt`` names.
        """
        if best is not None:
            if self.best.is_file():
                link_or_copy(self.best, self.previous_best)
            checkpoint.save_atomic(best, self.best)
        checkpoint.save_atomic(last, self.last)
        self.previous_best.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete what a run wrote here (checkpoints, curves, identity, Ray Train's copies); other
        files stay."""
        for name in ("checkpoints", "tensorboard", "ray"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in (IDENTITY_NAME, CONFIG_NAME):
            (self.root / name).unlink(missing_ok=True)

    def _recorded_identity(self) -> dict[str, Any] | None:
        path = self.root / IDENTITY_NAME
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RunFolderError(f"{path}: damaged ({error}); use --restart to start this run over") from None

    def _repair(self, resume_path: Path) -> None:
        """Remove temporary files of a killed save; make ``best.pt`` the one ``resume_path`` names."""
        if self.checkpoints.is_dir():
            for temporary in self.checkpoints.glob(".*.tmp"):
                temporary.unlink(missing_ok=True)
        if not resume_path.is_file():
            # A fresh start: a best.pt without a last.pt is a first save that was cut short.
            self.best.unlink(missing_ok=True)
            self.previous_best.unlink(missing_ok=True)
            return
        claimed = int(_training_record(resume_path)["best_epoch"])
        if self.best.is_file() and int(_training_record(self.best)["epoch"]) == claimed:
            self.previous_best.unlink(missing_ok=True)
        elif self.previous_best.is_file() and int(_training_record(self.previous_best)["epoch"]) == claimed:
            os.replace(self.previous_best, self.best)
            log.info("restored %s of epoch %d, which a killed save had replaced", self.best, claimed + 1)
        elif claimed < 0:
            self.best.unlink(missing_ok=True)
            self.previous_best.unlink(missing_ok=True)
        elif not self.best.is_file():
            raise RunFolderError(
                f"{resume_path} names epoch {claimed + 1} as the best, but {self.best} is missing: "
                "use --restart to start this run over"
            )


def check_writable(root: Path) -> None:
    """Refuse an output folder that is a file, lies under a file or cannot be written; then make it."""
    try:
        check_output_folder(root)
        root.mkdir(parents=True, exist_ok=True)
    except OutputPathError as error:
        raise RunFolderError(str(error)) from None
    except OSError as error:
        raise RunFolderError(f"--out {root}: cannot write there ({error.strerror or error})") from None


def run_identity(config: ExperimentConfig, roots: DataRoots) -> dict[str, Any]:
    """What defines a run: its config, its data roots and a fingerprint of its split lists."""
    splits = {}
    for split in filter(None, (config.data.train_split, config.data.valid_split)):
        games = games_of_split(split, roots.labels)
        splits[split] = hashlib.sha256("\n".join(games).encode("utf-8")).hexdigest()[:16]
    data = {
        name: str(Path(value).resolve()) if isinstance(value, Path) else value
        for name, value in dataclasses.asdict(roots).items()
    }
    return {"config": config.to_dict(), "data": data, "splits": splits}


def identity_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities (only what ``recorded`` holds is compared), in words."""
    differences = []
    old_config, new_config = flatten(recorded.get("config", {})), flatten(current["config"])
    for key in sorted(set(old_config) | set(new_config)):
        if key in RESUMABLE_CHANGES or old_config.get(key) == new_config.get(key):
            continue
        differences.append(f"{key}: {old_config.get(key, '(absent)')!r} there, {new_config.get(key)!r} now")
    for section, what in (("data", "data root"), ("splits", "split list")):
        if section not in recorded:
            continue
        for key in sorted(set(recorded[section]) | set(current[section])):
            old, new = recorded[section].get(key), current[section].get(key)
            if old != new:
                detail = f"{old!r} there, {new!r} now" if section == "data" else "other games"
                differences.append(f"{what} {key}: {detail}")
    return differences


def _training_record(path: Path) -> dict[str, Any]:
    return checkpoint.load(path, map_location="cpu", mmap=True)["training"]
