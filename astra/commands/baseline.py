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

from astra.commands.arguments import add_data_arguments, data_roots
from astra.config import BaselineConfig, DataConfig
from astra.config_cli import add_config_arguments, config_from_arguments

HELP = "fit a ridge-regression baseline and write predictions for a split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, audio=False)
    parser.add_argument("--split", required=True, help="split to predict (test, challenge, ...)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results and predictions.zip")
    parser.add_argument("--train-split", default="train", help="split to fit on (default: train)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser.add_argument_group("ridge probe"), BaselineConfig)


def run(args: argparse.Namespace) -> int:
    from astra.baseline import run_baseline

    config = config_from_arguments(BaselineConfig, args)
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
