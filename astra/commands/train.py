"""Train one ASTRA model.

Examples:
  astra train --config configs/small.yaml --data runs/demo/data --out runs/small
  astra train --config configs/astra_paper.yaml --data /data/SoccerNet --out runs/paper --workers 4 --gpu
  astra train --config configs/small.yaml --config configs/ablations/m4.yaml --data D --out O train.epochs=5

Later --config files override earlier ones; trailing section.key=value pairs override both.
A run resumes from OUT/checkpoints/last.pt when it exists; a folder that holds another run
(another config, other data or splits) is refused unless --restart. Metrics go to the
console and to OUT/tensorboard (tensorboard --logdir OUT).
"""

from __future__ import annotations

import argparse

from astra.commands.arguments import add_data_arguments, data_roots

HELP = "train a model (plain, or on Ray Train workers with --workers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)"
    )
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="run folder: checkpoints, config.yaml, tensorboard")
    parser.add_argument("--seed", type=int, help="random seed (same as train.seed=S)")
    parser.add_argument(
        "--restart", action="store_true", help="delete the checkpoints in --out and start the run over"
    )
    parser.add_argument(
        "--workers", type=int, default=0,
        help="Ray Train workers (DDP); 0 runs in this process without Ray (default)",
    )  # fmt: skip
    parser.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker")
    parser.add_argument("--name", default="astra", help="Ray Train run name; the same name resumes")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    from astra.config import load_config

    overrides = list(args.overrides) + ([f"train.seed={args.seed}"] if args.seed is not None else [])
    config = load_config(args.config, overrides)
    roots = data_roots(args, config.data)
    if args.workers > 0:
        from astra.training.loop import load_training_data
        from astra.training.ray_train import connect_ray, train_with_ray
        from astra.training.run_folder import RunFolder

        # As fit does in one process: the folder is checked, then the data, and only then does the
        # folder become this run's (run.json written, or with --restart the earlier run deleted);
        # all of it before Ray starts.
        folder = RunFolder(args.out)
        folder.check(config, roots, restart=args.restart)
        load_training_data(config, roots)
        folder.record(config, roots, restart=args.restart)
        connect_ray()
        result = train_with_ray(
            config, roots, args.out, num_workers=args.workers, use_gpu=args.gpu, name=args.name
        )
        print(f"best valid tight a-mAP: {result.metrics.get('best_valid_tight_a_map')}")
        return 0
    from astra.training.loop import fit

    result = fit(config, roots, args.out, restart=args.restart)
    print(
        f"best valid tight a-mAP {result.best_valid_tight_a_map:.4f} at epoch {result.best_epoch} "
        f"({result.epochs_run} epochs); checkpoints in {result.checkpoint_dir}"
    )
    return 0
