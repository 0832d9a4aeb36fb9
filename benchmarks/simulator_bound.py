"""How well can a simulated dataset be spotted at all? A detector that knows the simulator.

A learnt model can only approach what the features hold. This script scores, on one
split of a dataset written by ``astra synth``, a matched filter built from the
simulator's own signature bank (the class directions, onset and aftermath lags and
widths): per class and half-second, the features' projections on the class's onset and
aftermath directions, weighted by their temporal profiles, after the known slow
background and camera-shot directions are projected out. It is linear in the features
and learns nothing, so it is a reference point, not a ceiling: it ignores label jitter,
replays and the audio. Its scores go through the same Soft-NMS and evaluator as a
model's.

  .venv/bin/python benchmarks/simulator_bound.py --data runs/demo/data --split test

The dataset must come from ``astra synth`` with the same --seed, --feature-dims and
--backbone-spread as given here (the defaults are the simulator's): they shape the
signatures; the other knobs change only the data.
"""

from __future__ import annotations

import argparse

import numpy as np

from astra.classes import CLASSES, FRAMES_PER_SECOND, NUM_CLASSES, PAPER_SOFT_NMS_WINDOWS_SECONDS
from astra.data import simulator
from astra.data.dataset import DataRoots, Half, load_split
from astra.evaluation.average_map import evaluate_dense
from astra.inference import game_annotations, group_by_game, num_frames_of
from astra.postprocess.decode import detections_to_dense
from astra.postprocess.nms import soft_nms


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="dataset root written by astra synth")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0, help="the --seed given to astra synth")
    parser.add_argument(
        "--feature-dims",
        default=",".join(str(d) for d in simulator.SimulatorConfig().feature_dims),
        help="the --feature-dims given to astra synth",
    )
    parser.add_argument(
        "--backbone-spread",
        type=float,
        default=simulator.SimulatorConfig().backbone_spread,
        help="the --backbone-spread given to astra synth",
    )
    args = parser.parse_args()

    config = simulator.SimulatorConfig(
        seed=args.seed,
        feature_dims=tuple(int(d) for d in args.feature_dims.split(",")),
        backbone_spread=args.backbone_spread,
    )
    bank = simulator._signature_bank(config)
    # The slow background and the camera-shot looks span known directions, projected out of every half.
    nuisance, _ = np.linalg.qr(np.concatenate([bank.latent_projection, bank.scene_vectors]).T)
    halves = load_split(DataRoots.single(args.data), args.split, with_audio=False, require_labels=True)
    if halves and halves[0].feature_dim != config.feature_dim:
        parser.error(
            f"{halves[0].features_path}: features are {halves[0].feature_dim}-d, "
            f"--feature-dims sum to {config.feature_dim}"
        )
    games = group_by_game(halves)
    dense = {}
    for game, game_halves in games.items():
        dense[game] = [
            detections_to_dense(
                soft_nms(
                    _matched_filter(h, bank, nuisance), PAPER_SOFT_NMS_WINDOWS_SECONDS, FRAMES_PER_SECOND
                ),
                num_frames_of(h),
                NUM_CLASSES,
            )
            for h in sorted(game_halves, key=lambda h: h.half)
        ]
    labels = {game: game_annotations(hs) for game, hs in games.items()}
    print(f"matched filter with the simulator's signatures, split {args.split!r}, {len(labels)} games")
    for metric in ("tight", "loose"):
        result = evaluate_dense(labels, dense, metric=metric)
        print(
            f"  {metric:>5}: a-mAP {result.a_mAP:.3f}  shown {result.a_mAP_visible:.3f}  "
            f"not shown {result.a_mAP_unshown:.3f}"
        )


def _matched_filter(half: Half, bank: simulator._SignatureBank, nuisance: np.ndarray) -> np.ndarray:
    """``[frames, 17]`` scores in (0, 1) at 2 fps; ``nuisance`` ``[D, k]`` orthonormal directions to drop."""
    features = np.asarray(half.features, dtype=np.float64)
    features = features - features.mean(axis=0)
    features -= (features @ nuisance) @ nuisance.T
    onset = features @ bank.onset.T.astype(np.float64)  # [seconds, 17]
    aftermath = features @ bank.aftermath.T.astype(np.float64)
    seconds = features.shape[0]
    frames = num_frames_of(half)
    times = np.arange(frames) / FRAMES_PER_SECOND  # [frames]
    scores = np.zeros((frames, NUM_CLASSES))
    offsets = np.arange(seconds)[None, :] - times[:, None]  # [frames, seconds]: row time - frame time
    near = np.abs(offsets) <= 16  # signatures reach -8 s to +14 s
    for c, name in enumerate(CLASSES):
        traits = simulator._TRAITS[name]
        (onset_lag, onset_width), (after_lag, after_width, _) = traits.onset, traits.aftermath
        onset_profile = np.exp(-0.5 * ((offsets - onset_lag) / onset_width) ** 2) * near
        after_profile = np.exp(-0.5 * ((offsets - after_lag) / after_width) ** 2) * near
        scores[:, c] = onset_profile @ onset[:, c] + after_profile @ aftermath[:, c]
    z = (scores - scores.mean(axis=0)) / scores.std(axis=0)
    return 1.0 / (1.0 + np.exp(-(z - 4.0)))


if __name__ == "__main__":
    main()
