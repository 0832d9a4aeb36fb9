"""Run a trained model over a split: per-position outputs, detections, a submission.

Writes, under --out:
  per_position/<game>/per_position.npz   scores [frames at 2 fps, 17] per half, float16 (before NMS)
  predictions/<game>/results_spotting.json   the official format, after Soft-NMS
  predictions.zip                             the same tree, zipped (a challenge submission)

Then score it:  astra evaluate --labels DATA --predictions OUT/predictions.zip --split test
"""

from __future__ import annotations

import argparse

HELP = "predict a split with a checkpoint: per-position outputs, results_spotting.json, zip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a best.pt or last.pt written by astra train (with train.ema_decay: the weight average)",
    )
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--split", required=True, help="split to predict (test, challenge, valid, ...)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("overrides", nargs="*", metavar="inference.key=value", help="inference overrides")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from astra import per_position
    from astra.config import config_from_dict, replace
    from astra.data.dataset import DataRoots, load_split
    from astra.inference import detect, group_by_game, predict_half
    from astra.model import build_model
    from astra.postprocess.nms import detections_to_spots
    from astra.submission import Spots, write_submission
    from astra.training import checkpoint

    torch.set_flush_denormal(True)  # as in training: denormal attention weights are slow on the CPU
    saved = checkpoint.load(args.checkpoint)
    config = config_from_dict(saved["config"])
    updates = {}
    for override in args.overrides:
        key, _, value = override.partition("=")
        if not key.startswith("inference."):
            raise ValueError(
                f"override {override!r}: only inference.* settings can change at prediction time"
            )
        import yaml

        updates[key] = yaml.safe_load(value)
    config = replace(config, updates)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(config.model, config.clips, load_pretrained=False)  # the checkpoint holds them
    model.load_state_dict(checkpoint.inference_weights(saved))  # the weight average if the run kept one
    model.to(device).eval()

    roots = DataRoots.single(
        args.data, features_pattern=config.data.features_filename, audio_pattern=config.data.audio_filename
    )
    halves = load_split(roots, args.split, with_audio=config.model.use_audio, require_labels=False)
    out = Path(args.out)
    results: dict[str, Spots] = {}
    for game, game_halves in tqdm(group_by_game(halves).items(), desc="predict", unit="game"):
        outputs = {
            h.half: predict_half(
                model, h, config.clips, config.inference, with_audio=config.model.use_audio,
                device=device, batch_size=args.batch_size,
            )
            for h in game_halves
        }  # fmt: skip
        per_position.write_game(out / "per_position", game, outputs)
        results[game] = Spots.concatenate(
            [detections_to_spots(detect(scores, config.inference), half) for half, scores in outputs.items()]
        )
    write_submission(out / "predictions", results, zip_path=out / "predictions.zip")
    print(f"{len(results)} games -> {out / 'predictions.zip'}")
    return 0
