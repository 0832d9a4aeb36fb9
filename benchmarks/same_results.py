"""Whether commits give the same results: a short run of ``configs/small.yaml`` at each, compared bit for bit.

Each revision is exported with ``git archive`` into ``--work/<commit>`` and runs, from its own
tree, ``astra train --config configs/small.yaml`` (its own preset, ``--epochs`` epochs, seed 0,
the same threads) on the same data, then ``astra predict`` of the test split. The first
revision is the reference: for each other one the script prints whether ``best.pt``'s weights
and the test split's per-position outputs are identical, bit for bit (and the largest
difference where they are not). A refactor that claims to change no result passes it.

    python benchmarks/same_results.py REV REV [REV ...] [--data DIR] [--epochs 2] [--work DIR]

Without ``--data``: the simulator's default dataset (as ``run_search.py`` writes it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def run(revision: str, data: Path, work: Path, epochs: int) -> Path:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision], check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = work / commit
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    commands = [
        ["train", "--config", "configs/small.yaml", "--data", str(data), "--out", str(tree / "run"),
         f"train.epochs={epochs}", "train.warmup_epochs=1"],
        ["predict", "--checkpoint", str(tree / "run" / "checkpoints" / "best.pt"), "--data", str(data),
         "--split", "test", "--out", str(tree / "test")],
    ]  # fmt: skip
    for command in commands:
        with open(tree / f"{command[0]}.log", "w") as log:
            done = subprocess.run(
                [sys.executable, "-m", "astra", *command], cwd=tree, env=env, stdout=log, stderr=log
            )
        if done.returncode != 0:
            raise SystemExit(
                f"{revision}: astra {command[0]} failed (exit {done.returncode}); see {log.name}"
            )
    print(f"{revision} ({commit}): trained and predicted in {tree}")
    return tree


def weights(tree: Path) -> dict[str, torch.Tensor]:
    return torch.load(tree / "run" / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)[
        "model"
    ]


def outputs(tree: Path) -> dict[str, dict[str, np.ndarray]]:
    root = tree / "test" / "per_position"
    return {str(p.relative_to(root)): dict(np.load(p)) for p in sorted(root.rglob("*.npz"))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("revisions", nargs="+", help="git revisions; the first is the reference")
    parser.add_argument("--data", type=Path, help="dataset root (default: the simulator's default dataset)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each run (default 2)")
    parser.add_argument("--work", type=Path, default=Path("runs/same_results"), help="where the trees go")
    args = parser.parse_args()
    if len(args.revisions) < 2:
        parser.error("give two revisions or more")
    if args.data is None:
        from astra.search.run import default_data

        args.data = default_data()
    trees = [
        run(revision, args.data.resolve(), args.work.resolve(), args.epochs) for revision in args.revisions
    ]
    reference_weights, reference_outputs = weights(trees[0]), outputs(trees[0])
    for revision, tree in zip(args.revisions[1:], trees[1:], strict=True):
        other_weights, other_outputs = weights(tree), outputs(tree)
        same_keys = set(other_weights) == set(reference_weights)
        largest = max(
            (float((other_weights[k].double() - v.double()).abs().max()) for k, v in reference_weights.items()
             if k in other_weights and other_weights[k].shape == v.shape),
            default=float("nan"),
        )  # fmt: skip
        same_weights = same_keys and all(
            torch.equal(other_weights[k], v) for k, v in reference_weights.items()
        )
        same_outputs = other_outputs.keys() == reference_outputs.keys() and all(
            np.array_equal(other_outputs[game][half], array)
            for game, halves in reference_outputs.items()
            for half, array in halves.items()
        )
        print(
            f"{args.revisions[0]} against {revision}: best.pt weights identical: {same_weights} "
            f"(largest difference {largest:.3g}); test per-position outputs identical: {same_outputs} "
            f"({len(other_outputs)} games)"
        )


if __name__ == "__main__":
    main()
