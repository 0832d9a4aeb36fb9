"""Whole-process time of the official SoccerNet evaluator versus ``astra evaluate``.

Writes 100 games of labels (about 220 annotations per game, with the long-tailed class
mix of the paper's Table 1, 9 % not shown, over two halves of 45 to 50 minutes) and
about 2,000 predictions per game, then times, side by side and several times each:

- the official evaluator (``soccernet`` pip package), tight then loose in one process;
- ``python -m astra evaluate --metric tight --json`` and the same with ``loose``: two
  processes, each reading the files;
- ``python -m astra evaluate --metric tight,loose --json``: one process, reading once.

Each run is a whole process, from start to exit; the rounds are interleaved (official,
tight, loose, tight+loose, then again), after one untimed warm-up round. Prints the
medians of wall time and of CPU time (user + system; steadier when other jobs share
the machine), the ratios official / ours for both forms of tight + loose (of the
medians, and the spread of the per-round ratios), and checks that all give the same
values as the official evaluator.

The processes run as those of an installed package do, from compiled byte code: the
benchmark points PYTHONPYCACHEPREFIX at a temporary folder and lets Python write there
(the warm-up round fills it), even where PYTHONDONTWRITEBYTECODE is set; --keep-env runs
them with the environment as it is (with PYTHONDONTWRITEBYTECODE, every astra module is
compiled again at each start).

--profile prints, instead, where the time of one ``--metric tight,loose`` process goes:
its phases timed in one process (no profiler) and cProfile's top functions.

    python benchmarks/evaluate_speed.py [--games 100] [--repeats 3] [--work DIR] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from astra.classes import CLASSES, NUM_CLASSES, PAPER_CLASS_COUNTS
from astra.data.labels import LABELS_FILENAME, game_time
from astra.submission import Spots, write_submission

# Calls the official evaluator on every game under the labels root (dataset=None infers
# the games; EVENT_DICTIONARY must then be given) and prints both results as JSON.
OFFICIAL = """
import json, sys
from SoccerNet.Evaluation.ActionSpotting import evaluate
from SoccerNet.Evaluation.utils import EVENT_DICTIONARY_V2
results = {}
for metric in ("tight", "loose"):
    result = evaluate(sys.argv[1], sys.argv[2], dataset=None, version=2, metric=metric,
                      EVENT_DICTIONARY=EVENT_DICTIONARY_V2)
    results[metric] = {key: (list(map(float, value)) if hasattr(value, "__len__") else float(value))
                       for key, value in result.items()}
print(json.dumps(results))
"""
# Classes that the simulated data never marks "not shown" (the official rescaling assumes 13 do).
ALWAYS_VISIBLE = ("Penalty", "Kick-off", "Goal", "Yellow->red card")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--games", type=int, default=100)
    parser.add_argument("--predictions-per-game", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="write the data here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, help="astra evaluate --workers (default: the command's own default)"
    )
    parser.add_argument("--keep-env", action="store_true", help="run the processes in this environment as is")
    parser.add_argument("--profile", action="store_true", help="profile one tight,loose process instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        labels_root, predictions_root = write_data(work, args.games, args.predictions_per_game, args.seed)
        environment = dict(os.environ)
        if not args.keep_env:
            environment.pop("PYTHONDONTWRITEBYTECODE", None)
            environment["PYTHONPYCACHEPREFIX"] = str(Path(temporary) / "pycache")
        if args.profile:
            profile(labels_root, predictions_root, environment, Path(temporary))
        else:
            run_benchmark(labels_root, predictions_root, args.repeats, args.workers, environment)


def write_data(work: Path, num_games: int, predictions_per_game: int, seed: int) -> tuple[Path, Path]:
    """Labels under ``work/labels``, predictions under ``work/predictions``."""
    rng = np.random.default_rng(seed)
    labels_root = work / "labels"
    class_share = np.asarray(PAPER_CLASS_COUNTS, dtype=np.float64) / sum(PAPER_CLASS_COUNTS)
    num_entries = 0
    results = {}
    for number in range(num_games):
        game = f"league_{number % 6}/2016-2017/2017-01-{number % 28 + 1:02d} - 20-00 Home {number} 1 - 0 Away"
        half_ms = rng.integers(45 * 60_000, 50 * 60_000, size=2)
        counts = rng.multinomial(int(rng.poisson(220)), class_share)
        annotations = []
        for class_index, count in enumerate(counts):
            halves = rng.integers(1, 3, size=count)
            positions = (rng.random(count) * half_ms[halves - 1]).astype(np.int64)
            unshown = rng.random(count) < (0.0 if CLASSES[class_index] in ALWAYS_VISIBLE else 0.09)
            rows = zip(halves.tolist(), positions.tolist(), unshown.tolist(), strict=True)
            for half, position, hidden in rows:
                annotations.append(
                    {
                        "gameTime": game_time(half, position),
                        "label": CLASSES[class_index],
                        "position": str(position),
                        "team": "home",
                        "visibility": "not shown" if hidden else "visible",
                    }
                )
        annotations.sort(key=lambda entry: (entry["gameTime"][0], int(entry["position"])))
        folder = labels_root / game
        folder.mkdir(parents=True, exist_ok=True)
        document = {"UrlLocal": game, "annotations": annotations}
        (folder / LABELS_FILENAME).write_text(json.dumps(document, indent=4))
        results[game] = _predictions(rng, annotations, half_ms, predictions_per_game, class_share)
        num_entries += len(annotations) + len(results[game])
    predictions_root = work / "predictions"
    write_submission(predictions_root, results)
    size_mb = sum(path.stat().st_size for path in work.rglob("*.json")) / 1e6
    print(f"data: {num_games} games, {num_entries} entries, {size_mb:.1f} MB of JSON in {work}")
    return labels_root, predictions_root


def _predictions(
    rng: np.random.Generator,
    annotations: list[dict[str, str]],
    half_ms: np.ndarray,
    count: int,
    class_share: np.ndarray,
) -> Spots:
    """Half the predictions near true events (a few seconds off, higher scores), half anywhere."""
    near = min(count // 2, len(annotations))
    chosen = rng.choice(len(annotations), size=near, replace=False)
    near_half = np.array([int(annotations[i]["gameTime"][0]) for i in chosen], dtype=np.int64)
    near_position = np.array([int(annotations[i]["position"]) for i in chosen], dtype=np.int64)
    near_position = np.clip(near_position + rng.normal(0, 3000, near).astype(np.int64), 0, None)
    near_class = np.array([CLASSES.index(annotations[i]["label"]) for i in chosen], dtype=np.int64)
    far = count - near
    # Every class gets some predictions (a spotting model scores all 17), frequent ones more.
    far_class = rng.choice(NUM_CLASSES, size=far, p=0.5 * class_share + 0.5 / NUM_CLASSES)
    far_half = rng.integers(1, 3, size=far)
    far_position = (rng.random(far) * half_ms[far_half - 1]).astype(np.int64)
    return Spots(
        np.concatenate([near_half, far_half]),
        np.concatenate([near_position, far_position]),
        np.concatenate([near_class, far_class]),
        np.concatenate([rng.beta(4, 2, near), rng.beta(1, 4, far)]),
    )


FORMS = (
    ("official", "official, tight + loose"),
    ("tight", "astra evaluate --metric tight"),
    ("loose", "astra evaluate --metric loose"),
    ("tight,loose", "astra evaluate --metric tight,loose"),
)


def run_benchmark(
    labels_root: Path, predictions_root: Path, repeats: int, workers: int | None, environment: dict[str, str]
) -> None:
    official_command = [sys.executable, "-c", OFFICIAL, str(labels_root), str(predictions_root)]
    evaluate = [sys.executable, "-m", "astra", "evaluate", "--labels", str(labels_root)]
    evaluate += ["--predictions", str(predictions_root), "--json"]
    if workers is not None:
        evaluate += ["--workers", str(workers)]
    commands = {"official": official_command}
    commands |= {metric: [*evaluate, "--metric", metric] for metric in ("tight", "loose", "tight,loose")}
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    outputs: dict[str, str] = {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average before: {load:.2f}; {os.cpu_count()} CPUs; warm-up round, then {repeats} rounds")
    if workers is None:
        from astra.commands.evaluate import _idle_cores

        print(f"astra evaluate reads with its default workers (one per idle core: {_idle_cores(4)} now)")
    for round_number in range(repeats + 1):
        # Interleaved, so that a busy moment of the machine hits all forms alike.
        for name, command in commands.items():
            seconds, cpu_seconds = _timed(command, outputs, name, environment)
            if round_number > 0:  # the first round fills the byte-code cache and the file cache
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
    print(f"median of {repeats} runs                    wall s   CPU s (user + system, all processes)")
    for name, label in FORMS:
        print(f"{label:<39} {statistics.median(wall[name]):7.2f} {statistics.median(cpu[name]):7.2f}")
    for what, times in (("wall", wall), ("CPU", cpu)):
        official = statistics.median(times["official"])
        two = statistics.median(times["tight"]) + statistics.median(times["loose"])
        one = statistics.median(times["tight,loose"])
        per_round_one = [o / b for o, b in zip(times["official"], times["tight,loose"], strict=True)]
        per_round_two = [
            o / (t + lo) for o, t, lo in zip(times["official"], times["tight"], times["loose"], strict=True)
        ]
        print(
            f"ratio official / ours, tight + loose, {what} time: two processes {official / two:.1f} x "
            f"(rounds {min(per_round_two):.1f} to {max(per_round_two):.1f}), one process "
            f"{official / one:.1f} x (rounds {min(per_round_one):.1f} to {max(per_round_one):.1f})"
        )
    reference = json.loads(outputs["official"].strip().splitlines()[-1])
    together = json.loads(outputs["tight,loose"].strip().splitlines()[-1])
    for metric in ("tight", "loose"):
        mine = json.loads(outputs[metric].strip().splitlines()[-1])
        difference = max(
            float(np.max(np.abs(np.asarray(reference[metric][key]) - np.asarray(mine[key]))))
            for key in reference[metric]
        )
        same = "equal" if together[metric] == mine else "NOT EQUAL"
        print(
            f"{metric}: a_mAP {mine['a_mAP']:.6f}, largest gap to the official value {difference:.1e}; "
            f"one-process values {same} to the {metric}-only process"
        )


# Phases of one `astra evaluate --metric tight,loose` as the command runs them, timed
# with perf_counter in one process (the profiler itself slows Python code down).
PHASES = """
import sys, time
marks = [("start", time.perf_counter())]
def mark(name):
    marks.append((name, time.perf_counter()))
from astra.cli import build_parser
arguments = build_parser().parse_args(["evaluate", "--labels", sys.argv[1], "--predictions", sys.argv[2]])
mark("import astra.cli, build every command's parser")
from astra.commands.evaluate import _import_numpy_with_one_blas_thread
_import_numpy_with_one_blas_thread()
mark("import numpy (one OpenBLAS thread, as the command does)")
from pathlib import Path
from astra.evaluation import average_map
from astra import submission
mark("import astra.evaluation (with msgspec)")
labels_root = Path(sys.argv[1])
games = average_map._games_with_labels(labels_root)
available = submission.open_predictions(sys.argv[2])
mark("list the games and files")
label_bytes = [(labels_root / game / "Labels-v2.json").read_bytes() for game in games]
prediction_bytes = [Path(available._locations[game]).read_bytes() for game in games]
mark("read the bytes of the 2 x %d files" % len(games))
from astra.data.labels import load_json, parse_labels
labels = {game: parse_labels(load_json(data, game), game) for game, data in zip(games, label_bytes)}
mark("parse the label files (generic msgspec decode, then columns)")
decoded = [submission._RESULTS_DECODER.decode(data) for data in prediction_bytes]
mark("decode the prediction files (typed msgspec structs)")
del decoded
spots = {game: submission.read_results(data)[1] for game, data in zip(games, prediction_bytes)}
mark("decode the prediction files again, and make the columns")
results = average_map.evaluate_spots_metrics(labels, spots, ["tight", "loose"])
mark("score tight and loose")
previous = marks[0][1]
for name, moment in marks[1:]:
    print(f"  {1000 * (moment - previous):7.1f} ms  {name}")
    previous = moment
print(f"  {1000 * (marks[-1][1] - marks[0][1]):7.1f} ms  in all (after the interpreter's start)")
"""


def profile(labels_root: Path, predictions_root: Path, environment: dict[str, str], temporary: Path) -> None:
    """Phases of one tight,loose process (median of 5 runs' totals shown), then cProfile's top functions."""
    phases = [sys.executable, "-c", PHASES, str(labels_root), str(predictions_root)]
    evaluate = [sys.executable, "-m", "astra", "evaluate", "--labels", str(labels_root)]
    evaluate += [
        "--predictions",
        str(predictions_root),
        "--json",
        "--metric",
        "tight,loose",
        "--workers",
        "1",
    ]
    outputs: dict[str, str] = {}
    _timed(evaluate, outputs, "warm-up", environment)
    runs = []
    for _ in range(5):
        wall, _ = _timed(evaluate, outputs, "astra evaluate", environment)
        _timed(phases, outputs, "phases", environment)
        runs.append((wall, outputs["phases"]))
    runs.sort(key=lambda run: run[0])
    wall, phase_lines = runs[len(runs) // 2]
    print(f"one process, --metric tight,loose --workers 1: {wall:.3f} s wall (median of 5), phases of")
    print("the paired in-process run (the reading of a predictions file is its decoding plus the columns):")
    print(phase_lines, end="")
    statistics_file = temporary / "evaluate.prof"
    _timed(
        [sys.executable, "-m", "cProfile", "-o", str(statistics_file), *evaluate[1:]],
        outputs,
        "cProfile",
        environment,
    )
    import pstats

    print("cProfile of that process, top functions by own time (the profiler slows Python code):")
    stats = pstats.Stats(str(statistics_file))
    stats.sort_stats("tottime").print_stats(12)


def _timed(
    command: list[str], outputs: dict[str, str], name: str, environment: dict[str, str]
) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        sys.exit(f"{name} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    outputs[name] = completed.stdout
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


if __name__ == "__main__":
    main()
