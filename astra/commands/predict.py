"""Run a trained model over a split: per-position outputs, detections, a submission.

Writes, under --out (a folder holds one split's prediction; another split there is refused
unless --overwrite):
  per_position/<game>/per_position.npz       scores [frames at 2 fps, 17] per half, float16 (before NMS)
  predictions/<game>/results_spotting.json   the official format, after Soft-NMS
  predictions.zip                            the same tree, zipped (a challenge submission)
  prediction.json                            the split, its games, the checkpoint, the NMS windows

Then score it:  astra evaluate --labels DATA --predictions OUT/predictions.zip --split test
"""

from __future__ import annotations

import argparse

from astra.commands.arguments import add_data_arguments, data_roots

HELP = "predict a split with a checkpoint: per-position outputs, results_spotting.json, zip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a best.pt or last.pt written by astra train (with train.ema_decay: the weight average)",
    )
    add_data_arguments(parser)
    parser.add_argument("--split", required=True, help="split to predict (test, challenge, valid, ...)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--windows",
        metavar="WINDOWS_YAML",
        help="per-class Soft-NMS windows (from astra search-windows) instead of the checkpoint's",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a prediction of another split")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("overrides", nargs="*", metavar="inference.key=value", help="inference overrides")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from astra.config import parse_overrides
    from astra.data.dataset import load_split
    from astra.inference import load_for_inference, predict_games
    from astra.prediction import check_target, write_prediction
    from astra.progress import progress

    torch.set_flush_denormal(True)  # as in training: denormal attention weights are slow on the CPU
    check_target(Path(args.out), args.split, overwrite=args.overwrite)  # before any work
    updates = parse_overrides(args.overrides)
    if args.windows:
        from astra.search.windows import read_windows

        updates["inference.nms_windows_seconds"] = list(read_windows(args.windows))
    model, config = load_for_inference(args.checkpoint, inference=updates, device=args.device)
    halves = load_split(
        data_roots(args, config.data), args.split, with_audio=config.model.use_audio, require_labels=False
    )
    device = next(model.parameters()).device
    games = progress(
        predict_games(model, halves, config, device=device, batch_size=args.batch_size),
        desc="predict",
        unit="game",
        total=len(halves) // 2,
    )
    prediction = write_prediction(
        args.out,
        args.split,
        games,
        config.inference,
        source={"checkpoint": str(Path(args.checkpoint).resolve())},
        overwrite=args.overwrite,
    )
    print(f"{len(prediction.games)} games of split {args.split!r} -> {prediction.zip_path}")
    return 0
