"""A prediction folder: one split's per-position outputs, results and challenge zip (numpy only).

``astra predict`` and the ensembles write the same layout under ``OUT``::

    per_position/<game>/per_position.npz       [frames at 2 fps, 17] per half, float16, before NMS
    predictions/<game>/results_spotting.json   the official format, after NMS
    predictions.zip                            the same tree, zipped (a challenge submission)
    prediction.json                            the split, its games and where the outputs came from

A folder holds exactly one split's outputs: everything is written into a staging folder
beside them and moved in at the end, so that a prediction never leaves another split's
games behind, and a killed one leaves the previous prediction whole. Predicting another
split into a folder is refused unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astra import per_position
from astra.config import InferenceConfig
from astra.files import OutputPathError, atomic_write, check_output_folder
from astra.postprocess.decode import decode_game
from astra.processes import check_workers, iterate_games
from astra.submission import results_document, write_documents

PER_POSITION_DIR = "per_position"
PREDICTIONS_DIR = "predictions"
ZIP_NAME = "predictions.zip"
MANIFEST_NAME = "prediction.json"
_STAGING_PREFIX = ".staging-"


class PredictionError(ValueError):
    """A prediction folder that cannot be written or read as asked; the message names it."""


@dataclass(frozen=True)
class Prediction:
    """What a prediction folder holds.

    Attributes:
        out_dir: the folder.
        split: the split predicted.
        games: its games, in prediction order.
    """

    out_dir: Path
    split: str
    games: tuple[str, ...]

    @property
    def per_position_dir(self) -> Path:
        return self.out_dir / PER_POSITION_DIR

    @property
    def zip_path(self) -> Path:
        return self.out_dir / ZIP_NAME


def write_prediction(
    out_dir: str | Path,
    split: str,
    outputs: Iterable[tuple[str, Mapping[int, np.ndarray]]] | Mapping[str, Mapping[int, np.ndarray]],
    inference: InferenceConfig,
    *,
    source: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    workers: int = 1,
) -> Prediction:
    """Write the outputs of ``split``: ``(game, {half: [F, 17]})`` pairs, consumed one at a time,
    or a mapping ``{game: halves}`` that computes or reads each game when asked (an ensemble's
    average, say).

    Each game's outputs are written as they come (memory holds one game's arrays), and its
    results decoded with ``inference`` (NMS and its windows) from the outputs as written
    (float16, ``astra.per_position``), so that they are the results of the per-position files.
    ``source`` is recorded in ``prediction.json`` (the checkpoint, the ensemble's members, ...).
    ``workers`` > 1 decodes the games in that many processes, with the same results; given a
    mapping (which must pickle), the processes also ask it for the games and write them.
    """
    out_dir = Path(out_dir)
    check_workers(workers)
    check_target(out_dir, split, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out_dir))
    try:
        folder = staging / PER_POSITION_DIR
        if isinstance(outputs, Mapping):
            games = list(outputs)
            if not games:
                raise PredictionError(f"split {split!r}: no games to write into {out_dir}")
            documents = iterate_games(_write_and_decode, games, outputs, folder, inference, workers=workers)
        else:
            games = []
            for game, halves in outputs:
                if game in games:
                    raise PredictionError(f"split {split!r}: game {game!r} given twice")
                per_position.write_game(folder, game, dict(halves))
                games.append(game)
            if not games:
                raise PredictionError(f"split {split!r}: no games to write into {out_dir}")
            documents = iterate_games(_decode_stored, games, folder, inference, workers=workers)
        # Written (and compressed into the zip) as the processes hand them over; on an error, the
        # processes stop before the staging folder is removed.
        with contextlib.closing(documents):
            pairs = (document for _, document in documents)
            write_documents(staging / PREDICTIONS_DIR, pairs, zip_path=staging / ZIP_NAME)
        manifest = {
            "split": split,
            "games": games,
            "nms": inference.nms,
            "nms_windows_seconds": list(inference.nms_windows_seconds),
            "source": dict(source or {}),
        }
        _swap_in(staging, out_dir)
        with atomic_write(out_dir / MANIFEST_NAME, "w") as f:
            json.dump(manifest, f, indent=1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Prediction(out_dir, split, tuple(games))


def _write_and_decode(
    games: list[str],
    outputs: Mapping[str, Mapping[int, np.ndarray]],
    folder: Path,
    inference: InferenceConfig,
) -> dict[str, tuple[str, bytes]]:
    """Each game of ``outputs`` written to ``folder``, then decoded as :func:`_decode_stored`."""
    for game in games:
        per_position.write_game(folder, game, dict(outputs[game]))
    return _decode_stored(games, folder, inference)


def _decode_stored(
    games: list[str], folder: Path, inference: InferenceConfig
) -> dict[str, tuple[str, bytes]]:
    """Each game's results file, rendered (``astra.submission.results_document``)."""
    return {
        game: results_document(game, decode_game(per_position.read_game(folder, game), inference))
        for game in games
    }


def read_prediction(out_dir: str | Path) -> Prediction:
    """The split and games of a prediction folder written by :func:`write_prediction`."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise PredictionError(f"{path}: not found; {out_dir} is not a prediction folder written by astra")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return Prediction(Path(out_dir), str(manifest["split"]), tuple(manifest["games"]))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise PredictionError(f"{path}: damaged ({error})") from None


def check_target(out_dir: Path, split: str, *, overwrite: bool) -> None:
    """Refuse, before any work, an ``out_dir`` that cannot take a prediction of ``split``: a file,
    under a file, where nothing can be written, or holding another split's prediction."""
    try:
        check_output_folder(out_dir)
    except OutputPathError as error:
        raise PredictionError(str(error)) from None
    if overwrite or not out_dir.is_dir():
        return
    manifest = out_dir / MANIFEST_NAME
    if manifest.is_file():
        previous = read_prediction(out_dir).split
        if previous != split:
            raise PredictionError(
                f"{out_dir} holds a prediction of split {previous!r}; predicting {split!r} there would "
                "mix the two: use another --out, or --overwrite to replace it"
            )
    elif (out_dir / PER_POSITION_DIR).exists() or (out_dir / PREDICTIONS_DIR).exists():
        raise PredictionError(
            f"{out_dir} holds per_position/ or predictions/ of an unknown prediction (no {MANIFEST_NAME}): "
            "use another --out, or --overwrite to replace them"
        )


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Move the staged outputs over the folder's, the old ones aside first and then removed."""
    retired = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out_dir))
    for name in (PER_POSITION_DIR, PREDICTIONS_DIR, ZIP_NAME, MANIFEST_NAME):
        if (out_dir / name).exists():
            (out_dir / name).rename(retired / name)
    for name in (PER_POSITION_DIR, PREDICTIONS_DIR, ZIP_NAME):
        (staging / name).rename(out_dir / name)
    shutil.rmtree(retired, ignore_errors=True)


def _remove_stale_staging(out_dir: Path) -> None:
    """Staging folders of a killed earlier prediction: never moved in, safe to remove."""
    for stale in out_dir.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
