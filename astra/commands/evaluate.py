"""Score predictions with the official SoccerNet-v2 average-mAP (same values, much faster).

Reads ``<labels>/<game>/Labels-v2.json`` and ``<game>/results_spotting.json`` from a
predictions folder or a challenge zip. Games: those of --split (from
``<labels>/splits.json`` or the official lists), else every game with a label file.

Several metrics (--metric tight,loose) read the files once and score each in turn.

Output: a table per metric (in the order given, a blank line between them), or with
--json one line of JSON, the last line printed:
  one metric:      the official evaluator's six keys,
                   {"a_mAP": ..., "a_mAP_per_class": [17 values], "a_mAP_visible": ...,
                    "a_mAP_per_class_visible": [...], "a_mAP_unshown": ...,
                    "a_mAP_per_class_unshown": [...]}
  several metrics: one object keyed by metric name, in the order given, each holding
                   those six keys: {"tight": {"a_mAP": ...}, "loose": {"a_mAP": ...}}
Values are fractions (the table shows percent). Each metric's values equal those of
a run with that metric alone.

Examples:
  astra evaluate --labels data --predictions runs/demo/predictions.zip --split test
  astra evaluate --labels data --predictions out/ --metric loose --json
  astra evaluate --labels data --predictions out/ --metric tight,loose --json
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
        type=metric_list,
        default=("tight",),
        metavar="METRIC[,METRIC...]",
        help=(
            f"one or several of {', '.join(METRIC_NAMES)}, comma-separated: tolerances tight 1..5 s, "
            "loose 5..60 s, atN N s only; several are scored from one reading of the files "
            "(default: tight)"
        ),
    )
    parser.add_argument("--split", help="score the games of this split only (e.g. test, or valid+test)")
    parser.add_argument(
        "--json",
        action="store_true",
        help=(
            "print one JSON line instead of the table: the official evaluator's six keys, "
            "or with several metrics an object of them by metric name"
        ),
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


def metric_list(text: str) -> tuple[str, ...]:
    """``"tight,loose"`` -> ``("tight", "loose")``: known names, duplicates dropped, order kept."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in METRIC_NAMES:
            shown = f"unknown metric {name!r}" if name else "an empty metric name"
            raise argparse.ArgumentTypeError(
                f"{shown} in {text!r}; expected one or several of "
                f"{', '.join(METRIC_NAMES)}, comma-separated (e.g. tight,loose)"
            )
    return tuple(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    import json

    _import_numpy_with_one_blas_thread()
    from astra.evaluation.average_map import evaluate_files_metrics

    metrics = args.metric if isinstance(args.metric, tuple) else metric_list(args.metric)
    workers = args.workers or _idle_cores(limit=4)
    results = evaluate_files_metrics(
        args.labels,
        args.predictions,
        metrics,
        split=args.split,
        allow_missing=args.allow_missing,
        workers=workers,
    )
    if args.json:
        if len(results) == 1:
            print(json.dumps(results[0].to_dict()))
        else:
            print(json.dumps({name: result.to_dict() for name, result in zip(metrics, results, strict=True)}))
    else:
        print("\n\n".join(result.summary() for result in results))
    return 0


def _import_numpy_with_one_blas_thread() -> None:
    """Import numpy (when nothing has yet) with OpenBLAS limited to one thread.

    The evaluation does no linear algebra, but OpenBLAS starts a thread per core when
    numpy is loaded: on a busy 2-core machine that costs about 0.08 s of a 0.6 s
    evaluation (BENCHMARKS.md). OpenBLAS reads OPENBLAS_NUM_THREADS once, at load; the
    variable is put back as it was right after, so processes started later see the
    environment unchanged. A value set by the user is kept.
    """
    import os
    import sys

    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


def _idle_cores(limit: int) -> int:
    """CPU cores left idle by the machine's load (at least 1, at most ``limit``).

    Reading the JSON files is most of the time of an evaluation, and spreads well over
    processes; on a busy machine, extra processes only wait for each other.
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(limit, round(cores - load)))
