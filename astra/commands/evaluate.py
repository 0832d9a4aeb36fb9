"""Score predictions with the official SoccerNet-v2 average-mAP (same values, much faster).

Reads ``<labels>/<game>/Labels-v2.json`` and ``<game>/results_spotting.json`` from a
predictions folder or a challenge zip. Games: those of --split (from
``<labels>/splits.json`` or the official lists), else every game with a label file.

Examples:
  astra evaluate --labels data --predictions runs/demo/predictions.zip --split test
  astra evaluate --labels data --predictions out/ --metric loose --json
"""

from __future__ import annotations

import argparse

HELP = "score predictions (folder or zip) with the official SoccerNet-v2 average-mAP"

# Metric names as the official evaluator has them; kept here so that --help needs no numpy.
METRIC_NAMES: tuple[str, ...] = ("tight", "loose", "at1", "at2", "at3", "at4", "at5")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", required=True, help="root of the <game>/Labels-v2.json files")
    parser.add_argument(
        "--predictions", required=True, help="folder of <game>/results_spotting.json, or a zip of that tree"
    )
    parser.add_argument(
        "--metric",
        choices=METRIC_NAMES,
        default="tight",
        help="tolerances: tight 1..5 s, loose 5..60 s, atN N s only (default: tight)",
    )
    parser.add_argument("--split", help="score the games of this split only (e.g. test, or valid+test)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line with the official evaluator's six keys instead of the table",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score a game without a predictions file as one without predictions (default: error)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that read the files (default 0: one per idle CPU core, at most 4)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from astra.evaluation.average_map import evaluate_files

    workers = args.workers or _idle_cores(limit=4)
    result = evaluate_files(
        args.labels,
        args.predictions,
        split=args.split,
        metric=args.metric,
        allow_missing=args.allow_missing,
        workers=workers,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
    return 0


def _idle_cores(limit: int) -> int:
    """CPU cores left idle by the machine's load (at least 1, at most ``limit``).

    Reading the JSON files is most of the time of an evaluation, and spreads well over
    processes; on a busy machine, extra processes only wait for each other.
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(limit, round(cores - load)))
