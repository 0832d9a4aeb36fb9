"""Time the per-class Soft-NMS window search on 100 games, Optuna (TPE) against the exhaustive grid.

The workload is what a search trial hands :func:`astra.search.windows.search_windows`: the
per-position outputs of a validation split, ``[frames, 17]`` per half at 2 fps, and its labels.
Here 100 games of two 45-minute halves, events drawn at the paper's class frequencies (Table 1
counts over 500 games), and synthetic outputs shaped like a trained model's: a log-normal floor
around 1e-3, a bump near most events (offset by a few seconds, some missed), and as many false
bumps, so that the windows matter. Each method runs the 17 classes one after the other, as a
trial does, on one core; the script prints its time, the evaluations, and the a-mAP of the
windows it chose (on these outputs: the figures are speeds and a comparison, not a score).

    python benchmarks/window_search_speed.py [--games 100] [--trials-per-class 20 40] [--seed 0]
    python benchmarks/window_search_speed.py --baseline DIR [--rounds 4] [--method grid]

With ``--baseline DIR`` (a checkout of another commit) the script instead times that checkout's
``astra/search/windows.py`` against this one's, in this process, on the same outputs, alternating
which goes first in each round; everything else (Soft-NMS, the evaluator) is this tree's.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

from astra.classes import FRAMES_PER_SECOND, NUM_CLASSES, PAPER_CLASS_COUNTS
from astra.config import InferenceConfig
from astra.data.labels import Annotations
from astra.search.windows import search_windows

HALF_SECONDS = 45 * 60
EVENTS_PER_HALF = np.asarray(PAPER_CLASS_COUNTS, dtype=np.float64) / 1000


def synthetic_split(games: int, seed: int) -> tuple[dict[str, Annotations], dict[str, dict[int, np.ndarray]]]:
    """Labels and per-position outputs of ``games`` games (see the module docstring)."""
    rng = np.random.default_rng(seed)
    frames = HALF_SECONDS * FRAMES_PER_SECOND
    time_axis = np.arange(frames) / FRAMES_PER_SECOND
    labels, outputs = {}, {}
    for g in range(games):
        halves, positions, classes, visible = [], [], [], []
        per_half = {}
        for half in (1, 2):
            scores = np.exp(rng.normal(np.log(1e-3), 1.0, size=(frames, NUM_CLASSES))).clip(0, 1)
            for c in range(NUM_CLASSES):
                count = rng.poisson(EVENTS_PER_HALF[c])
                events = np.sort(rng.uniform(0, HALF_SECONDS - 1, count))
                seen = events[rng.random(count) < 0.8]  # a fifth of the events are missed
                found = seen + rng.normal(0.0, 2.0, seen.size)
                false = rng.uniform(0, HALF_SECONDS, rng.poisson(max(count, 1)))
                for centre, peak in zip(
                    np.concatenate([found, false]),
                    np.concatenate([rng.uniform(0.3, 0.95, found.size), rng.uniform(0.05, 0.6, false.size)]),
                    strict=True,
                ):
                    lo, hi = np.searchsorted(time_axis, [centre - 8, centre + 8])
                    width = rng.uniform(1.0, 3.0)
                    bump = peak * np.exp(-0.5 * ((time_axis[lo:hi] - centre) / width) ** 2)
                    np.maximum(scores[lo:hi, c], bump, out=scores[lo:hi, c])
                halves += [half] * count
                positions += (events * 1000).astype(np.int64).tolist()
                classes += [c] * count
                visible += (rng.random(count) > 0.09).tolist()
            per_half[half] = scores.astype(np.float16).astype(np.float32)  # as trials write them
        order = np.lexsort((np.asarray(positions), np.asarray(halves)))
        game = f"league/season/game{g:03d}"
        labels[game] = Annotations(
            half=np.asarray(halves, dtype=np.int8)[order],
            position_ms=np.asarray(positions, dtype=np.int64)[order],
            class_index=np.asarray(classes, dtype=np.int16)[order],
            visible=np.asarray(visible, dtype=bool)[order],
        )
        outputs[game] = per_half
    return labels, outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--games", type=int, default=100, help="games in the split (default 100)")
    parser.add_argument(
        "--trials-per-class", type=int, nargs="+", default=[20, 40],
        help="Optuna budgets to time (default 20, the shipped spaces', and 40, the function's default)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", type=Path, help="a checkout whose windows.py to time against this one")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds with --baseline")
    parser.add_argument("--method", default="grid", choices=("grid", "optuna"), help="with --baseline")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.baseline is not None:
        compare(args)
        return

    started = time.perf_counter()
    labels, outputs = synthetic_split(args.games, args.seed)
    events = sum(len(a) for a in labels.values())
    print(
        f"{args.games} games x 2 halves x {HALF_SECONDS * FRAMES_PER_SECOND} frames x {NUM_CLASSES} classes, "
        f"{events} events (made in {time.perf_counter() - started:.1f} s)"
    )
    inference = InferenceConfig()
    runs = [("grid 1-40 s step 0.5", {"method": "grid"})]
    runs += [
        (f"optuna {n}/class", {"method": "optuna", "trials_per_class": n}) for n in args.trials_per_class
    ]
    found = {}
    print(f"{'method':<22} {'seconds':>8} {'evaluations':>12} {'valid a-mAP':>12} {'paper windows':>14}")
    for name, settings in runs:
        started = time.perf_counter()
        search = search_windows(labels, outputs, inference, metric="tight", **settings)
        seconds = time.perf_counter() - started
        found[name] = search
        print(
            f"{name:<22} {seconds:>8.1f} {search.evaluations:>12} {search.a_map:>12.4f} "
            f"{search.start_a_map:>14.4f}"
        )
    grid = np.asarray(found[runs[0][0]].per_class_ap)
    for name, search in list(found.items())[1:]:
        ap = np.asarray(search.per_class_ap)
        print(
            f"{name}: per class against the grid: {int((ap > grid + 1e-12).sum())} better, "
            f"{int((np.abs(ap - grid) <= 1e-12).sum())} equal, {int((ap < grid - 1e-12).sum())} worse "
            f"(largest shortfall {max(0.0, float((grid - ap).max())):.4f} AP)"
        )


def compare(args: argparse.Namespace) -> None:
    """This tree's window search against ``args.baseline``'s, alternating, on the same outputs."""
    path = args.baseline / "astra" / "search" / "windows.py"
    spec = importlib.util.spec_from_file_location("baseline_windows", path)
    assert spec is not None and spec.loader is not None, path
    baseline = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = baseline  # dataclasses look their module up there
    spec.loader.exec_module(baseline)
    labels, outputs = synthetic_split(args.games, args.seed)
    inference = InferenceConfig()
    sides = {"baseline": baseline.search_windows, "this tree": search_windows}
    print(f"{args.games} games, {args.method} search, {args.rounds} rounds; seconds per search")
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_number in range(args.rounds):
        order = list(sides) if round_number % 2 == 0 else list(sides)[::-1]
        found = {}
        for name in order:
            started = time.perf_counter()
            found[name] = sides[name](labels, outputs, inference, metric="tight", method=args.method)
            times[name].append(time.perf_counter() - started)
        same = found["baseline"].windows_seconds == found["this tree"].windows_seconds
        print(
            f"round {round_number + 1} ({order[0]} first): baseline {times['baseline'][-1]:.1f}, this tree "
            f"{times['this tree'][-1]:.1f}, ratio {times['baseline'][-1] / times['this tree'][-1]:.2f}x, "
            f"same windows {same}, a-mAP {found['this tree'].a_map:.4f}"
        )
    ratios = sorted(b / t for b, t in zip(times["baseline"], times["this tree"], strict=True))
    print(f"median ratio {float(np.median(ratios)):.2f}x (per round {ratios[0]:.2f}x to {ratios[-1]:.2f}x)")


if __name__ == "__main__":
    main()
