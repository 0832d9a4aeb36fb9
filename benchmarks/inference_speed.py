"""Inference of one 45-minute half: model forward over the sliding windows, then aggregation
into the per-position output and Soft-NMS, each timed separately.

  .venv/bin/python benchmarks/inference_speed.py                         # paper preset, visual only
  .venv/bin/python benchmarks/inference_speed.py --audio                 # with the audio branch
  .venv/bin/python benchmarks/inference_speed.py --config configs/small.yaml --audio
  .venv/bin/python benchmarks/inference_speed.py --audio --device cuda    # fp32 on the GPU, as predict

The half is random features (and mel power) in a memory-mapped file of the real shape.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from astra.classes import NUM_CLASSES
from astra.config import load_config
from astra.data.clips import inference_window_starts
from astra.data.dataset import Half
from astra.data.labels import Annotations
from astra.inference import predict_half
from astra.model import build_model
from astra.postprocess.decode import detect


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", action="append", default=[], help="config files (default: the paper preset)"
    )
    parser.add_argument("--audio", action="store_true", help="with the audio branch")
    parser.add_argument("--minutes", type=float, default=45.0, help="length of the half")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")
    args = parser.parse_args()

    config = load_config(args.config, [f"model.use_audio={str(args.audio).lower()}"])
    seconds = int(args.minutes * 60)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        features_path = Path(folder) / "1_features.npy"
        np.save(
            features_path, rng.standard_normal((seconds, sum(config.model.visual_dims)), dtype=np.float32)
        )
        audio = None
        audio_path = None
        if args.audio:
            audio_path = Path(folder) / "audio1.npy"
            np.save(
                audio_path, rng.exponential(size=(config.clips.mel_bins, seconds * 100)).astype(np.float32)
            )
            audio = np.load(audio_path, mmap_mode="r")
        empty = Annotations(
            np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0, bool)
        )
        half = Half(
            "bench", 1, np.load(features_path, mmap_mode="r"), audio, empty, features_path, audio_path
        )

        device = torch.device(args.device)
        model = build_model(config.model, config.clips, load_pretrained=False).to(device).eval()
        if model.visual_whitening is not None:  # a timing needs the work, not fitted statistics
            dims = config.model.visual_dims
            model.visual_whitening.fit([np.zeros(d) for d in dims], [np.eye(d) for d in dims])
        windows = len(
            inference_window_starts(
                seconds, config.clips.clip_seconds, int(config.clips.inference_stride_seconds)
            )
        )
        started = time.perf_counter()
        per_position = predict_half(
            model, half, config.clips, config.inference, with_audio=args.audio, device=device,
            batch_size=args.batch_size,
        )  # fmt: skip
        total = time.perf_counter() - started
        # The aggregation runs inside predict_half; time it again alone on the same window outputs.
        from astra.postprocess.aggregation import aggregate_windows

        scores = rng.random((windows, config.clips.num_outputs, NUM_CLASSES + 1), dtype=np.float32) ** 20
        displacement = rng.normal(0, 2, scores.shape).astype(np.float32)
        starts = inference_window_starts(
            seconds, config.clips.clip_seconds, int(config.clips.inference_stride_seconds)
        )
        started = time.perf_counter()
        aggregated = aggregate_windows(
            scores, displacement, starts, seconds * 2, config.clips.outputs_per_second
        )
        aggregation = time.perf_counter() - started
        started = time.perf_counter()
        detections = detect(aggregated, config.inference)
        nms = time.perf_counter() - started
        detect(per_position, config.inference)
    print(
        f"{args.minutes:g}-min half, {windows} windows, {'with' if args.audio else 'without'} audio, "
        f"{device}, {torch.get_num_threads()} threads: windows + aggregation {total:.1f} s "
        f"({windows / total:.2f} windows/s); aggregation {1000 * aggregation:.1f} ms, "
        f"Soft-NMS {1000 * nms:.1f} ms ({len(detections)} detections); "
        f"post-processing share {100 * (aggregation + nms) / (total + nms):.2f}%"
    )


if __name__ == "__main__":
    main()
