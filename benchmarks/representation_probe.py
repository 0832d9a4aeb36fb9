"""How much of the class evidence survives each stage of a model: ridge probes on its internals.

The model runs over each half in back-to-back clips; per second, the outputs of a stage
(the PFFNs, the encoder, the decoder) are the features of the ridge probe of `astra
baseline` (+-2 s of context, fitted on the training split), and the probe's predictions
on --split are scored like a model's (Soft-NMS, tight Average-mAP). The raw features
give the reference: a stage that scores far below it has thrown evidence away.

  .venv/bin/python benchmarks/representation_probe.py --checkpoint runs/s0/checkpoints/best.pt --data data
  .venv/bin/python benchmarks/representation_probe.py --config configs/small.yaml --data data  # untrained

Visual-only models (model.use_audio=false).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from astra.baseline import BaselineConfig, fit_probe, predict_spots
from astra.config import config_from_dict, load_config
from astra.data.dataset import DataRoots, Half, load_split
from astra.data.labels import LABELS_FILENAME, read_labels
from astra.evaluation.average_map import evaluate_spots
from astra.model import build_model
from astra.training import checkpoint

STAGES = ("features", "pffn", "encoder", "decoder")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a trained model (best.pt or last.pt)")
    source.add_argument("--config", action="append", help="an untrained model of these config files")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--split", default="valid", help="split to score (default: valid)")
    parser.add_argument("--ridge", type=float, default=BaselineConfig.ridge, help="probe ridge strength")
    args = parser.parse_args()

    if args.checkpoint:
        saved = checkpoint.load(args.checkpoint)
        config = config_from_dict(saved["config"])
        model = build_model(config.model, config.clips, load_pretrained=False)
        model.load_state_dict(checkpoint.inference_weights(saved))
    else:
        config = load_config(args.config, ["model.use_audio=false"])
        torch.manual_seed(0)
        model = build_model(config.model, config.clips, load_pretrained=False)
    roots = DataRoots.single(
        args.data, features_pattern=config.data.features_filename, audio_pattern=config.data.audio_filename
    )
    train = load_split(roots, config.data.train_split, with_audio=False, require_labels=True, progress=False)
    scored = load_split(roots, args.split, with_audio=False, require_labels=True, progress=False)
    if not args.checkpoint and model.visual_whitening is not None:
        model.visual_whitening.fit_features([h.features for h in train])
    if model.use_audio:
        parser.error("visual-only models only (model.use_audio=false)")
    model.eval()

    stages = {id(half): _stages(model, half, config.clips.clip_seconds) for half in train + scored}
    labels = {game: read_labels(roots.labels / game / LABELS_FILENAME) for game in {h.game for h in scored}}
    probe_config = BaselineConfig(context_seconds=2, ridge=args.ridge)
    print(f"split {args.split}, ridge probe on +-2 s, tight Average-mAP per stage:")
    for stage in STAGES:

        def view(halves: list[Half], stage: str = stage) -> list[Half]:
            return [replace(h, features=stages[id(h)][stage]) for h in halves]

        probe = fit_probe(view(train), probe_config)
        result = evaluate_spots(labels, predict_spots(probe, view(scored)), "tight")
        print(f"{stage:>9}: {result.a_mAP:.4f}  ({stages[id(train[0])][stage].shape[1]} per second)")


def _stages(model: torch.nn.Module, half: Half, clip_seconds: int) -> dict[str, np.ndarray]:
    """Per second of ``half``: the raw features and the outputs of each stage, from back-to-back clips."""
    features = np.asarray(half.features, dtype=np.float32)
    seconds = features.shape[0]
    if seconds < clip_seconds:
        raise SystemExit(f"{half.features_path}: {seconds} s, shorter than a clip of {clip_seconds} s")
    starts = list(range(0, seconds - clip_seconds + 1, clip_seconds))
    if starts[-1] + clip_seconds < seconds:
        starts.append(seconds - clip_seconds)
    grabbed: dict[str, torch.Tensor] = {}
    hooks = [
        model.encoder.register_forward_hook(lambda _m, _i, out: grabbed.__setitem__("encoder", out)),
        model.decoder.register_forward_hook(lambda _m, _i, out: grabbed.__setitem__("decoder", out)),
        *(
            pffn.register_forward_hook(lambda _m, _i, out, j=j: grabbed.__setitem__(f"pffn{j}", out))
            for j, pffn in enumerate(model.visual_pffns)
        ),
    ]
    out: dict[str, np.ndarray] = {"features": features}
    try:
        with torch.no_grad():
            for start in starts:
                model(torch.from_numpy(features[start : start + clip_seconds].copy())[None])
                rows = {
                    "pffn": torch.cat([grabbed[f"pffn{j}"][0] for j in range(len(model.visual_pffns))], -1),
                    # Visual tokens are time-major: second t holds tokens t * E .. t * E + E - 1.
                    "encoder": grabbed["encoder"][0, : clip_seconds * len(model.visual_pffns)].reshape(
                        clip_seconds, -1
                    ),
                    "decoder": grabbed["decoder"][0].reshape(clip_seconds, -1),  # the outputs of a second
                }
                for stage, value in rows.items():
                    out.setdefault(stage, np.zeros((seconds, value.shape[1]), np.float32))
                    out[stage][start : start + clip_seconds] = value.numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return out


if __name__ == "__main__":
    main()
