"""Time ``ensembles/build.py`` on 100 games and 4 members, and its peak memory.

A constructed experiment folder, as a search leaves it, in a temporary folder: valid and test
splits of ``--games`` games each (two 45-minute halves, events at the paper's class
frequencies, the labels written in the real layout) and ``--members`` finished trials whose
per-position outputs are the window-search benchmark's synthetic outputs with each trial's own
noise and misses (so that averaging them helps). Then the whole build as the command runs it:
reading the outputs, the greedy selection on valid, the averaging, the window search on the
average (TPE, 40 per class), writing valid and test, scoring both, the report. Prints the
build's time, its steps' share, and the process's peak resident memory against one member's
outputs of one split.

The members' noise (``--background``):

- ``noisy`` (the default): Gaussian noise of standard deviation 0.03 added everywhere, clipped
  at 0. About 41% of a member's (frame, class) scores and 58% of the average's are then above
  the 0.01 threshold, so every class of a half is one long run that Soft-NMS thins into a
  detection every few frames: some 10,400 per half, where the outputs before noise give 1,600.
  The worst case for Soft-NMS and for the files written, not what a model gives.
- ``realistic``: the noise multiplies (log-normal, sigma 0.3), so that far from events the
  outputs stay mostly well under 0.01, as a trained model's sigmoid outputs do (the floor is
  around 1e-3): about 5% of the scores above the threshold, some 1,300 detections per half.

    python benchmarks/ensemble_speed.py [--games 100] [--members 4] [--background noisy] [--seed 0]
        [--workers N]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from window_search_speed import synthetic_split

from astra import per_position
from astra.classes import CLASSES
from astra.config import ExperimentConfig


def _peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


BACKGROUNDS = ("noisy", "realistic")


def write_experiment(root: Path, games: int, members: int, seed: int, background: str = "noisy") -> Path:
    """Labels, splits and ``members`` trials' valid and test outputs under ``root``."""
    data, experiment = root / "data", root / "experiment"
    splits = {}
    rng = np.random.default_rng(seed)
    for s, split in enumerate(("valid", "test")):
        labels, outputs = synthetic_split(games, seed + s)
        renamed = {f"{split}/season/{game.rsplit('/', 1)[1]}": game for game in labels}
        splits[split] = list(renamed)
        for name, game in renamed.items():
            annotations = labels[game]
            (data / name).mkdir(parents=True, exist_ok=True)
            entries = [
                {
                    "gameTime": f"{h} - {ms // 60000:02d}:{ms // 1000 % 60:02d}",
                    "label": CLASSES[c],
                    "position": str(ms),
                    "visibility": "visible" if v else "not shown",
                }
                for h, ms, c, v in zip(
                    annotations.half.tolist(), annotations.position_ms.tolist(),
                    annotations.class_index.tolist(), annotations.visible.tolist(), strict=True,
                )
            ]  # fmt: skip
            (data / name / "Labels-v2.json").write_text(
                json.dumps({"annotations": entries}), encoding="utf-8"
            )
            for m in range(members):
                halves = {}
                for half, scores in outputs[game].items():
                    own = scores * rng.uniform(0.6, 1.0, size=scores.shape[1])
                    if background == "noisy":
                        own = own + rng.normal(0, 0.03, scores.shape)
                    else:
                        own = own * np.exp(rng.normal(0, 0.3, scores.shape))
                    halves[half] = np.clip(own, 0, 1).astype(np.float32)
                per_position.write_game(
                    experiment / "trials" / f"m{m}" / split / "per_position", name, halves
                )
    (data / "splits.json").write_text(json.dumps({"train": [], "challenge": [], **splits}), encoding="utf-8")
    roots = {name: str(data) for name in ("labels", "features", "audio")}
    roots |= {"features_pattern": "{half}_baidu_soccer_embeddings.npy", "audio_pattern": "audio{half}.npy"}
    (experiment / "search.json").write_text(
        json.dumps({"base_config": ExperimentConfig().to_dict(), "data": roots}), encoding="utf-8"
    )
    (experiment / "results.parquet").write_bytes(b"")
    for m in range(members):
        own = 0.3 - 0.01 * m
        result = {"valid_tight_paper": own, "valid_tight_per_class_paper": [own] * len(CLASSES)}
        (experiment / "trials" / f"m{m}" / "result.json").write_text(json.dumps(result), encoding="utf-8")
    return experiment


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--games", type=int, default=100, help="games per split (default 100)")
    parser.add_argument("--members", type=int, default=4, help="finished trials to choose from (default 4)")
    parser.add_argument(
        "--background", choices=BACKGROUNDS, default="noisy",
        help="the members' noise: added everywhere (default), or multiplying (see above)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=None,
        help="processes of the build (default: the CPUs this process may use, as the command)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    from astra.ensemble.build import EnsembleOptions, build_ensemble
    from astra.processes import usable_cpus

    with tempfile.TemporaryDirectory(prefix="astra-ensemble-") as folder:
        started = time.perf_counter()
        # In a child process, so that this one's peak memory is the build's alone.
        writer = multiprocessing.get_context("fork").Process(
            target=write_experiment,
            args=(Path(folder), args.games, args.members, args.seed, args.background),
        )
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise SystemExit("writing the experiment failed")
        experiment = Path(folder) / "experiment"
        print(f"experiment written in {time.perf_counter() - started:.0f} s (not timed below)")
        before = _peak_rss_mb()
        started = time.perf_counter()
        workers = usable_cpus() if args.workers is None else args.workers
        options = EnsembleOptions(
            experiment=str(experiment), top=args.members, pool=args.members, workers=workers
        )
        record = build_ensemble(options)
        seconds = time.perf_counter() - started
    member_split_mb = args.games * 2 * 5400 * len(CLASSES) * 4 / 2**20
    print(
        f"\nbuild: {seconds:.1f} s for {args.games} games per split and {args.members} candidates, "
        f"{args.background} background, {args.workers or 'default'} workers "
        f"({record['evaluations']} ensembles scored on valid); members {record['members']}"
    )
    print(f"valid tight {record['scores']['valid']['searched']['tight']:.4f} (searched windows)")
    print(
        f"peak RSS {_peak_rss_mb():.0f} MB (before the build {before:.0f} MB; one member's outputs of one "
        f"split in float32: {member_split_mb:.0f} MB)"
    )


if __name__ == "__main__":
    main()
