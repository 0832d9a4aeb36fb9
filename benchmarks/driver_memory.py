"""The search driver's memory over a long search: does it grow with the number of trials?

A 50-trial search, two at a time on a local Ray, run in this process: of tiny trials (a tiny
model, one epoch, a small simulated dataset without audio, windows searched; minutes), or with
``--space smoke`` of the shipped smoke space on the default dataset, as ``python run_search.py``
runs it (8-epoch small-preset trials under ASHA; about half an hour on 2 cores). A thread samples
the driver's resident memory (RSS) and that of Ray's head processes (GCS server, raylet) every
second, with the number of trials started so far. Prints the RSS when every tenth trial
starts, and the growth per trial between the tenth and the last (the first trials pay for
imports and Ray's start).

    python benchmarks/driver_memory.py [--space tiny|smoke] [--trials 50] [--concurrent 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "model.use_audio": False,
    "model.visual_dims": [8, 8, 4, 8, 8],
    "model.d_model": 16,
    "model.num_heads": 2,
    "clips.clip_seconds": 20,
    "clips.train_stride_seconds": 10,
    "clips.inference_stride_seconds": 10,
    "train.epochs": 1,
    "train.warmup_epochs": 0,
    "train.patience_epochs": 1,
    "train.batch_size": 8,
    "train.loader_workers": 0,
}


def _rss(pid: str | int) -> int:
    """Resident memory of a process in bytes (Linux /proc), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _ray_head_rss() -> int:
    """The GCS server's and the raylet's resident memory together."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"gcs_server" in command or b"/raylet" in command:
            total += _rss(entry.name)
    return total


def _tiny_search(data: Path, space_file: Path, trials: int, concurrent: int) -> None:
    """A 10-game simulated dataset without audio, and a space of tiny one-epoch trials."""
    from astra.config import SimulatorConfig
    from astra.data.simulator import simulate

    simulate(
        data,
        SimulatorConfig(num_games=10, half_minutes=2, write_audio=False, feature_dims=(8, 8, 4, 8, 8)),
        progress=False,
    )
    space = {
        "settings": TINY,
        "parameters": {
            "train.base_learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
            "loss.uncertainty_alpha": {"uniform": [0.1, 0.9]},
        },
        "budget": {"trials": trials, "concurrent": concurrent},
        "asha": {"enabled": False},
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "windows": {"search": True, "method": "optuna", "trials_per_class": 5},
        "start_from_base": False,
    }
    space_file.write_text(yaml.safe_dump(space), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument(
        "--space", choices=("tiny", "smoke"), default="tiny",
        help="tiny trials (default), or search_spaces/smoke.yaml on the default dataset",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from astra.search.run import SearchOptions, default_data, run_search

    samples: list[tuple[int, int, int]] = []  # (trials started, driver RSS, Ray head RSS)
    with tempfile.TemporaryDirectory(prefix="astra-memory-") as folder:
        folder = Path(folder)
        if args.space == "smoke":
            data = default_data()
            space_file = REPO / "search_spaces" / "smoke.yaml"
        else:
            data = folder / "data"
            space_file = folder / "space.yaml"
            _tiny_search(data, space_file, args.trials, args.concurrent)
        experiment = folder / "experiment"
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                # Trials started: under ASHA a stopped trial writes no result.json.
                count = len(list(experiment.glob("trials/*/params.json")))
                samples.append((count, _rss("self"), _ray_head_rss()))

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        try:
            options = SearchOptions(
                space=str(space_file), data=str(data), experiment=str(experiment),
                trials=args.trials, concurrent=args.concurrent,
            )  # fmt: skip
            status = run_search(options)
        finally:
            stop.set()
            sampler.join()
        minutes = (time.perf_counter() - started) / 60
    if status != 0:
        raise SystemExit(f"the search failed with status {status}")
    print(f"\n{args.trials} {args.space} trials, {args.concurrent} at a time, in {minutes:.1f} min")
    print(f"{'trials started':>14} {'driver RSS MB':>14} {'Ray head RSS MB':>16}")
    marks = {}
    for count, rss, head in samples:
        marks[count] = (rss, head)  # the last sample at each count
    shown = [n for n in sorted(marks) if n % 10 == 0 and n > 0] or sorted(marks)[-1:]
    for n in shown:
        print(f"{n:>14} {marks[n][0] / 2**20:>14.0f} {marks[n][1] / 2**20:>16.0f}")
    first = min((n for n in marks if n >= 10), default=None)
    last = max(marks)
    if first is not None and last > first:
        growth = (marks[last][0] - marks[first][0]) / (last - first)
        print(f"driver growth from trial {first} to {last}: {growth / 2**20:+.2f} MB per trial")
    print(f"peak driver RSS {max(s[1] for s in samples) / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
