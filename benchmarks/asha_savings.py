"""ASHA against running every trial to its last epoch: the same space, the same seed, one run each.

Runs the space twice on a local Ray, once as shipped (ASHA on) and once with ASHA off, each in
its own experiment folder under ``--out``. With the same seed the two studies propose the same
trials as long as Optuna's TPE is still in its random start-up phase (its first 10 trials; the
shipped smoke space runs 10), so the comparison is of the scheduler alone. Compute is counted in
epochs trained (each epoch is one pass over the training clips and one validation) and in wall
time. The best trial is chosen on validation; its test score is reported as it falls.

    python benchmarks/asha_savings.py [--space smoke] [--trials 10] [--out runs/bench-asha] [--data DIR]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]


def _space_copy(space: Path, asha: bool, out: Path) -> Path:
    """The space with ``asha.enabled`` set, its configs made absolute so that it can live elsewhere."""
    document = yaml.safe_load(space.read_text(encoding="utf-8"))
    document["configs"] = [str((space.parent / c).resolve()) for c in document.get("configs", [])]
    document["asha"] = {**document.get("asha", {}), "enabled": asha}
    path = out / f"{space.stem}-{'asha' if asha else 'fifo'}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--space", default="smoke", help="a shipped space name or a space file (default smoke)"
    )
    parser.add_argument("--trials", type=int, help="trials per run (default: the space's budget)")
    parser.add_argument("--out", default="runs/bench-asha", help="where both experiments go")
    parser.add_argument("--data", help="dataset root (default: the simulator's default dataset)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from astra.search.run import SearchOptions, run_search

    space = (
        Path(args.space) if args.space.endswith(".yaml") else REPO / "search_spaces" / f"{args.space}.yaml"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, asha in (("ASHA", True), ("no scheduler", False)):
        experiment = out / ("asha" if asha else "fifo")
        started = time.perf_counter()
        status = run_search(
            SearchOptions(
                space=str(_space_copy(space, asha, out)), data=args.data, experiment=str(experiment),
                trials=args.trials, seed=args.seed,
            )
        )  # fmt: skip
        if status != 0:
            raise SystemExit(f"the {name} search failed with status {status}")
        table = pl.read_parquet(experiment / "results.parquet")
        best = table.sort("best_valid_tight_a_map", descending=True, nulls_last=True).row(0, named=True)
        rows[name] = {
            "minutes": (time.perf_counter() - started) / 60,
            "epochs": int(table["epochs_run"].sum()),
            "trials": table.height,
            "finished": int((table["status"] == "finished").sum()),
            "best": best,
            "table": table,
        }
    print(f"\n{'run':<13} {'trials':>6} {'finished':>8} {'epochs':>6} {'minutes':>7} {'best valid':>10} "
          f"{'its test':>8} {'test, searched windows':>22}")  # fmt: skip
    for name, row in rows.items():
        best = row["best"]
        print(
            f"{name:<13} {row['trials']:>6} {row['finished']:>8} {row['epochs']:>6} {row['minutes']:>7.1f} "
            f"{best['best_valid_tight_a_map']:>10.4f} {best['test_tight_paper'] or float('nan'):>8.4f} "
            f"{best['test_tight_searched'] or float('nan'):>22.4f}"
        )
    asha, fifo = rows["ASHA"], rows["no scheduler"]
    gain = asha["best"]["best_valid_tight_a_map"] - fifo["best"]["best_valid_tight_a_map"]
    print(
        f"ASHA: {fifo['epochs'] / asha['epochs']:.2f}x fewer epochs, "
        f"{fifo['minutes'] / asha['minutes']:.2f}x less wall time; best valid {gain:+.4f}"
    )
    params = [c for c in asha["table"].columns if "." in c]  # the searched parameters, by dotted path
    proposed = [t.sort("number").select(params) for t in (asha["table"], fifo["table"])]
    print(
        "the two runs trained the same proposals" if proposed[0].equals(proposed[1])
        else "the two runs' proposals differ (TPE left its start-up phase): compare with care"
    )  # fmt: skip
    finals = fifo["table"]["best_valid_tight_a_map"].drop_nulls()
    print(
        f"valid scores of the {finals.len()} trials run to the end: {finals.min():.4f} to {finals.max():.4f} "
        f"(std {finals.std():.4f})"
    )


if __name__ == "__main__":
    main()
