"""Seconds per training epoch of `fit` (training and validation), one checkout against another.

What a CPU trial of a local search runs: `astra.training.loop.fit` on the small preset
(configs/small.yaml) and the simulator's default dataset (`astra synth` defaults, written once
into the cache as `run_search.py` does). Each side runs in a process of its own from its own
checkout (its own code and its own configs/small.yaml): the baseline a commit exported with
`git archive` (default HEAD), the candidate another (`--candidate`) or the working tree as it is
(uncommitted changes included, whoever made them). The processes alternate (baseline
first in odd rounds, last in even ones) and run one at a time, so both see the machine alike.
Each trains `--epochs` epochs of the configured 60-epoch schedule (then stops) and reports each
epoch's seconds as `fit` measures them (its `epoch_seconds`: the training steps and the
validation), and the wall time from the start of `fit` to the end of the last timed epoch.

  .venv/bin/python benchmarks/epoch_speed.py --rounds 5            # one thread per run, as search trials
  .venv/bin/python benchmarks/epoch_speed.py --baseline d45bb6e --candidate HEAD --rounds 3 --epochs 2
  .venv/bin/python benchmarks/epoch_speed.py --rounds 3 train.reuse_host_memory=false  # candidate's overrides

Each side also prints its epochs' training loss and validation a-mAP: switches that change only
the speed leave them equal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in each side's process, from its checkout: argv = data root, epochs, config file, overrides...
CHILD = r"""
import json, sys, tempfile, time
import torch
from astra.config import load_config
from astra.data.dataset import DataRoots
from astra.training.loop import fit

class Done(Exception):
    pass

data, epochs, threads, config_file, *overrides = sys.argv[1:]
config = load_config([config_file], overrides)
epochs = int(epochs)
torch.set_num_threads(int(threads))  # as a search trial sets it (its cpus_per_worker)
seen = []
started = time.perf_counter()

def reporter(metrics, _):
    seen.append({key: float(metrics[key]) for key in ("epoch_seconds", "train_loss", "valid_tight_a_map")})
    if len(seen) == epochs:
        raise Done

with tempfile.TemporaryDirectory() as out:
    try:
        fit(config, DataRoots.single(data), out, reporter=reporter, progress=False)
    except Done:
        pass
wall = time.perf_counter() - started
print("RESULT " + json.dumps({"epochs": seen, "wall": wall, "threads": torch.get_num_threads(),
                              "torch": torch.__version__}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", default="HEAD", help="the commit to compare with (default: HEAD)")
    parser.add_argument("--candidate", help="the commit to measure against it (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one run per side (default 3)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed per run (default 1)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads of each run (default 1: what the shipped search spaces give a trial, "
        "cpus_per_worker: 1)",
    )  # fmt: skip
    parser.add_argument("--config", default="configs/small.yaml", help="preset, relative to each checkout")
    parser.add_argument(
        "--data", help="dataset root (default: the simulator's default dataset, as run_search.py)"
    )
    parser.add_argument(
        "--baseline-override", action="append", default=[], metavar="section.key=value",
        help="config overrides of the baseline side (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="overrides of the candidate side"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.epochs < 1:
        parser.error("--rounds and --epochs must be >= 1")

    if args.data:
        data = Path(args.data)
    else:
        sys.path.insert(0, str(ROOT))
        from astra.search.run import default_data

        data = default_data()
    commit = _short(args.baseline)
    with tempfile.TemporaryDirectory(prefix="epoch-speed-") as scratch:
        baseline = _export(commit, Path(scratch) / "baseline")
        if args.candidate:
            candidate_commit = _short(args.candidate)
            candidate, candidate_name = (
                _export(candidate_commit, Path(scratch) / "candidate"),
                candidate_commit,
            )
        else:
            dirty = subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            candidate, candidate_name = ROOT, "working tree" + (" (uncommitted changes)" if dirty else "")
        sides = {
            f"baseline {commit}": (baseline, args.baseline_override),
            f"candidate {candidate_name}": (candidate, args.overrides),
        }
        print(
            f"{args.config} on {data}, {args.epochs} epoch(s) per run, {args.rounds} round(s), "
            f"{args.threads} thread(s), {os.cpu_count()} CPUs, load average {_load()} at the start"
        )
        results: dict[str, list[dict]] = {name: [] for name in sides}
        names = list(sides)
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                checkout, overrides = sides[name]
                result = _run(checkout, data, args.epochs, args.threads, args.config, overrides)
                results[name].append(result)
                seconds = " ".join(f"{e['epoch_seconds']:6.2f}" for e in result["epochs"])
                where = f"{result['threads']} thread(s), torch {result['torch']}, load {_load()}"
                print(
                    f"round {round_ + 1} {name:>26}: epoch seconds {seconds}   wall {result['wall']:6.2f} s  "
                    f"({where})",
                    flush=True,
                )
    print()
    for name in names:
        epochs = results[name][0]["epochs"]
        losses = ", ".join(f"{e['train_loss']:.6f}" for e in epochs)
        scores = ", ".join(f"{e['valid_tight_a_map']:.6f}" for e in epochs)
        print(f"{name:>26}: train loss {losses}; valid tight a-mAP {scores} (round 1, by epoch)")
    for epoch in range(args.epochs):
        base, cand = (
            statistics.median(r["epochs"][epoch]["epoch_seconds"] for r in results[n]) for n in names
        )
        print(
            f"epoch {epoch + 1}: median {base:.2f} s (baseline), {cand:.2f} s (candidate), "
            f"ratio {base / cand:.2f}x"
        )
    per_round = []
    for index in range(args.rounds):
        base, cand = (sum(e["epoch_seconds"] for e in results[n][index]["epochs"]) for n in names)
        per_round.append(base / cand)
    totals = [
        statistics.median(sum(e["epoch_seconds"] for e in r["epochs"]) for r in results[n]) for n in names
    ]
    print(
        f"per-round ratio baseline / candidate, all timed epochs: {' '.join(f'{r:.2f}' for r in per_round)}"
    )
    print(
        f"median seconds per epoch: baseline {totals[0] / args.epochs:.2f}, candidate "
        f"{totals[1] / args.epochs:.2f}; ratio {totals[0] / totals[1]:.2f}x "
        f"(per round {min(per_round):.2f}x to {max(per_round):.2f}x)"
    )


def _load() -> str:
    """The 1-minute load average (``?`` where /proc has none)."""
    path = Path("/proc/loadavg")
    return path.read_text().split()[0] if path.exists() else "?"


def _short(revision: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", revision], check=True, capture_output=True, text=True
    ).stdout.strip()


def _export(commit: str, target: Path) -> Path:
    """The files of ``commit`` under ``target`` (``git archive``: no checkout, no worktree)."""
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def _run(checkout: Path, data: Path, epochs: int, threads: int, config: str, overrides: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(threads)}
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), str(epochs), str(threads), config, *overrides],
        cwd=checkout, env=env, capture_output=True, text=True,
    )  # fmt: skip
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        sys.exit(f"the run in {checkout} failed:\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


if __name__ == "__main__":
    if shutil.which("git") is None:
        sys.exit("git is needed to export the baseline commit")
    main()
