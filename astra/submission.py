"""Predictions files: one ``results_spotting.json`` per game, and challenge submission zips.

The format is the one the official evaluator reads
(``SoccerNet.Evaluation.ActionSpotting.predictions2vector``; docs/data.md)::

    {"UrlLocal": "<game>",
     "predictions": [{"gameTime": "1 - 0:43", "label": "Kick-off", "position": "43000",
                      "half": "1", "confidence": "0.9512"}, ...]}

stored as ``<root>/<game>/results_spotting.json``; a challenge submission is a zip
of that tree (entries ``<game>/results_spotting.json``). Reading keeps the official
conventions: ``position`` and ``half`` go through ``int()``, ``confidence`` through
``float()`` (strings or numbers), ``gameTime`` and ``UrlLocal`` are not used for
scoring, labels outside the 17 classes are ignored (and counted), entries keep file
order because a later entry on the same frame and class overwrites an earlier one.

Where we are stricter than the official tool, which silently drops or misplaces
such entries: a half other than 1 or 2, a negative position (numpy would index it
from the end of the half) and a NaN or infinite confidence are errors naming the
file and the entry.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np

from astra.classes import CLASS_INDEX, CLASSES, FRAMES_PER_SECOND, NUM_CLASSES
from astra.data.labels import load_json
from astra.files import atomic_write

_msgspec: ModuleType | None
try:  # Optional: reads prediction files about twice as fast as the json module.
    import msgspec as _msgspec
except ImportError:
    _msgspec = None

RESULTS_FILENAME = "results_spotting.json"
# The first bytes of a zip: a local file header, or the end record of an empty zip.
_ZIP_SIGNATURES: tuple[bytes, ...] = (b"PK\x03\x04", b"PK\x05\x06")
# What a damaged zip raises while it is opened or read.
_ZIP_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, EOFError, OSError)
_HALVES: dict[Any, int] = {"1": 1, "2": 2, 1: 1, 2: 2}
_LABELS_JSON: tuple[str, ...] = tuple(json.dumps(name) for name in CLASSES)


class SubmissionError(ValueError):
    """A predictions file, folder or zip that cannot be used; the message names it."""


if _msgspec is not None:
    # The four fields the official tool reads, decoded straight into slots without a dict
    # per entry; other fields are skipped. The confidence, a string or a number, is parsed
    # to float64 here (exactly as float() does; strings float() accepts and this does not,
    # such as " 0.5", fail the decoding). Any other failure (a value of another type, a
    # missing field) sends the file to the json module and the entry-by-entry checks.
    # gc=False: decoded entries hold strings and numbers only and form no reference cycles,
    # so the garbage collector need not track the 2,000 or so of every file (10% faster).
    class _Prediction(_msgspec.Struct, gc=False):
        label: str | int | float | None
        half: str | int
        position: str | int
        confidence: float | None = None

    class _Results(_msgspec.Struct, gc=False):
        predictions: list[_Prediction]
        UrlLocal: Any = None

    _RESULTS_DECODER = _msgspec.json.Decoder(_Results, strict=False)


@dataclass(frozen=True, eq=False)
class Spots:
    """The predicted actions of one game, one entry per prediction, in file order.

    Attributes:
        half: ``[N]`` int8, 1 or 2.
        position_ms: ``[N]`` int64, milliseconds from the start of the half, >= 0.
        class_index: ``[N]`` int16, index into ``astra.classes.CLASSES``.
        confidence: ``[N]`` float64. Float64 rather than float32 because the official
            evaluator parses confidences as float64: float32 would merge nearby scores
            and change which prediction wins a tie. A negative confidence is no prediction.
        ignored: labels outside the 17 classes met when reading a file, with their counts.
    """

    half: np.ndarray
    position_ms: np.ndarray
    class_index: np.ndarray
    confidence: np.ndarray
    ignored: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        raw = {
            name: np.asarray(getattr(self, name))
            for name in ("half", "position_ms", "class_index", "confidence")
        }
        shapes = {name: array.shape for name, array in raw.items()}
        if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) != 1:
            raise SubmissionError(f"Spots arrays must be 1-D of one length, got shapes {shapes}")
        # Check the values before the narrowing casts, which would wrap silently.
        half, position_ms, classes = raw["half"], raw["position_ms"], raw["class_index"]
        if len(half) and (half.min() < 1 or half.max() > 2):
            raise SubmissionError(f"Spots.half must be 1 or 2, got {sorted(set(half.tolist()))}")
        if len(position_ms) and position_ms.min() < 0:
            raise SubmissionError(f"Spots.position_ms must be >= 0, got {position_ms.min()}")
        if len(classes) and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
            raise SubmissionError(
                f"Spots.class_index must lie in [0, {NUM_CLASSES}), got {classes.min()} to {classes.max()}"
            )
        object.__setattr__(self, "half", raw["half"].astype(np.int8, copy=False))
        object.__setattr__(self, "position_ms", raw["position_ms"].astype(np.int64, copy=False))
        object.__setattr__(self, "class_index", raw["class_index"].astype(np.int16, copy=False))
        object.__setattr__(self, "confidence", raw["confidence"].astype(np.float64, copy=False))

    def __len__(self) -> int:
        return int(self.half.shape[0])

    @classmethod
    def from_frames(
        cls,
        half: int | np.ndarray,
        frame: np.ndarray,
        class_index: np.ndarray,
        confidence: np.ndarray,
        frames_per_second: float = FRAMES_PER_SECOND,
    ) -> Spots:
        """Spots from frame indices: ``position_ms = frame * 1000 // frames_per_second``.

        ``half`` is one half for all entries or ``[N]``; ``frame``, ``class_index`` and
        ``confidence`` are ``[N]``. At 2 frames per second the official evaluator maps each
        position back to the same frame.
        """
        if not frames_per_second > 0:
            raise SubmissionError(f"frames_per_second must be positive, got {frames_per_second!r}")
        frame = np.asarray(frame, dtype=np.int64)
        position_ms = np.floor_divide(frame * 1000, frames_per_second).astype(np.int64)
        halves = np.broadcast_to(np.asarray(half, dtype=np.int8), frame.shape)
        return cls(halves, position_ms, class_index, confidence)

    @classmethod
    def empty(cls) -> Spots:
        """No predictions."""
        return cls(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))

    @classmethod
    def concatenate(cls, parts: Iterable[Spots]) -> Spots:
        """The entries of ``parts`` one after the other (later parts win ties on a frame and class)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        ignored: Counter[str] = Counter()
        for part in parts:
            ignored.update(part.ignored)
        return cls(
            np.concatenate([part.half for part in parts]),
            np.concatenate([part.position_ms for part in parts]),
            np.concatenate([part.class_index for part in parts]),
            np.concatenate([part.confidence for part in parts]),
            ignored,
        )


def write_results(path: str | Path, game: str, spots: Spots) -> None:
    """Write one game's ``results_spotting.json`` at ``path``, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, _results_bytes(game, spots, source=str(path)))


def read_results(path_or_bytes: str | Path | bytes, source: str | None = None) -> tuple[str | None, Spots]:
    """Read one ``results_spotting.json``: ``(UrlLocal or None, Spots)``.

    ``source`` names the file in error messages (defaults to the path). Raises
    :class:`SubmissionError` on a missing file, invalid JSON, a missing key or a bad value.
    """
    if isinstance(path_or_bytes, bytes):
        data = path_or_bytes
        source = source or "<bytes>"
    else:
        source = source or str(path_or_bytes)
        try:
            data = Path(path_or_bytes).read_bytes()
        except FileNotFoundError:
            raise SubmissionError(f"{source}: predictions file not found") from None
        except IsADirectoryError:
            raise SubmissionError(f"{source}: is a folder, expected a {RESULTS_FILENAME}") from None
    if _msgspec is not None:
        try:
            results = _RESULTS_DECODER.decode(data)
            entries = results.predictions
            spots = _spots_by_columns(
                [entry.label for entry in entries],
                [entry.half for entry in entries],
                [entry.position for entry in entries],
                [entry.confidence for entry in entries],
            )
        except (_msgspec.DecodeError, TypeError, ValueError, OverflowError):
            spots = None
        if spots is not None:
            return (results.UrlLocal if isinstance(results.UrlLocal, str) else None), spots
    return parse_results(load_json(data, source, SubmissionError), source)


def parse_results(document: Any, source: str) -> tuple[str | None, Spots]:
    """Turn a parsed ``results_spotting.json`` document into ``(UrlLocal or None, Spots)``."""
    if not isinstance(document, dict) or not isinstance(document.get("predictions"), list):
        raise SubmissionError(f"{source}: expected an object with a 'predictions' list")
    entries: list[Any] = document["predictions"]
    try:
        # One list comprehension per column is faster than any transposition of the entries.
        spots = _spots_by_columns(
            [entry["label"] for entry in entries],
            [entry["half"] for entry in entries],
            [entry["position"] for entry in entries],
            [entry["confidence"] for entry in entries],
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        spots = None
    if spots is None:
        # Something is off: go entry by entry, to name the first bad one (or to accept
        # what the official tool accepts, such as an ignored label without a confidence).
        spots = _spots_by_entries(entries, source)
    game = document.get("UrlLocal")
    return (game if isinstance(game, str) else None), spots


def write_submission(
    out_dir: str | Path, results: Mapping[str, Spots], zip_path: str | Path | None = None
) -> list[Path]:
    """Write ``<out_dir>/<game>/results_spotting.json`` per game and, if asked, the challenge zip.

    The zip's entries are ``<game>/results_spotting.json``. Every file is written
    atomically. Returns the paths of the written results files.
    """
    documents = dict(results_document(game, spots) for game, spots in results.items())
    return write_documents(out_dir, documents, zip_path)


def results_document(game: str, spots: Spots) -> tuple[str, bytes]:
    """The checked game name and the bytes of its ``results_spotting.json`` (what
    :func:`write_documents` writes): the rendering, apart from the writing, for processes."""
    name = _checked_game_name(game)
    return name, _results_bytes(name, spots, source=f"game {name!r}")


def write_documents(
    out_dir: str | Path,
    documents: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
    zip_path: str | Path | None = None,
) -> list[Path]:
    """Write rendered results (:func:`results_document`) as :func:`write_submission` does.

    ``documents``: ``{name: bytes}``, or ``(name, bytes)`` pairs written as they come (from
    processes still rendering the next ones, say): memory holds only what the source has not
    handed over yet.
    """
    out_dir = Path(out_dir)
    pairs = documents.items() if isinstance(documents, Mapping) else documents
    written: list[Path] = []
    with contextlib.ExitStack() as stack:
        archive = None
        if zip_path is not None:
            # Written straight into the temporary file, renamed into place once complete.
            target = stack.enter_context(atomic_write(zip_path))
            archive = stack.enter_context(zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED))
        names: set[str] = set()
        for name, data in pairs:
            if name in names:
                raise SubmissionError(f"game {name!r} given twice")
            names.add(name)
            path = out_dir / name / RESULTS_FILENAME
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
            written.append(path)
            if archive is not None:
                archive.writestr(f"{name}/{RESULTS_FILENAME}", data)
    return written


def open_predictions(dir_or_zip: str | Path) -> Mapping[str, Spots]:
    """The predictions of a folder tree or a submission zip, by game (relative path, ``/``-separated).

    Lazy: listing the games reads no predictions; each lookup reads that game's file.
    A damaged zip (cut short, say) is a :class:`SubmissionError` that says so.
    """
    path = Path(dir_or_zip)
    if path.is_dir():
        return _PredictionFiles(path, _games_in_folder(path), is_zip=False)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as file:
                head = file.read(4)
            if head in _ZIP_SIGNATURES or path.suffix.lower() == ".zip":
                raise SubmissionError(
                    f"{path}: a damaged zip (its table of contents cannot be read; was it cut short?)"
                )
            raise SubmissionError(f"{path}: expected a folder of predictions or a zip, got another file")
        try:
            with zipfile.ZipFile(path) as archive:
                entries = {
                    str(PurePosixPath(name).parent): name
                    for name in archive.namelist()
                    if PurePosixPath(name).name == RESULTS_FILENAME and PurePosixPath(name).parent.parts
                }
        except _ZIP_ERRORS as error:
            raise SubmissionError(f"{path}: a damaged zip ({error})") from None
        return _PredictionFiles(path, entries, is_zip=True)
    raise SubmissionError(f"{path}: predictions folder or zip not found")


def misplaced_games(predictions: Mapping[str, Spots], games: Sequence[str]) -> str:
    """Where ``games`` missing from ``predictions`` sit instead, in a sentence; ``""`` when nowhere.

    The usual slip is an extra top folder: a zip of ``run/<game>/...`` rather than of the
    game folders themselves, or a folder one level above the predictions root.
    """
    found: Counter[str] = Counter()
    available = list(predictions)
    for game in games:
        suffix = "/" + game.strip("/")
        prefix = next((name[: -len(suffix)] for name in available if name.endswith(suffix)), None)
        if prefix is not None:
            found[prefix] += 1
    if not found:
        return ""
    prefix, count = found.most_common(1)[0]
    if getattr(predictions, "is_zip", False):
        return (
            f"{count} of them found under the top folder '{prefix}/' in the zip; "
            "zip the game folders themselves"
        )
    root = getattr(predictions, "root", None)
    instead = f"; give {Path(root) / prefix} as the predictions folder" if root is not None else ""
    return f"{count} of them found under the folder '{prefix}/'{instead}"


class _PredictionFiles(Mapping[str, Spots]):
    """Game -> Spots over a folder (value: file path) or a zip (value: entry name)."""

    def __init__(self, root: Path, locations: dict[str, Any], is_zip: bool) -> None:
        self._root = root
        self._locations = locations
        self._is_zip = is_zip

    @property
    def is_zip(self) -> bool:
        return self._is_zip

    @property
    def root(self) -> Path:
        return self._root

    def __getitem__(self, game: str) -> Spots:
        location = self._locations[game]
        if not self._is_zip:
            return read_results(location)[1]
        try:
            with zipfile.ZipFile(self._root) as archive:
                data = archive.read(location)
        except _ZIP_ERRORS as error:
            raise SubmissionError(
                f"{self._root}: a damaged zip, entry {location} cannot be read ({error})"
            ) from None
        return read_results(data, source=f"{self._root}:{location}")[1]

    def __contains__(self, game: object) -> bool:
        return game in self._locations  # without reading the file, unlike Mapping's default

    def __iter__(self) -> Iterator[str]:
        return iter(self._locations)

    def __len__(self) -> int:
        return len(self._locations)

    def __repr__(self) -> str:
        return f"<predictions of {len(self)} games in {self._root}>"


def _games_in_folder(root: Path) -> dict[str, Path]:
    games = {}
    for folder, _, files in os.walk(root):
        if RESULTS_FILENAME in files and folder != str(root):
            games[Path(folder).relative_to(root).as_posix()] = Path(folder) / RESULTS_FILENAME
    return dict(sorted(games.items()))


def _results_bytes(game: str, spots: Spots, source: str) -> bytes:
    """The compact JSON of ``{"UrlLocal": game, "predictions": [...]}``, as ``json.dumps`` writes it.

    Written entry by entry from a template (``json.dumps`` of a list of dicts took most of
    an ensemble's writing): the keys, labels and numbers need no escaping, and the game
    name is escaped by ``json.dumps`` itself; a test compares the bytes with json's.
    """
    if not np.isfinite(spots.confidence).all():
        raise SubmissionError(f"{source}: confidences must be finite numbers, got NaN or infinity")
    seconds = spots.position_ms // 1000
    entries = ",".join(
        [
            # repr is the shortest string that reads back as the same float64.
            f'{{"gameTime":"{half} - {minute}:{second:02d}","label":{_LABELS_JSON[class_index]},'
            f'"position":"{position}","half":"{half}","confidence":"{confidence!r}"}}'
            for half, minute, second, position, class_index, confidence in zip(
                spots.half.tolist(),
                (seconds // 60).tolist(),
                (seconds % 60).tolist(),
                spots.position_ms.tolist(),
                spots.class_index.tolist(),
                spots.confidence.tolist(),
                strict=True,
            )
        ]
    )
    # Compact separators: the files are for programs, and smaller files parse faster.
    return f'{{"UrlLocal":{json.dumps(game)},"predictions":[{entries}]}}'.encode()


def _write_atomically(path: Path, data: bytes) -> None:
    with atomic_write(path) as file:
        file.write(data)


def _checked_game_name(game: str) -> str:
    """``game`` as a clean relative path; trailing slashes (as in labels' UrlLocal) are dropped."""
    if not isinstance(game, str) or not game.strip("/"):
        raise SubmissionError(f"game name must be a non-empty relative path, got {game!r}")
    name = PurePosixPath(game)
    if name.is_absolute() or "\\" in game or any(part in (".", "..") for part in game.split("/")):
        raise SubmissionError(f"game name must be a relative path without '.' or '..' parts, got {game!r}")
    return str(name)


def _spots_by_columns(
    labels: list[Any], halves: list[Any], positions: list[Any], confidences: list[Any]
) -> Spots | None:
    """Whole columns at once (the common case, fast); None when a value needs a closer look.

    ``int()`` and ``float()`` semantics as the official tool: numpy applies them per
    element when it builds an integer or float array from strings.
    """
    count = len(labels)
    if count == 0:
        return Spots.empty()
    class_index = np.fromiter(map(CLASS_INDEX.get, labels, repeat(-1)), dtype=np.int16, count=count)
    # Any other spelling of a half (None here) sends the file to the entry-by-entry reading.
    half = np.fromiter(map(_HALVES.get, halves), dtype=np.int8, count=count)
    position_ms = np.array(positions, dtype=np.int64)
    # A missing confidence (None) becomes NaN and fails the check below.
    confidence = np.array(confidences, dtype=np.float64)
    kept = class_index >= 0
    if position_ms.min() < 0 or not np.isfinite(confidence[kept]).all():
        return None
    if kept.all():
        return Spots(half, position_ms, class_index, confidence)
    ignored = Counter(str(label) for label in labels if label not in CLASS_INDEX)
    return Spots(half[kept], position_ms[kept], class_index[kept], confidence[kept], ignored)


def _spots_by_entries(entries: list[Any], source: str) -> Spots:
    """Entry by entry, raising :class:`SubmissionError` on the first bad one."""
    halves, positions, classes, confidences = [], [], [], []
    ignored: Counter[str] = Counter()
    for number, entry in enumerate(entries):
        where = f"{source}: prediction {number}"
        if not isinstance(entry, dict):
            raise SubmissionError(f"{where}: expected an object, got {entry!r}")
        # The official tool reads label, half and position of every entry, and the
        # confidence of entries with one of the 17 labels only.
        for key in ("label", "half", "position"):
            if key not in entry:
                raise SubmissionError(f"{where}: missing key {key!r}")
        label = entry["label"]
        try:
            class_index = CLASS_INDEX.get(label, -1)
        except TypeError:
            raise SubmissionError(f"{where}: label {label!r} is not a string") from None
        half = _as_int(entry["half"], f"{where}: half")
        if half not in (1, 2):
            raise SubmissionError(f"{where}: unknown half {entry['half']!r}; games have halves 1 and 2")
        position_ms = _as_int(entry["position"], f"{where}: position")
        if position_ms < 0:
            raise SubmissionError(f"{where}: negative position {entry['position']!r} ms")
        if class_index < 0:
            ignored[str(label)] += 1
            continue
        if "confidence" not in entry:
            raise SubmissionError(f"{where}: missing key 'confidence'")
        try:
            confidence = float(entry["confidence"])
        except (TypeError, ValueError):
            bad = entry["confidence"]
            raise SubmissionError(f"{where}: confidence {bad!r} is not a number") from None
        if not math.isfinite(confidence):
            raise SubmissionError(f"{where}: confidence {entry['confidence']!r} is not a finite number")
        halves.append(half)
        positions.append(position_ms)
        classes.append(class_index)
        confidences.append(confidence)
    return Spots(
        np.asarray(halves, dtype=np.int64),
        np.asarray(positions, dtype=np.int64),
        np.asarray(classes, dtype=np.int64),
        np.asarray(confidences, dtype=np.float64),
        ignored,
    )


def _as_int(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise SubmissionError(f"{what} {value!r} is not a whole number") from None
    if not -(2**63) <= number < 2**63:
        raise SubmissionError(f"{what} {value!r} is out of range")
    return number
