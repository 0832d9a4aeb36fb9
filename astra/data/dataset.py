"""SoccerNet-v2 games on disk: features and audio as memory-mapped arrays, with their labels.

The layout is the one of docs/data.md (three roots, which may be one folder)::

    <labels>/<game>/Labels-v2.json
    <features>/<game>/{1,2}_baidu_soccer_embeddings.npy   # [seconds, D], 1 row per second
    <audio>/<game>/audio{1,2}.npy                         # [128, frames] mel power, 100 frames/s

Nothing is read in full when a game is opened: arrays are memory-mapped (only the
``.npy`` header is read), so opening a split of 100 games costs milliseconds per
game. The visual length defines a half; the audio is aligned on the start and cut
or padded at the end, lazily, by the clip slicer (``astra.data.clips``). NaN and
inf are looked for where values are read (the clip slicer) and, on demand, by a
full scan (:func:`check_finite`, used by ``astra check-data``).

Two tolerances, for what real SoccerNet-v2 data holds:

- **Short audio.** A recording and its half differ by a few seconds in the real
  data; the clip slicer pads the missing end with the last frame. Audio that covers
  less than ``MIN_AUDIO_COVERAGE`` (90%) of its half is refused (:class:`DataError`
  naming the file, its length and the half's): it is cut short or belongs to another
  half, and padding would feed the model minutes of one repeated frame. 90% leaves
  4.5 minutes of a 45-minute half, far more than real recordings lack, and 6 s of
  the one-minute halves of the smallest synthetic data (the simulator's audio is off
  by at most 4 s by default). :attr:`Half.audio_coverage` says how much is covered;
  ``astra check-data`` reports the short ones.
- **Labels past the end.** A half's features can be a little shorter than its
  video, so real label files hold labels a few seconds past the last feature row.
  Those within ``PAST_END_TOLERANCE_SECONDS`` (60 s) of the end are kept in
  ``Half.annotations`` and flagged in ``Annotations.past_end``: the evaluator keeps
  them, as events nothing can match (as the official one does), and the training
  targets leave them out (as the authors' loader does); :func:`load_split` says
  once how many there are in each game. A label further past the end means a label
  file of another game or half: an error naming the label.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astra.classes import CLASSES
from astra.config import DataConfig
from astra.data.labels import LABELS_FILENAME, Annotations, LabelsError, game_time, read_labels
from astra.data.splits import games_of_split
from astra.layout import AUDIO_FRAMES_PER_SECOND, AUDIO_PATTERN, FEATURES_PATTERN, HALVES, NUM_MELS

# Storage types accepted for features and audio; slices are handed out as float32.
STORED_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float16))
# The least share of its half that an audio file must cover (module docstring, "Short audio").
MIN_AUDIO_COVERAGE = 0.9
# How far past the end of its half's features a label may lie and be kept (module docstring).
PAST_END_TOLERANCE_SECONDS = 60

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Data on disk that does not follow the SoccerNet-v2 layout; the message names the file."""


@dataclass(frozen=True)
class DataRoots:
    """Where labels, visual features and audio live, and how the per-half files are named.

    ``features_pattern`` and ``audio_pattern`` are formatted with ``half=1`` or ``half=2``.
    """

    labels: Path
    features: Path
    audio: Path
    features_pattern: str = FEATURES_PATTERN
    audio_pattern: str = AUDIO_PATTERN

    @classmethod
    def single(
        cls,
        root: str | Path,
        *,
        features_pattern: str = FEATURES_PATTERN,
        audio_pattern: str = AUDIO_PATTERN,
    ) -> DataRoots:
        """All three roots in one folder, as the SoccerNet downloader and ``astra synth`` write them."""
        root = Path(root)
        return cls(root, root, root, features_pattern, audio_pattern)

    @classmethod
    def from_config(
        cls,
        data: str | Path,
        config: DataConfig,
        *,
        features_root: str | Path | None = None,
        audio_root: str | Path | None = None,
    ) -> DataRoots:
        """The roots every command and the search use: labels under ``data``, features and audio
        there too unless given apart, file names from ``config`` (``data.features_filename``, ...).

        Relative paths are made absolute here: trials and Ray workers run in folders of their own.
        """
        data = Path(data).absolute()
        return cls(
            labels=data,
            features=Path(features_root).absolute() if features_root is not None else data,
            audio=Path(audio_root).absolute() if audio_root is not None else data,
            features_pattern=config.features_filename,
            audio_pattern=config.audio_filename,
        )

    def labels_file(self, game: str) -> Path:
        return self.labels / game / LABELS_FILENAME

    def features_file(self, game: str, half: int) -> Path:
        return self.features / game / self.features_pattern.format(half=half)

    def audio_file(self, game: str, half: int) -> Path:
        return self.audio / game / self.audio_pattern.format(half=half)


@dataclass(frozen=True, eq=False)
class Half:
    """One half of one game, opened lazily.

    Attributes:
        game: the game's path relative to the roots.
        half: 1 or 2.
        features: ``[seconds, D]`` float32 or float16 memmap, one row per second.
        audio: ``[128, frames]`` float32 or float16 memmap at 100 frames/s, or None when
            opened without audio. Its length may differ from ``num_seconds * 100``: the
            clip slicer cuts or pads it at the end.
        annotations: the labels of this half (empty when the game has no label file).
        features_path: the file behind ``features``, for error messages.
        audio_path: the file behind ``audio``, or None.
    """

    game: str
    half: int
    features: np.ndarray
    audio: np.ndarray | None
    annotations: Annotations
    features_path: Path
    audio_path: Path | None = None

    @property
    def num_seconds(self) -> int:
        """The length of the half: the visual features define it."""
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_audio_frames(self) -> int:
        """The audio length once aligned on the visual one: ``num_seconds * 100``."""
        return self.num_seconds * AUDIO_FRAMES_PER_SECOND

    @property
    def audio_coverage(self) -> float | None:
        """The share of the half that the audio recording covers, at most 1; None without audio."""
        if self.audio is None:
            return None
        return min(1.0, self.audio.shape[1] / self.num_audio_frames)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # A pickled memmap carries its whole array; a Half sent to a data-loading process
        # carries its file paths instead and maps them again there.
        return _reopen_half, (self.game, self.half, self.features_path, self.audio_path, self.annotations)


def load_split(
    roots: DataRoots,
    split: str,
    *,
    with_audio: bool,
    require_labels: bool,
    progress: bool = True,
) -> list[Half]:
    """Open every game of ``split`` (``"train"``, ``"train+valid"``, ...): two halves per game, in order.

    Games come from ``<labels root>/splits.json`` when it exists, else the official lists.
    Labels outside the 17 classes are dropped, as the official tools do, and reported in
    one warning for the whole split; labels a little past the end of their half are kept
    (module docstring) and reported in one more warning, with their count per game.
    """
    games = games_of_split(split, roots.labels, game_roots=(roots.features,))
    if not games:
        raise DataError(f"split {split!r} has no games (labels root {roots.labels})")
    halves, ignored = load_games(
        roots, games, with_audio=with_audio, require_labels=require_labels, progress=progress
    )
    _warn_ignored(ignored, f"split {split!r}")
    warn_past_end(halves, f"split {split!r}")
    return halves


def load_game(roots: DataRoots, game: str, *, with_audio: bool, require_labels: bool) -> list[Half]:
    """Open one game: its two halves. Warns as :func:`load_split` does."""
    halves, ignored = open_game(roots, game, with_audio=with_audio, require_labels=require_labels)
    _warn_ignored(ignored, f"game {game!r}")
    warn_past_end(halves, f"game {game!r}")
    return halves


def load_games(
    roots: DataRoots,
    games: Iterable[str],
    *,
    with_audio: bool,
    require_labels: bool,
    progress: bool = False,
) -> tuple[list[Half], Counter[str]]:
    """Open several games, checking that they share one feature dimension.

    Returns the halves (two per game, in game order) and the counts, by label name, of the
    labels outside the 17 classes that were dropped. Logs nothing but its progress.
    """
    games = list(games)
    from astra.progress import progress as show_progress

    games_iter = show_progress(games, desc="opening games", unit="game", enabled=progress)
    halves: list[Half] = []
    ignored: Counter[str] = Counter()
    for game in games_iter:
        game_halves, game_ignored = open_game(
            roots, game, with_audio=with_audio, require_labels=require_labels
        )
        if halves and game_halves[0].feature_dim != halves[0].feature_dim:
            raise DataError(
                f"{game_halves[0].features_path}: {game_halves[0].feature_dim} features per second, but "
                f"{halves[0].features_path} has {halves[0].feature_dim}; all games must share one dimension"
            )
        halves.extend(game_halves)
        ignored.update(game_ignored)
    return halves, ignored


def open_game(
    roots: DataRoots, game: str, *, with_audio: bool, require_labels: bool
) -> tuple[list[Half], Counter[str]]:
    """Open one game without logging: its two halves, and the dropped labels counted by name.

    Raises :class:`DataError` naming the file (or the root searched) on a missing game,
    file or half, an unreadable or malformed array, feature dimensions that differ between
    the halves, audio that covers less than ``MIN_AUDIO_COVERAGE`` of its half, or a label
    more than ``PAST_END_TOLERANCE_SECONDS`` past the end of its half (nearer ones are
    kept and flagged in ``Annotations.past_end``).
    """
    halves, ignored, problems = _open_game(roots, game, with_audio=with_audio, require_labels=require_labels)
    if problems:
        raise DataError(problems[0])
    return halves, ignored


def scan_game(roots: DataRoots, game: str, *, with_audio: bool) -> tuple[list[Half], Counter[str], list[str]]:
    """Every problem of one game, for ``astra check-data``: what :func:`open_game` refuses, then
    :func:`check_finite` on each half, going on past each problem to find the next (the labels,
    each half's files, each half's NaN and inf). Returns the halves that opened, the dropped labels
    counted by name, and the problems in words, each naming its file."""
    halves, ignored, problems = _open_game(roots, game, with_audio=with_audio, require_labels=False)
    for half in halves:
        try:
            check_finite(half)
        except DataError as error:
            problems.append(str(error))
    return halves, ignored, problems


def _open_game(
    roots: DataRoots, game: str, *, with_audio: bool, require_labels: bool
) -> tuple[list[Half], Counter[str], list[str]]:
    """:func:`open_game`'s work, each problem collected instead of raised (a missing folder or a
    missing label file ends it), with the halves that opened."""
    try:
        _check_game_folder(roots.features, "features", game)
        if with_audio:
            _check_game_folder(roots.audio, "audio", game)
    except DataError as error:
        return [], Counter(), [str(error)]
    problems: list[str] = []
    annotations = _no_annotations()
    labels_path = roots.labels_file(game)
    if labels_path.is_file():
        try:
            annotations = read_labels(labels_path)
        except LabelsError as error:
            problems.append(str(error))  # the halves are still opened, without labels
    elif require_labels:
        try:
            _check_game_folder(roots.labels, "labels", game)
        except DataError as error:
            return [], Counter(), [str(error)]
        return [], Counter(), [f"{labels_path}: label file not found (labels root {roots.labels})"]

    halves: list[Half] = []
    for number in HALVES:
        try:
            halves.append(_open_half(roots, game, number, annotations.of_half(number), with_audio))
        except DataError as error:
            problems.append(str(error))
    if len(halves) == len(HALVES) and halves[0].feature_dim != halves[1].feature_dim:
        problems.append(
            f"{halves[1].features_path}: {halves[1].feature_dim} features per second, but "
            f"{halves[0].features_path} has {halves[0].feature_dim}; both halves must share one dimension"
        )
    return halves, annotations.ignored, problems


def check_finite(half: Half, *, chunk_seconds: int = 600) -> None:
    """Scan all features (and audio, when opened) of ``half`` for NaN and inf.

    Reads the files in chunks of ``chunk_seconds`` (bounded memory); raises :class:`DataError`
    naming the file and the first second that holds a non-finite value. Audio frames past
    the aligned length (``num_seconds * 100``) are scanned too: they are on disk.
    """
    if chunk_seconds < 1:
        raise ValueError(f"chunk_seconds must be at least 1, got {chunk_seconds}")
    for start in range(0, half.num_seconds, chunk_seconds):
        chunk = np.asarray(half.features[start : start + chunk_seconds])
        finite_rows = np.isfinite(chunk).all(axis=1)
        if not finite_rows.all():
            second = start + int(np.argmin(finite_rows))
            raise DataError(non_finite_message(half.features_path, second))
    if half.audio is not None and half.audio_path is not None:
        chunk_frames = chunk_seconds * AUDIO_FRAMES_PER_SECOND
        for start in range(0, half.audio.shape[1], chunk_frames):
            chunk = np.asarray(half.audio[:, start : start + chunk_frames])
            finite_frames = np.isfinite(chunk).all(axis=0)
            if not finite_frames.all():
                frame = start + int(np.argmin(finite_frames))
                raise DataError(non_finite_message(half.audio_path, frame // AUDIO_FRAMES_PER_SECOND, frame))


def labels_past_end(halves: Iterable[Half]) -> Counter[str]:
    """The labels at or past the end of their half's features (within the tolerance), counted by game."""
    counts: Counter[str] = Counter()
    for half in halves:
        count = int(half.annotations.past_end.sum())
        if count:
            counts[half.game] += count
    return counts


def warn_past_end(halves: Iterable[Half], where: str) -> None:
    """One warning for all the labels past the end of their halves, with their count per game."""
    counts = labels_past_end(halves)
    if counts:
        listed = "; ".join(f"{game!r}: {count}" for game, count in counts.items())
        log.warning(
            "%s: %d labels lie past the end of their half's features, by at most %d s, in %d game(s); "
            "they are scored in evaluation and left out of training targets (%s)",
            where,
            counts.total(),
            PAST_END_TOLERANCE_SECONDS,
            len(counts),
            listed,
        )


def non_finite_message(path: Path, second: int, frame: int | None = None) -> str:
    """The error message for NaN or inf found in ``path`` at ``second`` (and audio ``frame``)."""
    where = f"second {second}" if frame is None else f"second {second} (audio frame {frame})"
    return f"{path}: NaN or inf at {where}"


def _reopen_half(
    game: str, half: int, features_path: Path, audio_path: Path | None, annotations: Annotations
) -> Half:
    features = np.load(features_path, mmap_mode="r", allow_pickle=False)
    audio = None if audio_path is None else np.load(audio_path, mmap_mode="r", allow_pickle=False)
    return Half(game, half, features, audio, annotations, features_path, audio_path)


def _open_half(roots: DataRoots, game: str, half: int, annotations: Annotations, with_audio: bool) -> Half:
    features_path = roots.features_file(game, half)
    features = _open_array(features_path, "features", roots.features)
    if features.ndim != 2:
        raise DataError(f"{features_path}: features must be [seconds, D], got shape {features.shape}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise DataError(f"{features_path}: empty features, shape {features.shape}")
    audio_path: Path | None = None
    audio: np.ndarray | None = None
    if with_audio:
        audio_path = roots.audio_file(game, half)
        audio = _open_array(audio_path, "audio", roots.audio)
        if audio.ndim != 2 or audio.shape[0] != NUM_MELS:
            raise DataError(f"{audio_path}: audio must be [{NUM_MELS}, frames], got shape {audio.shape}")
        if audio.shape[1] == 0:
            raise DataError(f"{audio_path}: empty audio, shape {audio.shape}")
        _check_audio_coverage(audio_path, audio.shape[1], features.shape[0], features_path)
    annotations = _flag_labels_past_end(
        annotations, half, features.shape[0], roots.labels_file(game), features_path
    )
    return Half(game, half, features, audio, annotations, features_path, audio_path)


def _open_array(path: Path, kind: str, root: Path) -> np.ndarray:
    """Memory-map one ``.npy`` (reads its header only) and check its storage type."""
    if not path.is_file():
        raise DataError(f"{path}: {kind} file not found ({kind} root {root})")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: expected one .npy array, got {type(array).__name__}")
    if array.dtype not in STORED_DTYPES:
        raise DataError(f"{path}: {kind} must be float32 or float16, got {array.dtype}")
    return array


def _check_game_folder(root: Path, kind: str, game: str) -> None:
    if not (root / game).is_dir():
        raise DataError(f"game {game!r}: no folder {root / game} under the {kind} root {root}")


def _check_audio_coverage(audio_path: Path, num_frames: int, num_seconds: int, features_path: Path) -> None:
    """Refuse audio covering less than ``MIN_AUDIO_COVERAGE`` of the half (module docstring)."""
    coverage = num_frames / (num_seconds * AUDIO_FRAMES_PER_SECOND)
    if coverage < MIN_AUDIO_COVERAGE:
        raise DataError(
            f"{audio_path}: the audio lasts {num_frames / AUDIO_FRAMES_PER_SECOND:g} s ({num_frames} frames) "
            f"and covers {coverage:.1%} of its half, which lasts {num_seconds} s ({features_path}); "
            f"at least {MIN_AUDIO_COVERAGE:.0%} must be covered (the rest is padded with its last frame)"
        )


def _flag_labels_past_end(
    annotations: Annotations, half: int, num_seconds: int, labels_path: Path, features_path: Path
) -> Annotations:
    """Flag the labels at or after ``num_seconds`` (they have no feature row); refuse those too far past.

    Beyond ``PAST_END_TOLERANCE_SECONDS`` the error names the first such label and the half's length.
    """
    past_end = annotations.position_ms >= num_seconds * 1000
    if not past_end.any():
        return annotations
    too_far = np.flatnonzero(annotations.position_ms >= (num_seconds + PAST_END_TOLERANCE_SECONDS) * 1000)
    if too_far.size:
        first = int(too_far[0])
        position_ms = int(annotations.position_ms[first])
        name = CLASSES[int(annotations.class_index[first])]
        raise DataError(
            f"{labels_path}: label {name!r} at {game_time(half, position_ms)} ({position_ms} ms) is past "
            f"the end of half {half}, which lasts {num_seconds} s ({features_path}), by more than the "
            f"{PAST_END_TOLERANCE_SECONDS} s tolerated; is it the label file of this game?"
            + (f" {too_far.size} labels of this half are that far past its end" if too_far.size > 1 else "")
        )
    return dataclasses.replace(annotations, past_end=past_end)


def _no_annotations() -> Annotations:
    return Annotations(
        half=np.zeros(0, dtype=np.int8),
        position_ms=np.zeros(0, dtype=np.int64),
        class_index=np.zeros(0, dtype=np.int16),
        visible=np.zeros(0, dtype=bool),
    )


def _warn_ignored(ignored: Counter[str], where: str) -> None:
    if ignored:
        counts = ", ".join(f"{name!r}: {count}" for name, count in ignored.most_common())
        log.warning(
            "%s: dropped %d labels outside the 17 classes, as the official tools do (%s)",
            where,
            ignored.total(),
            counts,
        )
