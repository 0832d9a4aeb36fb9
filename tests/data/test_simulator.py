"""The simulator writes the real SoccerNet-v2 layout, deterministically, with the realism it promises."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from astra.classes import CLASS_INDEX, CLASSES, NUM_CLASSES
from astra.commands import synth
from astra.config import ConfigError
from astra.config_cli import config_from_arguments
from astra.data.labels import LABELS_FILENAME, Annotations, read_labels
from astra.data.simulator import (
    AUDIO_FRAMES_PER_SECOND,
    AUDIO_REFERENCE_POWER,
    CHALLENGE_LABELS_DIRNAME,
    MEL_BINS,
    SimulatorConfig,
    SimulatorError,
    ensure_empty_output,
    label_jitter_seconds,
    not_shown_shares,
    simulate,
    split_sizes,
)
from astra.data.splits import OFFICIAL_SPLITS, games_of_split

TINY = SimulatorConfig(num_games=6, half_minutes=2.0, half_spread_seconds=30.0, feature_dims=(8, 8, 4, 8, 8))
# The default class mix and game count, with features too small to cost time: for counting labels.
DEFAULT_MIX = SimulatorConfig(write_audio=False, feature_dims=(2, 2, 1, 2, 2), label_jitter_scale=0.0)
GAME_NAME = re.compile(r"^[a-z_\-0-9]+/\d{4}-\d{4}/\d{4}-\d{2}-\d{2} - \d{2}-\d{2} (.+) (\d+) - (\d+) (.+)$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    simulate(root, TINY, progress=False)
    return root


@pytest.fixture(scope="module")
def default_mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("default_mix")
    simulate(root, DEFAULT_MIX, progress=False)
    return root


def test_layout_dtypes_and_shapes_follow_the_data_contract(tiny: Path) -> None:
    splits = json.loads((tiny / "splits.json").read_text())
    assert sorted(splits) == sorted(OFFICIAL_SPLITS)
    assert [len(splits[s]) for s in OFFICIAL_SPLITS] == split_sizes(6, TINY.split_fractions)
    for split in OFFICIAL_SPLITS:
        assert games_of_split(split, tiny) == splits[split]
        for game in splits[split]:
            assert GAME_NAME.match(game), game
            folder = tiny / game
            # Challenge labels are hidden, as in reality, and kept apart for local scoring.
            hidden = tiny / CHALLENGE_LABELS_DIRNAME / game / LABELS_FILENAME
            assert (folder / LABELS_FILENAME).is_file() == (split != "challenge")
            assert hidden.is_file() == (split == "challenge")
            for half in (1, 2):
                features = np.load(folder / f"{half}_baidu_soccer_embeddings.npy", mmap_mode="r")
                audio = np.load(folder / f"audio{half}.npy", mmap_mode="r")
                assert features.dtype == np.float32 and features.shape[1] == TINY.feature_dim
                assert audio.dtype == np.float32 and audio.shape[0] == MEL_BINS
                assert np.isfinite(features).all()
                assert (audio > 0).all(), "mel power is positive"
    assert not list(tiny.rglob("*.tmp-*")), "no temporary files are left behind"


def test_labels_parse_and_lie_inside_their_half(tiny: Path) -> None:
    for split in OFFICIAL_SPLITS:
        for game in games_of_split(split, tiny):
            document = json.loads(_labels_path(tiny, game).read_text())
            assert document["UrlLocal"].rstrip("/") == game
            labels = read_labels(_labels_path(tiny, game))
            assert len(labels) > 0 and not labels.ignored
            for half in (1, 2):
                seconds = np.load(tiny / game / f"{half}_baidu_soccer_embeddings.npy", mmap_mode="r").shape[0]
                assert (labels.of_half(half).position_ms < 1000 * seconds).all()
            # The score in the name is the goals in the labels.
            home, home_goals, away_goals, away = GAME_NAME.match(game).groups()  # type: ignore[union-attr]
            goals = [a for a in document["annotations"] if a["label"] == "Goal"]
            assert sum(a["team"] == "home" for a in goals) == int(home_goals)
            assert sum(a["team"] == "away" for a in goals) == int(away_goals)
            assert (document["gameHomeTeam"], document["gameAwayTeam"]) == (home, away)


def test_audio_and_visual_lengths_differ_by_a_few_seconds_and_halves_differ(tiny: Path) -> None:
    half_seconds = []
    for game in games_of_split("train+valid+test+challenge", tiny):
        for half in (1, 2):
            seconds = np.load(tiny / game / f"{half}_baidu_soccer_embeddings.npy", mmap_mode="r").shape[0]
            frames = np.load(tiny / game / f"audio{half}.npy", mmap_mode="r").shape[1]
            assert 1.0 <= abs(frames / AUDIO_FRAMES_PER_SECOND - seconds) <= TINY.audio_offset_seconds + 0.01
            half_seconds.append(seconds)
    assert min(half_seconds) >= 60 * TINY.half_minutes
    assert max(half_seconds) <= 60 * TINY.half_minutes + TINY.half_spread_seconds
    assert len(set(half_seconds)) > 1


def test_every_class_is_in_every_split_at_the_default_mix(default_mix: Path) -> None:
    for split in OFFICIAL_SPLITS:
        counts = np.zeros(NUM_CLASSES, dtype=int)
        for game in games_of_split(split, default_mix):
            np.add.at(counts, read_labels(_labels_path(default_mix, game)).class_index, 1)
        missing = [CLASSES[c] for c in np.flatnonzero(counts < DEFAULT_MIX.min_events_per_split)]
        assert not missing, f"{split} lacks {missing}"
    # The long tail survives the tempering: the head class outnumbers the rarest by far.
    train = _all_labels(default_mix, "train")
    counts = np.bincount(train.class_index, minlength=NUM_CLASSES)
    assert counts[CLASS_INDEX["Ball out of play"]] > 10 * counts[CLASS_INDEX["Yellow->red card"]]


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    config = SimulatorConfig(
        num_games=4, half_minutes=1.0, half_spread_seconds=10.0, feature_dims=(4, 4, 2, 4, 4)
    )
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        simulate(tmp_path / name, dataclasses.replace(config, seed=seed), progress=False)
    first, second, other = (_file_bytes(tmp_path / name) for name in "abc")
    assert first == second
    assert len(first) == 4 + 4 * 4 + 1  # 4 label files, 2 feature and 2 audio files per game, splits
    assert not set(first.values()) & set(other.values()), "another seed shares no file"


def test_not_shown_share_follows_the_configured_shares(default_mix: Path) -> None:
    labels = _all_labels(default_mix, "train+valid+test+challenge")
    expected = not_shown_shares(DEFAULT_MIX)
    for c in range(NUM_CLASSES):
        hidden = ~labels.visible[labels.class_index == c]
        if hidden.size < 40:
            continue
        tolerance = 4 * np.sqrt(expected[c] * (1 - expected[c]) / hidden.size) + 0.02
        assert abs(hidden.mean() - expected[c]) < tolerance, CLASSES[c]
    # Figure 3: kick-offs, clearances and indirect free-kicks are often off screen, goals rarely.
    share = {name: (~labels.visible[labels.class_index == CLASS_INDEX[name]]).mean() for name in CLASSES}
    for often in ("Kick-off", "Clearance", "Indirect free-kick"):
        assert share[often] > 2 * share["Goal"]


def test_no_label_is_not_shown_when_the_share_is_scaled_to_zero(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, write_audio=False, not_shown_scale=0.0)
    simulate(tmp_path, config, progress=False)
    assert _all_labels(tmp_path, "train+valid+test+challenge").visible.all()


def test_game_flow_rules_hold(default_mix: Path) -> None:
    out, throw_in, corner, foul, goal, kick_off, substitution = (
        CLASS_INDEX[n]
        for n in ("Ball out of play", "Throw-in", "Corner", "Foul", "Goal", "Kick-off", "Substitution")
    )
    # A card comes 15-60 s after its foul; a penalty 50-110 s after the foul or its card.
    after_foul = {CLASS_INDEX[n]: (15.0, 60.0) for n in ("Yellow card", "Red card", "Yellow->red card")}
    after_foul[CLASS_INDEX["Penalty"]] = (50.0, 170.0)
    substitutions_per_half = np.zeros(2)
    for game in games_of_split("train+valid+test+challenge", default_mix):
        labels = read_labels(_labels_path(default_mix, game))
        for half in (1, 2):
            seconds = np.load(
                default_mix / game / f"{half}_baidu_soccer_embeddings.npy", mmap_mode="r"
            ).shape[0]
            events = labels.of_half(half)
            time = {c: events.position_ms[events.class_index == c] / 1000 for c in range(NUM_CLASSES)}
            # (Labels are exact here: DEFAULT_MIX has no jitter.)
            assert (time[kick_off] < 6.0).any(), "a kick-off opens each half"
            for t in time[throw_in]:
                assert _has_before(time[out], t, 5.0, 15.0), f"{game}: throw-in at {t} s without a ball out"
            for t in time[corner]:
                assert _has_before(time[out], t, 12.0, 30.0), f"{game}: corner at {t} s without a ball out"
            for c, (low, high) in after_foul.items():
                for t in time[c]:
                    assert _has_before(time[foul], t, low, high), (
                        f"{game}: {CLASSES[c]} at {t} s without a foul"
                    )
            for t in time[goal]:
                if t < seconds - 91.0:
                    assert _has_before(-time[kick_off], -t, 45.0, 90.0), f"{game}: goal at {t} s, no kick-off"
            substitutions_per_half[half - 1] += len(time[substitution])
    assert substitutions_per_half[1] > 2 * substitutions_per_half[0], "substitutions cluster after half-time"


def test_label_jitter_is_class_dependent(tmp_path: Path, default_mix: Path) -> None:
    # Same seed with and without jitter: the same events, labelled at different times.
    config = dataclasses.replace(DEFAULT_MIX, label_jitter_scale=1.0)
    simulate(tmp_path, config, progress=False)
    exact_root = default_mix
    offsets: dict[int, list[float]] = {c: [] for c in range(NUM_CLASSES)}
    for game in games_of_split("train+valid+test+challenge", tmp_path):
        noisy, exact = read_labels(_labels_path(tmp_path, game)), read_labels(_labels_path(exact_root, game))
        for half in (1, 2):
            for c in range(NUM_CLASSES):
                a = np.sort(noisy.of_half(half).position_ms[noisy.of_half(half).class_index == c])
                b = np.sort(exact.of_half(half).position_ms[exact.of_half(half).class_index == c])
                assert a.shape == b.shape
                offsets[c].extend((a - b) / 1000)
    spread = label_jitter_seconds(config)
    for c in range(NUM_CLASSES):
        assert np.all(np.abs(offsets[c]) <= 6 * spread[c] + 0.002), CLASSES[c]
    substitution, goal = CLASS_INDEX["Substitution"], CLASS_INDEX["Goal"]
    assert np.std(offsets[substitution]) > 2 * np.std(offsets[goal]) > 0


def test_visual_evidence_is_strong_for_visible_events_and_weak_for_not_shown(default_mix: Path) -> None:
    rows: dict[bool, list[np.ndarray]] = {True: [], False: []}
    background = []
    for game in games_of_split("train+valid+test+challenge", default_mix):
        labels = read_labels(_labels_path(default_mix, game))
        for half in (1, 2):
            features = np.load(default_mix / game / f"{half}_baidu_soccer_embeddings.npy")
            events = labels.of_half(half)
            keep = events.class_index == CLASS_INDEX["Ball out of play"]
            for position_ms, visible in zip(events.position_ms[keep], events.visible[keep], strict=True):
                rows[bool(visible)].append(features[int(position_ms // 1000)])
            background.append(features)
    mean = np.concatenate(background).mean(axis=0)
    shift = np.mean(rows[True], axis=0) - mean
    direction = shift / np.linalg.norm(shift)
    visible_shift = float(np.linalg.norm(shift))
    hidden_shift = float((np.mean(rows[False], axis=0) - mean) @ direction)
    assert visible_shift > 1.0, "a visible event moves the features by about the signal strength"
    assert hidden_shift < 0.5 * visible_shift, "a not-shown event leaves a weak trace at most"


def test_audio_has_whistles_after_fouls_and_a_realistic_range(tiny: Path) -> None:
    peaks_after_fouls, peaks_anywhere = [], []
    rng = np.random.default_rng(0)
    for game in games_of_split("train+valid+test", tiny):
        labels = read_labels(_labels_path(tiny, game))
        for half in (1, 2):
            power = np.load(tiny / game / f"audio{half}.npy")
            decibels = 10 * np.log10(power / AUDIO_REFERENCE_POWER)
            assert 40 < decibels.max() - decibels.min() < 100, "a broadcast's dynamic range"
            whistle_band = decibels[84:97].max(axis=0)  # the referee's whistle, ~3.5 kHz
            floor = np.median(whistle_band)
            events = labels.of_half(half)
            # The whistle comes 0.3-1.2 s after the foul; the label may be off by a second or two.
            for position_ms in events.position_ms[events.class_index == CLASS_INDEX["Foul"]]:
                frame = int(position_ms // 10)
                peaks_after_fouls.append(whistle_band[max(frame - 200, 0) : frame + 300].max() - floor)
            for frame in rng.integers(0, whistle_band.size - 500, 20):
                peaks_anywhere.append(whistle_band[frame : frame + 500].max() - floor)
    assert len(peaks_after_fouls) >= 5
    assert np.mean(np.array(peaks_after_fouls) > 10) > 0.6
    assert np.mean(np.array(peaks_anywhere) > 10) < 0.4


def test_refuses_a_non_empty_output_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SimulatorError, match="not empty"):
        ensure_empty_output(tmp_path, overwrite=False)
    ensure_empty_output(tmp_path, overwrite=True)
    ensure_empty_output(tmp_path / "new", overwrite=False)
    parser = _parser()
    with pytest.raises(SimulatorError, match="--overwrite"):
        synth.run(parser.parse_args([str(tmp_path), "--games", "4", "--half-minutes", "1", "--no-audio"]))
    args = ["--games", "4", "--half-minutes", "1", "--no-audio", "--feature-dims", "1,1,1,1,1", "--quiet"]
    assert synth.run(parser.parse_args([str(tmp_path), "--overwrite", *args])) == 0
    assert (tmp_path / "splits.json").is_file() and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--feature-dims", "64,6.5,32,64,64"], "expected a whole number"),
        (["--feature-dims", "64,,32"], "expected a whole number"),
        (["--games", "many"], "expected a whole number"),
        (["--audio-strength", "loud"], "expected a number"),
    ],
)
def test_arguments_of_the_wrong_type_stop_the_parser(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["out", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert argv[0] in error and message in error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--feature-dims", "64,0,32,64,64"], ">= 1"),
        (["--split-fractions", "0.5,0.5"], "at least 4"),
        (["--split-fractions", "0,0,0,0"], "positive size"),
        (["--games", "0"], ">= 1"),
        (["--half-minutes", "0.5"], ">= 1"),
        (["--signal-strength", "-1"], ">= 0"),
        (["--class-tempering", "nan"], "nan"),
        (["--games", "2"], "--games"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_option(argv: list[str], message: str) -> None:
    args = _parser().parse_args(["out", *argv])
    with pytest.raises(ConfigError) as error:
        config_from_arguments(SimulatorConfig, args, names=synth.OPTION_NAMES)
    assert argv[0] in str(error.value) and message in str(error.value)


def test_bad_config_values_are_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="feature_dims"):
        SimulatorConfig(feature_dims=(64, 0))
    with pytest.raises(ConfigError, match="num_games"):
        SimulatorConfig(num_games=3)
    with pytest.raises(ConfigError, match="split_fractions"):
        SimulatorConfig(split_fractions=(0.5, 0.5))
    with pytest.raises(ConfigError, match="replay_scale"):
        SimulatorConfig(replay_scale=-0.1)


def test_command_defaults_are_the_config_defaults() -> None:
    args = _parser().parse_args(["out"])
    assert config_from_arguments(SimulatorConfig, args, names=synth.OPTION_NAMES) == SimulatorConfig()
    args = _parser().parse_args(["out", "--games", "8", "--no-audio", "--feature-dims", "4,4"])
    assert config_from_arguments(SimulatorConfig, args, names=synth.OPTION_NAMES) == SimulatorConfig(
        num_games=8, write_audio=False, feature_dims=(4, 4)
    )


def test_split_sizes_give_every_used_split_a_game() -> None:
    assert split_sizes(40, (0.6, 0.15, 0.15, 0.1)) == [24, 6, 6, 4]
    assert split_sizes(6, (0.6, 0.15, 0.15, 0.1)) == [3, 1, 1, 1]
    assert split_sizes(5, (1.0, 0.0, 0.0, 0.0)) == [5, 0, 0, 0]
    for n in range(4, 60):
        sizes = split_sizes(n, (0.55, 0.2, 0.15, 0.1))
        assert sum(sizes) == n and min(sizes) >= 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astra synth")
    synth.add_arguments(parser)
    return parser


def _labels_path(root: Path, game: str) -> Path:
    path = root / game / LABELS_FILENAME
    return path if path.is_file() else root / CHALLENGE_LABELS_DIRNAME / game / LABELS_FILENAME


def _all_labels(root: Path, split: str) -> Annotations:
    parts = [read_labels(_labels_path(root, game)) for game in games_of_split(split, root)]
    fields = ("half", "position_ms", "class_index", "visible")
    return Annotations(*(np.concatenate([getattr(part, name) for part in parts]) for name in fields))


def _has_before(times: np.ndarray, t: float, low: float, high: float) -> bool:
    """Whether some element of ``times`` lies ``low`` to ``high`` seconds before ``t``."""
    gaps = t - times
    return bool(((gaps >= low - 1e-3) & (gaps <= high + 1e-3)).any())


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
