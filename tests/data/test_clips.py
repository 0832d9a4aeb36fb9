"""Clip starts, clip slicing (padding, audio alignment, NaN checks) and target encoding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from astra.classes import CLASS_INDEX, NUM_CLASSES
from astra.data.clips import (
    encode_targets,
    inference_window_starts,
    slice_clips,
    training_clip_starts,
)
from astra.data.dataset import DataError, DataRoots, load_game, load_split
from astra.data.labels import Annotations

FOUL = CLASS_INDEX["Foul"]
GOAL = CLASS_INDEX["Goal"]
CORNER = CLASS_INDEX["Corner"]


def _annotations(*actions: tuple[int, int]) -> Annotations:
    """Annotations of one half from ``(position_ms, class_index)`` pairs."""
    positions = np.array([ms for ms, _ in actions], dtype=np.int64)
    return Annotations(
        half=np.ones(len(actions), dtype=np.int8),
        position_ms=positions,
        class_index=np.array([c for _, c in actions], dtype=np.int16),
        visible=np.ones(len(actions), dtype=bool),
    )


def _starts(*seconds: int) -> np.ndarray:
    return np.array(seconds, dtype=np.int64)


def _reference_targets(
    annotations: Annotations,
    starts: np.ndarray,
    clip_seconds: int,
    rate: int,
    class_radius_seconds: float,
    displacement_radius_seconds: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The target definition written out with plain loops, as an oracle."""
    num_outputs = clip_seconds * rate
    classification = np.zeros((len(starts), num_outputs, NUM_CLASSES + 1), dtype=np.float32)
    displacement = np.full((len(starts), num_outputs, NUM_CLASSES + 1), np.nan, dtype=np.float32)
    for n, start in enumerate(starts):
        for j in range(num_outputs):
            for c in range(NUM_CLASSES):
                best: int | None = None
                for ms, cls in zip(annotations.position_ms, annotations.class_index, strict=True):
                    if cls != c:
                        continue
                    offset = j - (int(ms) * rate // 1000 - int(start) * rate)
                    if abs(offset) <= class_radius_seconds * rate:
                        classification[n, j, c + 1] = 1
                    if abs(offset) <= displacement_radius_seconds * rate and (
                        best is None
                        or abs(offset) < abs(best)
                        or (abs(offset) == abs(best) and offset > best)
                    ):
                        best = offset
                if best is not None:
                    displacement[n, j, c + 1] = best
            classification[n, j, 0] = 0.0 if classification[n, j, 1:].any() else 1.0
    return classification, displacement


# --- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 2])
@pytest.mark.parametrize(
    ("class_radius", "displacement_radius"), [(2.0, 3.0), (3.0, 6.0), (1.5, 1.0), (0.0, 0.0)]
)
def test_one_action_marks_its_radii(rate: int, class_radius: float, displacement_radius: float) -> None:
    position_ms = 21_700  # second 21.7: frame 43 at 2 per second, 21 at 1 per second
    classification, displacement = encode_targets(
        _annotations((position_ms, GOAL)), _starts(10), 20, rate, class_radius, displacement_radius
    )
    p = position_ms * rate // 1000 - 10 * rate
    j = np.arange(20 * rate)
    expected_class = (np.abs(j - p) <= class_radius * rate).astype(np.float32)
    np.testing.assert_array_equal(classification[0, :, GOAL + 1], expected_class)
    np.testing.assert_array_equal(classification[0, :, 0], 1 - expected_class)
    others = np.delete(classification[0], [0, GOAL + 1], axis=1)
    assert not others.any()
    expected_displacement = np.where(np.abs(j - p) <= displacement_radius * rate, j - p, np.nan)
    np.testing.assert_array_equal(displacement[0, :, GOAL + 1], expected_displacement)
    assert np.isnan(np.delete(displacement[0], GOAL + 1, axis=1)).all()


def test_action_frame_follows_the_official_rounding() -> None:
    # The official evaluator puts an event at int(2 * ms / 1000): 43999 ms is frame 87, not 88.
    classification, displacement = encode_targets(_annotations((43_999, FOUL)), _starts(40), 10, 2, 0.0, 0.0)
    assert np.flatnonzero(classification[0, :, FOUL + 1]).tolist() == [87 - 80]
    assert displacement[0, 87 - 80, FOUL + 1] == 0


@pytest.mark.parametrize("rate", [1, 2])
def test_rate_scales_frames_and_radii(rate: int) -> None:
    classification, displacement = encode_targets(
        _annotations((12_500, FOUL)), _starts(0), 30, rate, 2.0, 3.0
    )
    assert classification.shape == displacement.shape == (1, 30 * rate, NUM_CLASSES + 1)
    marked = np.flatnonzero(classification[0, :, FOUL + 1])
    p = 12_500 * rate // 1000
    assert marked.tolist() == list(range(p - 2 * rate, p + 2 * rate + 1))
    with_target = np.flatnonzero(~np.isnan(displacement[0, :, FOUL + 1]))
    assert with_target.tolist() == list(range(p - 3 * rate, p + 3 * rate + 1))


def test_actions_at_and_beyond_the_clip_edges() -> None:
    # Clip of 10 s at second 20 (frames 40..59 of the half); radii 2 s / 3 s = 4 / 6 frames.
    before = 19_000  # frame 38: two frames before the clip
    at_start = 20_000  # frame 40: the first position
    at_end = 29_600  # frame 59: the last position
    after = 31_000  # frame 62: three frames after the clip
    far = 40_000  # frame 80: too far to reach the clip
    classification, displacement = encode_targets(
        _annotations((before, FOUL), (at_start, GOAL), (at_end, CORNER), (after, GOAL), (far, FOUL)),
        _starts(20),
        10,
        2,
        2.0,
        3.0,
    )
    foul, goal, corner = (
        classification[0, :, FOUL + 1],
        classification[0, :, GOAL + 1],
        classification[0, :, CORNER + 1],
    )
    assert np.flatnonzero(foul).tolist() == [0, 1, 2]  # frames 40..42 lie within 4 of frame 38
    np.testing.assert_array_equal(displacement[0, :5, FOUL + 1], [2, 3, 4, 5, 6])  # j - p with p = -2
    assert np.isnan(displacement[0, 5:, FOUL + 1]).all()
    assert np.flatnonzero(goal).tolist() == [0, 1, 2, 3, 4, 18, 19]  # the goal after the clip reaches 18, 19
    np.testing.assert_array_equal(displacement[0, 16:, GOAL + 1], [-6, -5, -4, -3])
    assert np.flatnonzero(corner).tolist() == [15, 16, 17, 18, 19]
    np.testing.assert_array_equal(displacement[0, 13:, CORNER + 1], [-6, -5, -4, -3, -2, -1, 0])


def test_labels_past_the_end_of_the_features_mark_nothing() -> None:
    # A half of 30 s: the goal at 30.5 s has no feature row; the clip 20..30 s would hold it
    # within its radii, and the padded clip 25..35 s right on it.
    inside = _annotations((29_000, FOUL))
    both = dataclasses.replace(_annotations((29_000, FOUL), (30_500, GOAL)), past_end=np.array([False, True]))
    for starts in (_starts(20), _starts(25)):
        expected = encode_targets(inside, starts, 10, 2, 2.0, 3.0)
        got = encode_targets(both, starts, 10, 2, 2.0, 3.0)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    unflagged = encode_targets(_annotations((29_000, FOUL), (30_500, GOAL)), _starts(25), 10, 2, 2.0, 3.0)
    assert unflagged[0][0, :, GOAL + 1].any()


def test_nearer_action_of_one_class_wins_and_ties_go_to_the_earlier() -> None:
    # Fouls at frames 10 and 14 of the clip; displacement radius 6 frames.
    classification, displacement = encode_targets(
        _annotations((5_000, FOUL), (7_000, FOUL)), _starts(0), 15, 2, 2.0, 3.0
    )
    foul = displacement[0, :, FOUL + 1]
    assert foul[11] == 1  # nearer to 10
    assert foul[12] == 2  # equally near: the earlier action (frame 10) wins
    assert foul[13] == -1  # nearer to 14
    assert foul[4] == -6 and foul[20] == 6
    assert np.isnan(foul[3]) and np.isnan(foul[21])
    # The class channel is the union of both radii, with no gap.
    assert np.flatnonzero(classification[0, :, FOUL + 1]).tolist() == list(range(6, 19))


def test_the_order_of_the_annotations_does_not_matter() -> None:
    actions = [(5_000, FOUL), (7_000, FOUL), (6_000, GOAL), (6_500, FOUL)]
    forward = encode_targets(_annotations(*actions), _starts(0, 3), 15, 2, 2.0, 3.0)
    backward = encode_targets(_annotations(*actions[::-1]), _starts(0, 3), 15, 2, 2.0, 3.0)
    for a, b in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_classes_at_one_position() -> None:
    classification, displacement = encode_targets(
        _annotations((10_000, FOUL), (10_200, GOAL)), _starts(0), 20, 2, 2.0, 3.0
    )
    assert classification[0, 20, FOUL + 1] == classification[0, 20, GOAL + 1] == 1
    assert classification[0, 20, 0] == 0
    assert displacement[0, 20, FOUL + 1] == displacement[0, 20, GOAL + 1] == 0


def test_a_clip_without_actions_is_all_background() -> None:
    classification, displacement = encode_targets(
        _annotations((100_000, FOUL)), _starts(0, 10), 20, 2, 2.0, 3.0
    )
    assert (classification[:, :, 0] == 1).all()
    assert not classification[:, :, 1:].any()
    assert np.isnan(displacement).all()
    empty = encode_targets(_annotations(), _starts(0), 20, 2, 2.0, 3.0)
    assert (empty[0][:, :, 0] == 1).all() and np.isnan(empty[1]).all()


@pytest.mark.parametrize("seed", range(6))
def test_targets_match_the_definition_on_random_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rate = int(rng.choice([1, 2]))
    class_radius, displacement_radius = float(rng.choice([0, 1, 1.5, 2, 3])), float(rng.choice([0, 1, 3, 6]))
    actions = [
        (int(ms), int(c)) for ms, c in zip(rng.integers(0, 60_000, 25), rng.integers(0, 3, 25), strict=True)
    ]
    annotations = _annotations(*actions)
    starts = rng.integers(0, 55, 5)
    got = encode_targets(annotations, starts, 12, rate, class_radius, displacement_radius)
    expected = _reference_targets(annotations, starts, 12, rate, class_radius, displacement_radius)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_overlapping_clips_agree_on_shared_frames(tiny_dataset) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    for half in load_split(roots, "train", with_audio=False, require_labels=True, progress=False):
        starts = np.arange(0, half.num_seconds, 7)
        classification, displacement = encode_targets(half.annotations, starts, 20, 2, 2.0, 3.0)
        # Clip n + 1 starts 7 s = 14 frames after clip n: its first 26 frames are clip n's last 26.
        np.testing.assert_array_equal(classification[1:, :26], classification[:-1, 14:])
        np.testing.assert_array_equal(displacement[1:, :26], displacement[:-1, 14:])
        # Background is exactly "no class", values are 0/1, and every action is marked on its frame.
        np.testing.assert_array_equal(classification[..., 0], 1 - classification[..., 1:].max(axis=-1))
        assert set(np.unique(classification)) <= {0.0, 1.0}
        assert classification[..., 1:].sum() > 0


def test_bad_target_arguments() -> None:
    with pytest.raises(ValueError, match="radii"):
        encode_targets(_annotations(), _starts(0), 20, 2, -1.0, 3.0)
    with pytest.raises(ValueError, match="outputs_per_second"):
        encode_targets(_annotations(), _starts(0), 20, 0, 2.0, 3.0)
    with pytest.raises(ValueError, match="integer"):
        encode_targets(_annotations(), np.array([1.5]), 20, 2, 2.0, 3.0)


# --- clip starts -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_seconds", [1, 30, 49, 50, 51, 75, 76, 183, 2_731])
def test_training_phases_cover_every_second_without_overlap(num_seconds: int) -> None:
    covered = np.zeros(num_seconds, dtype=bool)
    all_starts = []
    for phase in (0, 1):
        starts = training_clip_starts(num_seconds, 50, 25, phase=phase)
        assert starts.dtype == np.int64 and len(starts) >= 1
        assert (np.diff(starts) >= 50).all()  # clips of one epoch never overlap
        assert (starts >= 0).all() and (starts < num_seconds).all()  # the last may run past the end
        for start in starts:
            covered[start : start + 50] = True
        all_starts.append(starts)
    assert covered.all()
    assert all_starts[0][0] == 0


def test_training_phases_split_the_stride_grid() -> None:
    grid = np.arange(0, 300 - 50 + 1, 25)  # 300 s: windows every 25 s, the last ending at 300
    phases = [training_clip_starts(300, 50, 25, phase=phase) for phase in (0, 1)]
    np.testing.assert_array_equal(np.sort(np.concatenate(phases)), grid)
    three = [training_clip_starts(300, 60, 20, phase=phase) for phase in (0, 1, 2)]
    assert all((np.diff(starts) == 60).all() for starts in three)
    assert len(set(np.concatenate(three).tolist())) == sum(len(s) for s in three)


@pytest.mark.parametrize("num_seconds", [1, 60, 61, 80, 81, 100, 101])
def test_every_phase_gives_a_short_half_at_least_one_clip(num_seconds: int) -> None:
    for phase in (0, 1, 2):
        starts = training_clip_starts(num_seconds, 60, 20, phase=phase)
        assert len(starts) >= 1 and (starts < num_seconds).all() and (np.diff(starts) >= 60).all()


def test_random_phase_picks_one_of_the_fixed_phases() -> None:
    rng = np.random.default_rng(0)
    fixed = [training_clip_starts(2_700, phase=phase).tolist() for phase in (0, 1)]
    drawn = [training_clip_starts(2_700, rng=rng).tolist() for _ in range(40)]
    assert all(starts in fixed for starts in drawn)
    assert fixed[0] in drawn and fixed[1] in drawn


def test_training_start_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        training_clip_starts(100, phase=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="exactly one"):
        training_clip_starts(100)
    with pytest.raises(ValueError, match="phase"):
        training_clip_starts(100, 50, 25, phase=2)
    with pytest.raises(ValueError, match="multiple"):
        training_clip_starts(100, 50, 20, phase=0)
    with pytest.raises(ValueError, match="num_seconds"):
        training_clip_starts(0, phase=0)


@pytest.mark.parametrize("num_seconds", [1, 49, 50, 51, 57, 58, 59, 183, 2_731])
def test_inference_windows_cover_the_half(num_seconds: int) -> None:
    starts = inference_window_starts(num_seconds, 50, 8)
    assert starts[0] == 0 and (np.diff(starts) > 0).all() and (np.diff(starts) <= 8).all()
    assert starts[-1] + 50 == max(num_seconds, 50)  # the last window ends with the half
    covered = np.zeros(num_seconds, dtype=bool)
    for start in starts:
        covered[start : start + 50] = True
    assert covered.all()


# --- slicing ---------------------------------------------------------------------------------


def test_slices_are_the_rows_of_the_half(tiny_dataset) -> None:
    game = tiny_dataset.games[1].name
    half = load_game(DataRoots.single(tiny_dataset.root), game, with_audio=True, require_labels=True)[0]
    features, audio = slice_clips(half, _starts(0, 37, 100), 20, with_audio=True)
    source, source_audio = tiny_dataset.features(game, 1), tiny_dataset.audio(game, 1)
    assert features.shape == (3, 20, tiny_dataset.feature_dim) and features.dtype == np.float32
    assert audio is not None and audio.shape == (3, 128, 2_000) and audio.dtype == np.float32
    for n, start in enumerate((0, 37, 100)):
        np.testing.assert_array_equal(features[n], source[start : start + 20])
        np.testing.assert_array_equal(audio[n], source_audio[:, start * 100 : (start + 20) * 100])
    features_only, no_audio = slice_clips(half, _starts(0, 37, 100), 20, with_audio=False)
    assert no_audio is None
    np.testing.assert_array_equal(features_only, features)


def test_padding_repeats_the_last_frame_and_keeps_real_frames(tiny_dataset) -> None:
    game = tiny_dataset.games[2].name  # half 1: 222 s, audio exactly 222 s
    half = load_game(DataRoots.single(tiny_dataset.root), game, with_audio=True, require_labels=True)[0]
    source, source_audio = tiny_dataset.features(game, 1), tiny_dataset.audio(game, 1)
    features, audio = slice_clips(half, _starts(200, 221), 50, with_audio=True)
    assert audio is not None
    np.testing.assert_array_equal(features[0, :22], source[200:])
    np.testing.assert_array_equal(features[0, 22:], np.broadcast_to(source[-1], (28, source.shape[1])))
    np.testing.assert_array_equal(features[1, 0], source[221])
    assert (features[1] == source[-1]).all()
    np.testing.assert_array_equal(audio[0, :, :2_200], source_audio[:, 20_000:])
    assert (audio[0, :, 2_200:] == source_audio[:, -1:]).all()
    # A padded clip agrees with an unpadded one on the frames they share.
    inside, inside_audio = slice_clips(half, _starts(172), 50, with_audio=True)
    np.testing.assert_array_equal(features[0, :22], inside[0, 28:])
    np.testing.assert_array_equal(audio[0, :, :2_200], inside_audio[0, :, 2_800:])


def test_longer_audio_is_cut_at_the_end_of_the_half(tiny_dataset) -> None:
    game = tiny_dataset.games[0]  # half 1: 183 s of features, 185.5 s of audio
    assert game.audio_frames[0] > game.half_seconds[0] * 100
    half = load_game(DataRoots.single(tiny_dataset.root), game.name, with_audio=True, require_labels=True)[0]
    source_audio = tiny_dataset.audio(game.name, 1)
    _, audio = slice_clips(half, _starts(150), 50, with_audio=True)
    assert audio is not None
    np.testing.assert_array_equal(audio[0, :, :3_300], source_audio[:, 15_000:18_300])
    # Past 183 s the last aligned frame (18 299) repeats; the extra 2.5 s of audio are never used.
    assert (audio[0, :, 3_300:] == source_audio[:, 18_299:18_300]).all()
    assert not (audio[0, :, 3_300:] == source_audio[:, 18_300:18_301]).all()


def test_shorter_audio_is_padded_with_its_last_frame(tiny_dataset) -> None:
    game = tiny_dataset.games[0]  # half 2: 241 s of features, 239.7 s of audio
    frames = game.audio_frames[1]
    assert frames < game.half_seconds[1] * 100
    half = load_game(DataRoots.single(tiny_dataset.root), game.name, with_audio=True, require_labels=True)[1]
    source_audio = tiny_dataset.audio(game.name, 2)
    _, audio = slice_clips(half, _starts(191), 50, with_audio=True)
    assert audio is not None
    real = frames - 19_100
    np.testing.assert_array_equal(audio[0, :, :real], source_audio[:, 19_100:])
    assert (audio[0, :, real:] == source_audio[:, -1:]).all()


@pytest.mark.parametrize("starts", [(0, 5, 9, 13), (150, 160, 170), (0, 90, 180), (3, 181, 120, 60)])
def test_a_batch_of_clips_equals_each_clip_alone(tiny_dataset, starts: tuple[int, ...]) -> None:
    # Close starts are read as one span, far ones gathered frame by frame: both must agree.
    roots = DataRoots.single(tiny_dataset.root)
    for half in load_game(roots, tiny_dataset.games[0].name, with_audio=True, require_labels=True):
        features, audio = slice_clips(half, _starts(*starts), 30, with_audio=True)
        assert audio is not None and audio.flags.c_contiguous and features.flags.c_contiguous
        for n, start in enumerate(starts):
            one_features, one_audio = slice_clips(half, _starts(start), 30, with_audio=True)
            np.testing.assert_array_equal(features[n], one_features[0])
            np.testing.assert_array_equal(audio[n], one_audio[0])


def test_clips_past_the_end_of_short_audio(tmp_path: Path, make_game, tiny_games) -> None:
    # Audio of 55 s under 60 s of features (the least the loader accepts is 54 s): clips
    # reaching past its end hold its last frame, whether read as one span or gathered.
    game = dataclasses.replace(tiny_games[0], half_seconds=(60, 61), audio_frames=(5_500, 6_100), labels=())
    make_game(tmp_path, game)
    half = load_game(DataRoots.single(tmp_path), game.name, with_audio=True, require_labels=True)[0]
    source_audio = np.load(tmp_path / game.name / "audio1.npy")
    for starts in ((50, 55), (20, 55), (5, 12), (5, 50), (56, 59)):
        _, audio = slice_clips(half, _starts(*starts), 10, with_audio=True)
        assert audio is not None
        for n, start in enumerate(starts):
            frames = np.minimum(start * 100 + np.arange(1_000), 5_499)
            np.testing.assert_array_equal(audio[n], source_audio[:, frames])


def test_float16_storage_is_read_as_float32(tmp_path: Path, make_game, tiny_games) -> None:
    game = dataclasses.replace(tiny_games[0], half_seconds=(60, 61), audio_frames=None, labels=())
    make_game(tmp_path, game)
    path = tmp_path / game.name / "1_baidu_soccer_embeddings.npy"
    np.save(path, np.load(path).astype(np.float16))
    half = load_game(DataRoots.single(tmp_path), game.name, with_audio=False, require_labels=True)[0]
    features, _ = slice_clips(half, _starts(3), 10, with_audio=False)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features[0], np.load(path)[3:13].astype(np.float32))


@pytest.mark.parametrize("modality", ["features", "audio"])
def test_nan_in_what_is_read_names_the_file_and_second(
    tmp_path: Path, make_game, tiny_games, modality: str
) -> None:
    game = dataclasses.replace(tiny_games[0], half_seconds=(60, 61), audio_frames=(6_000, 6_100), labels=())
    make_game(tmp_path, game)
    if modality == "features":
        path = tmp_path / game.name / "2_baidu_soccer_embeddings.npy"
        array = np.load(path)
        array[42, 3] = np.nan
    else:
        path = tmp_path / game.name / "audio2.npy"
        array = np.load(path)
        array[5, 4_250] = np.inf
    np.save(path, array)
    # Opening reads no values: the bad one is found where a clip reads it.
    half = load_game(DataRoots.single(tmp_path), game.name, with_audio=True, require_labels=True)[1]
    slice_clips(half, _starts(0), 30, with_audio=True)
    with pytest.raises(DataError, match=r"audio2\.npy|2_baidu") as error:
        slice_clips(half, _starts(0, 31), 30, with_audio=True)
    assert str(path) in str(error.value) and "second 42" in str(error.value)


def test_slicing_arguments_are_checked(tiny_dataset) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    half = load_game(roots, tiny_dataset.games[0].name, with_audio=False, require_labels=True)[0]
    with pytest.raises(ValueError, match="clip starts"):
        slice_clips(half, _starts(183), 50, with_audio=False)
    with pytest.raises(ValueError, match="clip starts"):
        slice_clips(half, _starts(-1), 50, with_audio=False)
    with pytest.raises(DataError, match="without audio"):
        slice_clips(half, _starts(0), 50, with_audio=True)
