"""Where a search trial's time goes, for both trial paths: in its own process, and under Ray Train.

One search of one trial per path (one worker with both CPUs; two DDP workers of 0.99 CPU
each, so that they and the trial's own process fit on 2 CPUs), on a fresh local Ray, with the
smoke space's settings (the small preset) and the simulator's default dataset: the same work a
trial of ``python run_search.py`` does, minus the parameters (the trial is the base config).
``--epochs`` epochs, no ASHA, windows searched. The figures come from what the search leaves on disk:

- training: the epochs' own seconds (training and validation, ``epoch_seconds`` of each report);
- before the first epoch, inside the trial: imports, data opening, whitening fit, model build
  (the trial's time at its first report minus that epoch's seconds);
- after the last epoch: prediction of valid and test with the best checkpoint, the window
  search, the scores (the trial's ``wall_seconds`` minus its time at the last report);
- Ray: everything else of the ``run_search`` call (Ray start and stop, actors and placement
  groups, Tune's bookkeeping, Ray Train's worker group for the second path).

    python benchmarks/trial_overhead.py [--epochs 3] [--paths process raytrain] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PATHS = {"process": {"workers": 1, "cpus_per_worker": 2}, "raytrain": {"workers": 2, "cpus_per_worker": 0.99}}


def measure(path: str, epochs: int, data: str | None, folder: Path) -> dict[str, float]:
    """Run one one-trial search on ``path``; returns the split of its wall time (seconds)."""
    from astra.search.run import SearchOptions, run_search

    smoke = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text(encoding="utf-8"))
    space = {
        "configs": [str(REPO / "configs" / "small.yaml")],
        "settings": {**smoke["settings"], "train.epochs": epochs, "train.patience_epochs": epochs},
        "parameters": {"train.base_learning_rate": smoke["parameters"]["train.base_learning_rate"]},
        "budget": {"trials": 1, "concurrent": 1},
        "asha": {"enabled": False},
        "resources": {**PATHS[path], "gpus_per_worker": 0},
        "windows": smoke["windows"],
        "start_from_base": True,
    }
    space_file = folder / f"{path}.yaml"
    space_file.write_text(yaml.safe_dump(space), encoding="utf-8")
    experiment = folder / path
    started = time.perf_counter()
    status = run_search(SearchOptions(space=str(space_file), data=data, experiment=str(experiment)))
    total = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"the {path} search failed with status {status}")
    (result_file,) = experiment.glob("trials/*/result.json")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    (reports_file,) = experiment.glob("tune/*/result.json")
    reports = [json.loads(line) for line in reports_file.read_text(encoding="utf-8").splitlines() if line]
    training = sum(r["epoch_seconds"] for r in reports)
    before = reports[0]["time_total_s"] - reports[0]["epoch_seconds"]
    after = result["wall_seconds"] - reports[-1]["time_total_s"]
    return {
        "total": total,
        "training": training,
        "before": before,
        "after": after,
        "ray": total - training - before - after,
        "epochs": len(reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the trial (default 3)")
    parser.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["process", "raytrain"])
    parser.add_argument("--data", help="dataset root (default: the simulator's default dataset)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="astra-overhead-") as folder:
        for path in args.paths:
            rows[path] = measure(path, args.epochs, args.data, Path(folder))
    print()
    columns = ("epochs", "total s", "training", "before", "after", "Ray", "overhead")
    print(f"{'path':<10}" + "".join(f" {c:>9}" for c in columns))
    for path, row in rows.items():
        overhead = row["before"] + row["ray"]
        figures = [row["total"], row["training"], row["before"], row["after"], row["ray"]]
        print(
            f"{path:<10} {row['epochs']:>9}" + "".join(f" {v:>9.1f}" for v in figures)
            + f" {overhead / row['training']:>9.0%}"
        )  # fmt: skip
    print("overhead: (before + Ray) / training; 'after' is the trial's prediction and window search")


if __name__ == "__main__":
    main()
