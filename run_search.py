"""Search the training configuration and the Soft-NMS windows of ASTRA with Ray Tune, Optuna and ASHA.

With no arguments: the smoke search (search_spaces/smoke.yaml) on the simulator's default dataset
(written once into a cache folder), on a local Ray. On a cluster: `ray submit cluster/gpu.yaml
run_search.py -- --space paper --data /shared/soccernet --experiment /shared/searches/paper`.
Everything it writes is under --experiment (default runs/search/<space>); re-running with the
same folder continues the search.
See search_spaces/README.md for the space files.
"""

from __future__ import annotations

import argparse
import logging
import sys

from astra.commands.arguments import parse_with_overrides
from astra.search.run import SearchOptions, run_search


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--space",
        default="smoke",
        help="a search space file, or the name of a shipped one (smoke, small, paper; default: smoke)",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        dest="configs",
        metavar="FILE",
        help="YAML config on top of the space's own configs (repeatable)",
    )
    parser.add_argument(
        "--data",
        help="dataset root (labels; features and audio too unless given apart); "
        "default: the simulator's default dataset",
    )
    parser.add_argument("--features-root", help="visual features root, if not under --data")
    parser.add_argument("--audio-root", help="audio root, if not under --data")
    parser.add_argument(
        "--experiment", help="experiment folder (default: runs/search/<space name>), or s3://bucket/path"
    )
    parser.add_argument("--trials", type=int, help="trials in all (default: the space's budget)")
    parser.add_argument("--concurrent", type=int, help="trials at a time (default: the space's budget)")
    parser.add_argument(
        "--storage",
        help="Optuna storage: a journal file path (safe on NFS) or a database "
        "URL (sqlite:///..., postgresql://...); default: EXPERIMENT/study.db",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the search in --experiment (re-running with the same folder does "
        "the same; this flag insists one is there)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the sampler and of every trial (default 0)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the space, configs and resources, print what would run, run nothing",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="rebuild results.parquet, summary.md and the plots of --experiment from what is on disk",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="settings of every trial, on top of the configs",
    )
    args = parse_with_overrides(parser, argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    options = SearchOptions(**{k: v for k, v in vars(args).items() if k != "verbose"})
    if args.report and not args.experiment:
        parser.error("--report needs --experiment")
    try:
        return run_search(options)
    except (ValueError, FileNotFoundError) as error:  # ours name the file or key: no traceback
        if args.verbose:
            raise
        print(f"run_search.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
