"""Shared fixtures: a tiny SoccerNet-v2 dataset written by hand in the real layout.

The dataset (see ``TINY_GAMES``) has three games, one per split (train, valid, test,
declared in ``splits.json``), with halves of 3 to 5 minutes of different lengths,
visual features of ``TINY_FEATURE_DIMS = (8, 8, 4, 8, 8)`` (36 per second, float32,
random normal) and audio of 128 mel bins at 100 frames/s (float32, random positive
power) whose length is a little longer or shorter than the visual one, as in the real
data. Labels cover both halves and include: "not shown" events, a label without
``position`` (its ``gameTime`` stands in), a label outside the 17 classes
("Drop ball", ignored by the official tools), actions at 0 ms and in the last second of
a half, and close actions of one class and of two classes.

Fixtures:

- ``tiny_dataset``: written once per test session; treat its files as read-only.
- ``make_tiny_dataset(root, *, with_audio=True, games=TINY_GAMES)``: writes a fresh copy
  (for tests that damage files); returns a :class:`TinyDataset`.
- ``make_game(root, game)``: writes one :class:`TinyGame` (labels, features, audio);
  the quickest way to build a special case.
- ``tiny_config(*overrides)`` and ``tiny_overrides``: a training config small enough to train in
  seconds on the tiny dataset (as a config, or as ``section.key=value`` overrides);
- ``tiny_games``: the :class:`TinyGame` records of the dataset, to vary with
  ``dataclasses.replace`` (e.g. shorter halves, ``labels=()``, ``audio_frames=None``);
- ``local_ray``: a Ray of the test's own (``RAY_TMPDIR`` in a temporary folder, no ``RAY_ADDRESS``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from astra.config import ExperimentConfig, load_config

TINY_FEATURE_DIMS: tuple[int, ...] = (8, 8, 4, 8, 8)
AUDIO_FRAMES_PER_SECOND = 100
NUM_MELS = 128


@dataclass(frozen=True)
class TinyGame:
    """One game as written to disk.

    Attributes:
        name: path relative to the root (with spaces, as real game names).
        split: the split that lists it in ``splits.json``.
        half_seconds: visual length of halves 1 and 2, in seconds (rows of the features).
        audio_frames: audio length of halves 1 and 2, in frames at 100/s; None writes no audio.
        labels: the ``annotations`` entries of ``Labels-v2.json``, as written; None writes no
            label file (a challenge game).
        seed: seeds the random features and audio.
    """

    name: str
    split: str
    half_seconds: tuple[int, int]
    audio_frames: tuple[int, int] | None
    labels: tuple[dict[str, str], ...] | None
    seed: int = 0
    feature_dims: tuple[int, ...] = TINY_FEATURE_DIMS


@dataclass(frozen=True)
class TinyDataset:
    """A dataset written by :func:`write_tiny_dataset`; labels, features and audio share ``root``."""

    root: Path
    games: tuple[TinyGame, ...]
    with_audio: bool
    feature_dims: tuple[int, ...] = TINY_FEATURE_DIMS
    splits: dict[str, list[str]] = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        return sum(self.feature_dims)

    def game(self, name: str) -> TinyGame:
        return next(game for game in self.games if game.name == name)

    def features(self, game: str, half: int) -> np.ndarray:
        """``[seconds, D]`` float32, read in full."""
        return np.load(self.root / game / f"{half}_baidu_soccer_embeddings.npy")

    def audio(self, game: str, half: int) -> np.ndarray:
        """``[128, frames]`` float32, read in full."""
        return np.load(self.root / game / f"audio{half}.npy")


def _label(
    game_time: str, label: str, position_ms: int | None, visibility: str = "visible"
) -> dict[str, str]:
    entry = {"gameTime": game_time, "label": label, "team": "home", "visibility": visibility}
    if position_ms is not None:
        entry["position"] = str(position_ms)
    return entry


TINY_GAMES: tuple[TinyGame, ...] = (
    TinyGame(
        name="england_epl/2014-2015/2015-02-21 - 18-00 Chelsea 1 - 1 Burnley",
        split="train",
        half_seconds=(183, 241),
        # Audio 2.5 s longer than half 1, 1.3 s shorter than half 2.
        audio_frames=(183 * 100 + 250, 241 * 100 - 130),
        labels=(
            _label("1 - 00:00", "Kick-off", 0),
            _label("1 - 00:43", "Throw-in", 43000),
            _label("1 - 01:10", "Foul", 70250),
            _label("1 - 01:12", "Foul", 72100),
            _label("1 - 01:12", "Indirect free-kick", 72500),
            _label("1 - 02:30", "Ball out of play", 150900, "not shown"),
            _label("1 - 03:02", "Throw-in", 182999),
            _label("2 - 00:00", "Kick-off", 0),
            _label("2 - 00:30", "Drop ball", 30000),
            _label("2 - 01:45", "Corner", 105400),
            _label("2 - 01:57", "Shots on target", None),
            _label("2 - 03:59", "Goal", 239500),
        ),
        seed=1,
    ),
    TinyGame(
        name="spain_laliga/2016-2017/2017-04-08 - 21-45 Malaga 2 - 0 Barcelona",
        split="valid",
        half_seconds=(300, 276),
        # Audio 0.7 s shorter than half 1, 4.2 s longer than half 2.
        audio_frames=(300 * 100 - 70, 276 * 100 + 420),
        labels=(
            _label("1 - 00:12", "Substitution", 12800),
            _label("1 - 01:40", "Offside", 100100),
            _label("1 - 03:20", "Yellow card", 200000, "not shown"),
            _label("2 - 00:05", "Clearance", 5500),
            _label("2 - 02:00", "Direct free-kick", 120000),
            _label("2 - 04:30", "Penalty", 270300),
        ),
        seed=2,
    ),
    TinyGame(
        name="italy_serie-a/2016-2017/2017-01-29 - 17-00 Sampdoria 3 - 2 AS Roma",
        split="test",
        half_seconds=(222, 195),
        # Audio exactly as long as half 1, 0.9 s longer than half 2.
        audio_frames=(222 * 100, 195 * 100 + 90),
        labels=(
            _label("1 - 00:50", "Shots off target", 50700),
            _label("1 - 02:10", "Clearance", 130200, "not shown"),
            _label("1 - 03:30", "Red card", 210000),
            _label("2 - 01:00", "Ball out of play", 60400),
            _label("2 - 03:00", "Yellow->red card", 180600),
        ),
        seed=3,
    ),
)


def write_game(root: Path, game: TinyGame) -> None:
    """Write ``Labels-v2.json``, the features and (when ``audio_frames``) the audio of ``game``."""
    folder = root / game.name
    folder.mkdir(parents=True, exist_ok=True)
    if game.labels is not None:
        document = {"UrlLocal": game.name + "/", "annotations": list(game.labels)}
        (folder / "Labels-v2.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    rng = np.random.default_rng(game.seed)
    for half, seconds in enumerate(game.half_seconds, start=1):
        features = rng.standard_normal((seconds, sum(game.feature_dims)), dtype=np.float32)
        np.save(folder / f"{half}_baidu_soccer_embeddings.npy", features)
        if game.audio_frames is not None:
            frames = game.audio_frames[half - 1]
            audio = rng.exponential(size=(NUM_MELS, frames)).astype(np.float32)
            np.save(folder / f"audio{half}.npy", audio)


def write_tiny_dataset(
    root: Path, *, with_audio: bool = True, games: tuple[TinyGame, ...] = TINY_GAMES
) -> TinyDataset:
    """Write ``games`` and their ``splits.json`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {}
    for game in games:
        if not with_audio:
            game = TinyGame(
                game.name, game.split, game.half_seconds, None, game.labels, game.seed, game.feature_dims
            )
        write_game(root, game)
        splits.setdefault(game.split, []).append(game.name)
    (root / "splits.json").write_text(json.dumps(splits, indent=1), encoding="utf-8")
    return TinyDataset(root, games, with_audio, splits=splits)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> TinyDataset:
    """The tiny dataset with audio, written once per session: do not modify its files."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_soccernet"))


@pytest.fixture
def make_tiny_dataset() -> Callable[..., TinyDataset]:
    """``make_tiny_dataset(root, *, with_audio=True, games=TINY_GAMES)``: a fresh copy to damage."""
    return write_tiny_dataset


@pytest.fixture
def make_game() -> Callable[[Path, TinyGame], None]:
    """``make_game(root, game)``: write one :class:`TinyGame` under ``root``."""
    return write_game


@pytest.fixture
def tiny_games() -> tuple[TinyGame, ...]:
    """The games of the tiny dataset, as :class:`TinyGame` records (``dataclasses.replace`` them)."""
    return TINY_GAMES


# A model small enough to train in seconds on the tiny dataset.
TINY = [
    "model.visual_dims=[8, 8, 4, 8, 8]",
    "model.d_model=16",
    "model.num_heads=2",
    "model.audio_conv_channels=[2, 4, 4, 4, 4, 4]",
    "model.audio_hidden_dims=[16, 16]",
    "clips.clip_seconds=20",
    "clips.train_stride_seconds=10",
    "clips.inference_stride_seconds=10",
    "train.epochs=3",
    "train.warmup_epochs=1",
    "train.batch_size=4",
    "train.loader_workers=0",
    "train.base_learning_rate=1e-3",
]


@pytest.fixture
def tiny_config() -> Callable[..., ExperimentConfig]:
    """``tiny_config(*overrides)``: the tiny training config with ``section.key=value`` overrides."""

    def build(*overrides: str) -> ExperimentConfig:
        return load_config([], [*TINY, *overrides])

    return build


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """The tiny training config as ``section.key=value`` overrides (for a child process)."""
    return list(TINY)


@pytest.fixture
def local_ray(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """A Ray of this test's own (started by the code under test), in a temporary folder removed
    afterwards, whatever cluster this machine knows of."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    request.addfinalizer(lambda: shutil.rmtree(ray_tmp, ignore_errors=True))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
