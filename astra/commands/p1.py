"""Protocol P1: train every configuration with seeds 0..S-1 and report mean ± std over the seeds.

Each run keeps its best validated epoch (valid tight a-mAP) and is scored on test as it falls,
with the paper's Soft-NMS windows, as the paper reports its ablations (docs/protocols.md). The
(row, seed) runs are Ray Tune trials: on a cluster they run in parallel, on one machine they
share it, each holding the CPUs (and with --gpu the GPU) of one run.

Rows: the --config files (later ones override earlier ones) and the trailing section.key=value
settings make the base row; each --ablations file is one more row, the base plus that file
(named by the file's name). Every row is compared with the base.

Examples:
  astra p1 --config configs/small.yaml --data data --out runs/p1-small --seeds 5
  astra p1 --config configs/astra_paper.yaml --ablations configs/ablations/m3.yaml \\
      configs/ablations/m4.yaml --data /data/SoccerNet --out runs/p1 --gpu
  astra p1 --config configs/small.yaml --data data --out runs/p1 --seeds 3 train.epochs=10

Writes OUT/runs/<row>/seed<k>/ (the run folder of astra train under run/, the valid and test
predictions of best.pt, result.json), OUT/p1.parquet, OUT/report.md and OUT/plots/. Running the
same command again keeps what is done: finished runs are not trained again, a run cut short
resumes from its last.pt, a raised --seeds or a new --ablations file trains only what it adds.
An OUT that holds other configurations or other data is refused, naming what differs.
Exits 0 when every run finished, 1 when some failed (the report names them), 2 on bad input.
"""

from __future__ import annotations

import argparse

from astra.commands.arguments import add_data_arguments

HELP = "protocol P1: every configuration over several seeds, mean ± std and paired comparisons"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE",
        help="YAML config of the base row (repeatable; later files override earlier ones)",
    )  # fmt: skip
    parser.add_argument(
        "--ablations", action="extend", nargs="+", default=[], metavar="FILE",
        help="one more row per file: the base plus that file, named by the file's name (repeatable; "
        "settings given right after the files need a -- before them)",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=int, default=5, help="seeds per row, 0 to SEEDS - 1 (train.seed; default 5)"
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--out", required=True,
        help="output folder: runs/, p1.parquet, report.md, plots/; the same OUT resumes",
    )  # fmt: skip
    parser.add_argument("--name", default="base", help="name of the base row (default base)")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="workers per run: 1 trains in the trial's own process (default), N > 1 on N Ray Train "
        "workers (DDP)",
    )  # fmt: skip
    parser.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs each worker of a run holds (default 1)"
    )
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker of a run")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, metavar="RESAMPLES",
        help="resamples of the test games for the 95%% intervals (default 1000)",
    )  # fmt: skip
    parser.add_argument(
        "--bootstrap-seed", type=int, default=0, help="seed that draws the resamples (default 0)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="section.key=value",
        help="settings of every row (after the config files; train.seed is P1's own)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from astra.protocols.p1 import Bootstrap, Resources, make_plan, run_p1

    # The data roots are built as every command's (DataRoots.from_config), with the base's file names.
    plan = make_plan(
        configs=args.config, ablations=args.ablations, seeds=args.seeds, data=args.data, out=args.out,
        overrides=args.overrides, features_root=args.features_root, audio_root=args.audio_root,
        base_name=args.name,
        resources=Resources(workers=args.workers, cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu),
        bootstrap=Bootstrap(resamples=args.bootstrap, seed=args.bootstrap_seed),
    )  # fmt: skip
    return run_p1(plan)
