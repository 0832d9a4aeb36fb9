"""Per-class window search: classes are independent, the search never loses on what it searched,
it never looks at the test split, and its files round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astra.classes import NUM_CLASSES
from astra.config import InferenceConfig, replace
from astra.data.labels import Annotations
from astra.evaluation.outputs import score_outputs
from astra.search.windows import ClassWindows, WindowsError, read_windows, search_windows, write_windows


def _case(seed: int = 0, games: int = 4, frames: int = 600, uneven: bool = False) -> tuple[dict, dict]:
    """Events of every class (3 per half; ``uneven``: 1 to 4 by class), and outputs with bumps near
    them (and some noise) that NMS must thin."""
    rng = np.random.default_rng(seed)
    labels, outputs = {}, {}
    for g in range(games):
        halves, rows = {}, []
        for half in (1, 2):
            scores = rng.random((frames, NUM_CLASSES)).astype(np.float32) ** 8 * 0.3
            for c in range(NUM_CLASSES):
                count = 1 + (c * 7) % 4 if uneven else 3
                for frame in rng.choice(np.arange(20, frames - 20), size=count, replace=False):
                    shift = int(rng.integers(-4, 5))
                    width = 2 + c % 5  # classes differ in how wide their bumps are
                    bump = np.exp(-0.5 * (np.arange(frames) - frame - shift) ** 2 / width**2)
                    scores[:, c] = np.maximum(scores[:, c], 0.9 * bump)
                    rows.append((half, frame * 500, c, bool(rng.random() > 0.1)))
            halves[half] = scores
        outputs[f"league/season/game {g}"] = halves
        half, position, cls, visible = (np.array(v) for v in zip(*rows, strict=True))
        labels[f"league/season/game {g}"] = Annotations(
            half.astype(np.int8), position.astype(np.int64), cls.astype(np.int16), visible
        )
    return labels, outputs


def test_per_class_aps_add_up_to_the_whole_evaluator() -> None:
    labels, outputs = _case()
    inference = InferenceConfig()
    problem = ClassWindows(labels, outputs, inference)
    windows = [float(w) for w in np.linspace(2, 25, NUM_CLASSES)]
    per_class = [problem.ap(c, w) for c, w in enumerate(windows)]
    whole = score_outputs(labels, outputs, replace_windows(inference, windows))
    assert np.mean(per_class) == pytest.approx(whole.a_mAP, abs=1e-12)
    np.testing.assert_allclose(per_class, whole.a_mAP_per_class, atol=1e-12)


def test_halves_past_120_minutes_score_as_their_results_files() -> None:
    # The official vectors end at 120 minutes: later detections fold onto the last frame, where the
    # later one in the results file (Soft-NMS's order) wins. Events and bumps sit in the tail.
    from astra.evaluation.average_map import VECTOR_FRAMES, evaluate_spots
    from astra.postprocess.decode import decode_game

    rng = np.random.default_rng(3)
    frames = VECTOR_FRAMES + 120
    labels, outputs = {}, {}
    for g in range(2):
        halves = {}
        for half in (1, 2):
            scores = rng.random((frames, NUM_CLASSES)).astype(np.float32) ** 6 * 0.5
            scores[-100:] = rng.random((100, NUM_CLASSES)).astype(np.float32)  # a busy tail
            halves[half] = scores
        outputs[f"game {g}"] = halves
        labels[f"game {g}"] = Annotations(
            np.array([1, 2, 1, 2], np.int8), np.array([7_199_000, 7_199_500, 3_000_000, 7_150_000]),
            np.array([0, 0, 1, 1], np.int16), np.array([True, True, False, True]),
        )  # fmt: skip
    windows = [float(w) for w in np.linspace(2, 25, NUM_CLASSES)]
    inference = replace_windows(InferenceConfig(), windows)
    problem = ClassWindows(labels, outputs, inference)
    written = {game: decode_game(halves, inference) for game, halves in outputs.items()}
    expected = evaluate_spots(labels, written, "tight").a_mAP_per_class
    for c in (0, 1):
        assert problem.ap(c, windows[c]) == pytest.approx(expected[c], abs=1e-12)
        assert 0 < expected[c] < 1


def replace_windows(inference: InferenceConfig, windows: list[float]) -> InferenceConfig:
    from astra.config import ExperimentConfig

    return replace(
        ExperimentConfig(inference=inference), {"inference.nms_windows_seconds": windows}
    ).inference


@pytest.mark.parametrize("method", ["optuna", "grid"])
def test_the_search_never_scores_lower_than_its_start_on_the_split_searched(method: str) -> None:
    labels, outputs = _case(seed=1)
    search = search_windows(
        labels, outputs, InferenceConfig(), method=method, trials_per_class=8, step_seconds=2.0
    )
    assert all(b >= s for b, s in zip(search.per_class_ap, search.start_per_class_ap, strict=True))
    assert search.a_map >= search.start_a_map
    chosen = replace_windows(InferenceConfig(), list(search.windows_seconds))
    assert score_outputs(labels, outputs, chosen).a_mAP == pytest.approx(search.a_map, abs=1e-12)


def test_optuna_finds_what_an_exhaustive_grid_finds_or_better() -> None:
    labels, outputs = _case(seed=2, games=3)
    grid = search_windows(
        labels, outputs, InferenceConfig(), method="grid", step_seconds=1.0, high_seconds=30.0
    )
    tpe = search_windows(
        labels, outputs, InferenceConfig(), method="optuna", trials_per_class=30, high_seconds=30.0
    )
    # Per class within a small margin of the grid's best (TPE sees a continuum; the grid whole seconds).
    assert tpe.a_map >= grid.a_map - 0.01


def test_windows_are_never_chosen_on_the_test_split() -> None:
    labels, outputs = _case()
    with pytest.raises(WindowsError, match="never on the test split"):
        search_windows(labels, outputs, InferenceConfig(), split="test")
    with pytest.raises(WindowsError, match="never on the test split"):
        search_windows(labels, outputs, InferenceConfig(), split="valid+test")


def test_missing_outputs_are_named() -> None:
    labels, outputs = _case()
    del outputs["league/season/game 1"]
    with pytest.raises(WindowsError, match="game 1"):
        ClassWindows(labels, outputs, InferenceConfig())


def test_windows_files_round_trip_and_bad_ones_are_named(tmp_path: Path) -> None:
    labels, outputs = _case()
    search = search_windows(labels, outputs, InferenceConfig(), method="grid", step_seconds=5.0)
    write_windows(tmp_path / "windows.yaml", search)
    assert read_windows(tmp_path / "windows.yaml") == search.windows_seconds
    (tmp_path / "bad.yaml").write_text("nms_windows_seconds: [5, 7]\n")
    with pytest.raises(WindowsError, match=r"bad\.yaml: expected nms_windows_seconds, a list of 17"):
        read_windows(tmp_path / "bad.yaml")
    with pytest.raises(WindowsError, match="not found"):
        read_windows(tmp_path / "missing.yaml")


def test_hard_nms_is_searched_as_such() -> None:
    labels, outputs = _case()
    hard = InferenceConfig(nms="hard")
    problem = ClassWindows(labels, outputs, hard)
    per_class = [problem.ap(c, w) for c, w in enumerate(hard.nms_windows_seconds)]
    assert np.mean(per_class) == pytest.approx(score_outputs(labels, outputs, hard).a_mAP, abs=1e-12)


def test_a_game_without_detections_of_a_class_scores_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    labels, outputs = _case(games=2)
    quiet = next(iter(outputs))
    outputs[quiet] = {
        half: np.zeros_like(scores) for half, scores in outputs[quiet].items()
    }  # no peak at all
    problem = ClassWindows(labels, outputs, InferenceConfig())
    with caplog.at_level("WARNING"):
        aps = [problem.ap(c, 8.0) for c in range(NUM_CLASSES)]
    assert not [r for r in caplog.records if "no predictions" in r.getMessage()]
    whole = score_outputs(labels, outputs, replace_windows(InferenceConfig(), [8.0] * NUM_CLASSES))
    np.testing.assert_allclose(aps, whole.a_mAP_per_class, atol=1e-12)


def test_classes_searched_in_two_processes_give_the_result_of_one() -> None:
    labels, outputs = _case(seed=3, games=2, uneven=True)
    problem = ClassWindows(labels, outputs, InferenceConfig())
    handed_out = sorted(range(NUM_CLASSES), key=lambda c: -problem.events_of_class(c))
    assert handed_out != list(range(NUM_CLASSES))  # the processes get the classes out of order
    one = search_windows(labels, outputs, InferenceConfig(), trials_per_class=6)
    two = search_windows(labels, outputs, InferenceConfig(), trials_per_class=6, workers=2)
    assert two == one
    with pytest.raises(WindowsError, match="workers must be a whole number >= 1, got 0"):
        search_windows(labels, outputs, InferenceConfig(), workers=0)


def test_a_ray_task_searches_its_classes_in_processes_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a trial with several CPUs does: processes spawned from a Ray worker, the same windows."""
    ray = pytest.importorskip("ray")
    import shutil
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    labels, outputs = _case(seed=4, games=2, uneven=True)
    local = search_windows(labels, outputs, InferenceConfig(), trials_per_class=4)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        task = ray.remote(num_cpus=2)(search_windows)
        remote = ray.get(task.remote(labels, outputs, InferenceConfig(), trials_per_class=4, workers=2))
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert remote == local
