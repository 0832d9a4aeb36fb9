"""Predict a split with a simple baseline: a ridge-regression probe on the visual features.

Fits one closed-form ridge regression (numpy, no GPU) on the training split's
features, each second with its neighbours within --context-seconds, to a target
of 1 near events of each class; predicts per-second scores on --split, decodes
them with the paper's Soft-NMS windows and writes one results_spotting.json per
game under --out, plus --out/predictions.zip for a challenge submission. Games
of --split need no labels.

Example:
    astra baseline --data runs/demo/data --split test --out runs/demo/baseline
"""

from __future__ import annotations

import argparse
from pathlib import Path

from astra.baseline_config import BaselineConfig
from astra.commands.arguments import add_data_arguments, data_roots

HELP = "fit a ridge-regression baseline and write predictions for a split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, audio=False)
    parser.add_argument("--split", required=True, help="split to predict (test, challenge, ...)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results and predictions.zip")
    parser.add_argument("--train-split", default="train", help="split to fit on (default: train)")
    parser.add_argument(
        "--context-seconds",
        type=int,
        default=BaselineConfig.context_seconds,
        help="neighbouring seconds on each side joined to each second's features "
        f"(default: {BaselineConfig.context_seconds})",
    )
    parser.add_argument(
        "--projection-dim",
        type=int,
        default=BaselineConfig.projection_dim,
        help=f"random projection width for wider features (default: {BaselineConfig.projection_dim})",
    )
    parser.add_argument(
        "--ridge",
        type=float,
        default=BaselineConfig.ridge,
        help=f"ridge strength relative to the mean input variance (default: {BaselineConfig.ridge})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random projection (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from astra.baseline import run_baseline
    from astra.config import DataConfig

    config = BaselineConfig(
        context_seconds=args.context_seconds,
        projection_dim=args.projection_dim,
        ridge=args.ridge,
        seed=args.seed,
    )
    roots = data_roots(args, DataConfig())
    results = run_baseline(
        roots,
        args.split,
        args.out,
        train_split=args.train_split,
        config=config,
        progress=not args.no_progress,
    )
    print(f"{len(results)} games of split {args.split!r}: results and predictions.zip in {args.out}")
    return 0
