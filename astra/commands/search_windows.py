"""Search the per-class Soft-NMS windows on a split's per-position outputs (a validation split).

Each class's AP depends only on its own window, so each class is searched alone: a seeded
Optuna study per class (--method optuna, the default) or every --step seconds (--method grid).
The NMS, its threshold and the starting windows are the inference settings of --config (give
the run's own config.yaml, so that the search decodes as `astra predict` of that run will) and of
inference.key=value overrides; the paper's without. Writes the windows and what they score, per
class, to --out; `astra predict --windows FILE` then uses them.

Example:
  astra search-windows --per-position runs/s0/valid/per_position --labels data --split valid \\
      --config runs/s0/config.yaml --out runs/s0/windows.yaml
"""

from __future__ import annotations

import argparse

HELP = "search per-class Soft-NMS windows on validation per-position outputs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from astra.processes import DEFAULT_MAX_WORKERS, positive_int

    parser.add_argument(
        "--per-position", required=True, help="a per_position/ folder written by astra predict"
    )
    parser.add_argument("--labels", required=True, help="root of the <game>/Labels-v2.json files")
    parser.add_argument("--split", required=True, help="the split the outputs are of (valid; never test)")
    parser.add_argument("--out", required=True, help="windows YAML to write")
    parser.add_argument("--metric", choices=("tight", "loose"), default="tight", help="what to maximise")
    parser.add_argument("--method", choices=("optuna", "grid"), default="optuna", help="search per class")
    parser.add_argument("--trials", type=int, default=40, help="Optuna evaluations per class (default 40)")
    parser.add_argument("--low", type=float, default=1.0, help="narrowest window, seconds (default 1)")
    parser.add_argument("--high", type=float, default=40.0, help="widest window, seconds (default 40)")
    parser.add_argument("--step", type=float, default=0.5, help="grid step, seconds (default 0.5)")
    parser.add_argument(
        "--nms", choices=("soft", "hard"), help="the NMS (default: the config's, soft unless changed)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the Optuna samplers")
    parser.add_argument(
        "--workers", type=positive_int, default=None, metavar="N",
        help=f"processes, classes shared among them (default: the CPUs this process may use, at most "
        f"{DEFAULT_MAX_WORKERS}; the windows are the same for any N)",
    )  # fmt: skip
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE",
        help="YAML config (repeatable; a run's config.yaml): its inference.* settings decode the outputs",
    )  # fmt: skip
    parser.add_argument(
        "overrides", nargs="*", metavar="inference.key=value", help="inference settings after --config"
    )


def run(args: argparse.Namespace) -> int:
    from astra.classes import CLASSES
    from astra.config import ConfigError, load_config
    from astra.files import check_output_file
    from astra.processes import usable_cpus
    from astra.search.windows import read_split_outputs, search_windows, write_windows

    check_output_file(args.out)  # before the search: a folder, under a file, or not writable
    foreign = [o for o in args.overrides if not o.startswith("inference.")]
    if foreign:
        raise ConfigError(f"{foreign[0]}: only inference.* settings decode per-position outputs")
    nms = [f"inference.nms={args.nms}"] if args.nms else []
    inference = load_config(args.config, [*args.overrides, *nms]).inference
    labels, outputs = read_split_outputs(args.per_position, args.labels, args.split)
    search = search_windows(
        labels, outputs, inference, metric=args.metric, method=args.method,
        trials_per_class=args.trials, low_seconds=args.low, high_seconds=args.high,
        step_seconds=args.step, seed=args.seed, split=args.split,
        workers=usable_cpus() if args.workers is None else args.workers,
    )  # fmt: skip
    write_windows(args.out, search)
    width = max(len(name) for name in CLASSES)
    print(f"{'class':<{width}}  window (s)  {args.metric} AP   start (s)  start AP")
    for c, name in enumerate(CLASSES):
        print(
            f"{name:<{width}}  {search.windows_seconds[c]:>10.2f}  {search.per_class_ap[c]:>8.4f}  "
            f"{search.start_windows_seconds[c]:>9.2f}  {search.start_per_class_ap[c]:>8.4f}"
        )
    print(
        f"{args.metric} a-mAP on {args.split}: {search.a_map:.4f} with the searched windows, "
        f"{search.start_a_map:.4f} with the starting ones ({search.evaluations} evaluations) -> {args.out}"
    )
    return 0
