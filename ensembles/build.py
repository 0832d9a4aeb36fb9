"""Build an ensemble of a search's best diverse trials: average their per-position outputs.

Members are chosen on the validation split only: greedy forward selection with replacement
(Caruana et al. 2004; the default), or the top K by validation score (--selection top, the
baseline). The average's per-class Soft-NMS windows are searched on validation; valid and test
(and with --split challenge, the challenge submission) are written under --out with
ensemble.json, report.md and per_class.png. Test figures are reported, never used to choose.

Examples:
  python ensembles/build.py --experiment runs/search/smoke --top 4
  python ensembles/build.py --experiment runs/search/small --top 4 --split challenge
  python ensembles/build.py --experiment runs/search/small --top 4 --selection top --out runs/top4
  python ensembles/build.py --experiment runs/search/small --top 4 --split challenge --protocol p2
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from astra.processes import DEFAULT_MAX_WORKERS, positive_int, usable_cpus

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiment", required=True, help="a search's experiment folder (run_search.py --experiment)"
    )
    parser.add_argument("--top", type=int, default=4, help="members at most (default 4)")
    parser.add_argument(
        "--selection", choices=("greedy", "top"), default="greedy",
        help="greedy forward selection on valid (default), or the top K by valid score",
    )  # fmt: skip
    parser.add_argument(
        "--pool", type=int, default=10, help="candidates: the best N finished trials (default 10)"
    )
    parser.add_argument(
        "--init", type=int, default=3,
        help="greedy's sorted initialisation: the best of the averages of the 1..N best trials (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "--bags", type=int, default=1, help="bagged greedy selection over N random halves of the pool"
    )
    parser.add_argument(
        "--split", choices=("challenge",),
        help="also write the challenge submission (members without challenge outputs are predicted first)",
    )  # fmt: skip
    parser.add_argument(
        "--protocol", choices=("p1", "p2"), default="p1",
        help="p1 (default): the members as the search trained them; p2: each member retrained on "
        "train+valid+test for the epochs its trial chose, on Ray, before it predicts the challenge split "
        "(needs --split challenge)",
    )  # fmt: skip
    parser.add_argument("--out", help="output folder (default EXPERIMENT/ensembles/<selection>-top<K>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bags and the window search")
    parser.add_argument(
        "--workers", type=positive_int, default=None, metavar="N",
        help="processes for the window search, the scoring of candidate averages and the decoding "
        f"of predictions (default: the CPUs this process may use, at most {DEFAULT_MAX_WORKERS}; "
        "the results are the same for any N)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    args = parser.parse_args(argv)
    # After the arguments, so that --help answers wherever the script is run from.
    from astra.ensemble.build import EnsembleError, EnsembleOptions, build_ensemble

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    options = EnsembleOptions(
        experiment=args.experiment, top=args.top, selection=args.selection, pool=args.pool, init=args.init,
        bags=args.bags, split=args.split, out=args.out, seed=args.seed, protocol=args.protocol,
        workers=usable_cpus() if args.workers is None else args.workers,
    )  # fmt: skip
    try:
        record = build_ensemble(options)
    except (EnsembleError, ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print(record)
    return 0


def _print(record: dict) -> None:
    scores = record["scores"]
    valid, test = list(scores)
    members = ", ".join(f"{trial} x{weight}" for trial, weight in record["members"].items())
    print(f"\nensemble ({record['selection']}): {members}")
    for windows in ("searched", "paper"):
        s = scores[test][windows]
        print(
            f"  {windows:>8} windows: valid tight {scores[valid][windows]['tight']:.4f}; "
            f"{test} tight {s['tight']:.4f}, loose {s['loose']:.4f}, visible {s['visible']:.4f}, "
            f"not shown {s['unshown']:.4f}"
        )
    challenge = record.get("challenge")
    if challenge:
        retrained = (
            " (members retrained under P2 on train+valid+test)" if challenge.get("protocol") == "p2" else ""
        )
        print(f"  challenge submission {challenge['submission']}{retrained}")
        if challenge.get("withheld_labels"):
            known = challenge["withheld_labels"]
            print(f"  what the challenge server would say (withheld labels): tight {known['tight']:.4f}")
    print(f"report   {record['out']}/report.md")


if __name__ == "__main__":
    sys.exit(main())
