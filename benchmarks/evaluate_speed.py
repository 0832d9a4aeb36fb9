"""Whole-process time of the official SoccerNet evaluator versus ``astra evaluate``.

Writes 100 games of labels (about 220 annotations per game, with the long-tailed class
mix of the paper's Table 1, 9 % not shown, over two halves of 45 to 50 minutes) and
about 2,000 predictions per game, then times, side by side and several times each:

- the official evaluator (``soccernet`` pip package), tight then loose in one process;
- ``python -m astra evaluate --metric tight --json`` and the same with ``loose``.

Each run is a whole process, from start to exit. Prints the medians of wall time and of
CPU time (user + system; steadier when other jobs share the machine) and the ratios
official / ours (tight + loose), and checks that both give the same six values.

    python benchmarks/evaluate_speed.py [--games 100] [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        labels_root, predictions_root = write_data(work, args.games, args.predictions_per_game, args.seed)
        run_benchmark(labels_root, predictions_root, args.repeats)


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


def run_benchmark(labels_root: Path, predictions_root: Path, repeats: int) -> None:
    official_command = [sys.executable, "-c", OFFICIAL, str(labels_root), str(predictions_root)]
    evaluate = [sys.executable, "-m", "astra", "evaluate", "--labels", str(labels_root)]
    evaluate += ["--predictions", str(predictions_root), "--json"]
    ours = {metric: [*evaluate, "--metric", metric] for metric in ("tight", "loose")}
    wall: dict[str, list[float]] = {"official": [], "tight": [], "loose": []}
    cpu: dict[str, list[float]] = {"official": [], "tight": [], "loose": []}
    outputs: dict[str, str] = {}
    for _ in range(repeats):
        # Interleaved, so that a busy moment of the machine hits both sides alike.
        for name, command in (("official", official_command), *ours.items()):
            seconds, cpu_seconds = _timed(command, outputs, name)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    print(f"median of {repeats} runs        wall s   CPU s (user + system, all processes)")
    for name, label in (
        ("official", "official, tight + loose"),
        ("tight", "astra evaluate, tight"),
        ("loose", "astra evaluate, loose"),
    ):
        print(f"{label:<27} {statistics.median(wall[name]):7.2f} {statistics.median(cpu[name]):7.2f}")
    for what, times in (("wall", wall), ("CPU", cpu)):
        ratio = statistics.median(times["official"]) / (
            statistics.median(times["tight"]) + statistics.median(times["loose"])
        )
        print(f"ratio official / ours (tight + loose), {what} time: {ratio:.1f} x")
    reference = json.loads(outputs["official"].strip().splitlines()[-1])
    for metric in ("tight", "loose"):
        mine = json.loads(outputs[metric].strip().splitlines()[-1])
        difference = max(
            float(np.max(np.abs(np.asarray(reference[metric][key]) - np.asarray(mine[key]))))
            for key in reference[metric]
        )
        print(f"{metric}: a_mAP {mine['a_mAP']:.6f}, largest gap to the official value {difference:.1e}")


def _timed(command: list[str], outputs: dict[str, str], name: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        sys.exit(f"{name} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    outputs[name] = completed.stdout
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


if __name__ == "__main__":
    main()
