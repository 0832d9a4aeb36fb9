"""Time window aggregation and Soft-NMS for one 45-minute half, against plain per-position loops.

The workload is one half as ASTRA sees it at inference (docs/model.md): 5400
frames at 2 fps, 50-s windows with a stride of 8 s (the last one ending at the
end of the half), L = 100 outputs per window, 17 classes + background, and the
paper's Soft-NMS windows. The scores are synthetic but shaped like a trained
model's: a background floor mostly under the 0.01 threshold, and bumps with
displacement means around events drawn at the paper's class frequencies.

The references are written from docs/model.md as the authors' code is structured:
a Python loop over windows, positions and classes for the aggregation, and per
class a loop of ``argmax`` + decay of one slice for Soft-NMS. Both results are
checked equal to ours before timing.

    python benchmarks/postprocess_speed.py [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from astra.classes import NUM_CLASSES, PAPER_CLASS_COUNTS, PAPER_SOFT_NMS_WINDOWS_SECONDS
from astra.postprocess import aggregate_windows, soft_nms

HALF_SECONDS = 45 * 60
WINDOW_SECONDS = 50
STRIDE_SECONDS = 8
OUTPUTS_PER_SECOND = 2
THRESHOLD = 0.01
# Table 1 counts are over 500 games, 1000 halves.
EVENTS_PER_HALF = np.asarray(PAPER_CLASS_COUNTS, dtype=np.float64) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs of each implementation (best is shown)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    num_frames = HALF_SECONDS * 2
    starts = _window_starts()
    scores, displacement = _synthetic_outputs(rng, starts)
    print(
        f"one half: {num_frames} frames, {starts.size} windows x {scores.shape[1]} positions "
        f"x {scores.shape[2]} channels; "
        f"{np.mean(scores[:, :, 1:] > THRESHOLD):.1%} of class scores above {THRESHOLD}"
    )

    ours = aggregate_windows(scores, displacement, starts, num_frames, OUTPUTS_PER_SECOND, THRESHOLD)
    reference = _reference_aggregate(scores, displacement, starts, num_frames)
    np.testing.assert_array_equal(ours, reference)
    detections = soft_nms(ours, PAPER_SOFT_NMS_WINDOWS_SECONDS, threshold=THRESHOLD)
    expected = _reference_soft_nms(ours, PAPER_SOFT_NMS_WINDOWS_SECONDS)
    kept = zip(detections.frame.tolist(), detections.class_index.tolist(), strict=True)
    assert sorted(kept) == sorted(expected), "soft_nms disagrees with the reference loop"
    print(
        f"per-position output: {np.mean(ours > THRESHOLD):.1%} of (frame, class) above {THRESHOLD}; "
        f"Soft-NMS keeps {len(detections)} detections"
    )

    rows = [
        (
            "aggregation",
            lambda: aggregate_windows(
                scores, displacement, starts, num_frames, OUTPUTS_PER_SECOND, THRESHOLD
            ),
            lambda: _reference_aggregate(scores, displacement, starts, num_frames),
        ),
        (
            "soft-nms",
            lambda: soft_nms(ours, PAPER_SOFT_NMS_WINDOWS_SECONDS, threshold=THRESHOLD),
            lambda: _reference_soft_nms(ours, PAPER_SOFT_NMS_WINDOWS_SECONDS),
        ),
    ]
    print(f"{'step':<14}{'ours ms/half':>14}{'loop ms/half':>14}{'ratio':>8}")
    total_ours = total_loop = 0.0
    for name, run_ours, run_loop in rows:
        ours_ms, loop_ms = _best_ms(run_ours, args.repeats), _best_ms(run_loop, args.repeats)
        total_ours, total_loop = total_ours + ours_ms, total_loop + loop_ms
        print(f"{name:<14}{ours_ms:>14.1f}{loop_ms:>14.1f}{loop_ms / ours_ms:>7.0f}x")
    print(f"{'both':<14}{total_ours:>14.1f}{total_loop:>14.1f}{total_loop / total_ours:>7.0f}x")


def _window_starts() -> np.ndarray:
    starts = np.arange(0, HALF_SECONDS - WINDOW_SECONDS + 1, STRIDE_SECONDS, dtype=np.float64)
    if starts[-1] != HALF_SECONDS - WINDOW_SECONDS:
        starts = np.append(starts, HALF_SECONDS - WINDOW_SECONDS)
    return starts


def _synthetic_outputs(rng: np.random.Generator, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[W, L, C+1]`` scores and displacement means that look like a trained model's."""
    positions = WINDOW_SECONDS * OUTPUTS_PER_SECOND
    num_outputs = HALF_SECONDS * OUTPUTS_PER_SECOND
    # Background floor: log-normal around 1e-3, a few percent above the threshold.
    floor = np.exp(rng.normal(np.log(1e-3), 1.3, size=(num_outputs, NUM_CLASSES)))
    bumps = np.zeros((num_outputs, NUM_CLASSES))
    offset_to_event = np.full((num_outputs, NUM_CLASSES), np.inf)
    for class_index, rate in enumerate(EVENTS_PER_HALF):
        for event in rng.uniform(0, num_outputs, size=rng.poisson(rate)):
            near = np.arange(max(0, int(event) - 12), min(num_outputs, int(event) + 13))
            peak = rng.uniform(0.2, 0.95)
            bump = peak * np.exp(-0.5 * ((near - event) / 3.0) ** 2)
            bumps[near, class_index] = np.maximum(bumps[near, class_index], bump)
            closer = np.abs(near - event) < np.abs(offset_to_event[near, class_index])
            offset_to_event[near[closer], class_index] = near[closer] - event
    half_scores = np.clip(floor + bumps, 0, 1)
    half_mu = np.where(np.isfinite(offset_to_event), offset_to_event, 0.0)

    index = (starts[:, None] * OUTPUTS_PER_SECOND + np.arange(positions)[None, :]).astype(np.int64)  # [W, L]
    # Each window sees the half with its own noise, as overlapping windows of a real model do.
    scores = half_scores[index] * np.exp(rng.normal(0, 0.2, size=(*index.shape, NUM_CLASSES)))
    mu = half_mu[index] + rng.normal(0, 0.7, size=(*index.shape, NUM_CLASSES))
    background = 1 - scores.max(axis=2, keepdims=True)
    scores = np.concatenate([background, np.clip(scores, 0, 1)], axis=2).astype(np.float32)
    mu = np.concatenate([np.zeros((*index.shape, 1)), mu], axis=2).astype(np.float32)
    return scores, mu


def _reference_aggregate(
    scores: np.ndarray, displacement: np.ndarray, starts: np.ndarray, num_frames: int
) -> np.ndarray:
    """A plain loop over windows, positions and classes, from docs/model.md."""
    out = np.zeros((num_frames, scores.shape[2] - 1), dtype=np.float32)
    for w in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            for c in range(1, scores.shape[2]):
                score = scores[w, j, c]
                if score > THRESHOLD:
                    frame = round(float(starts[w]) * 2 + j - float(displacement[w, j, c]))
                    frame = min(max(frame, 0), num_frames - 1)
                    out[frame, c - 1] = max(out[frame, c - 1], score)
    return out


def _reference_soft_nms(
    per_position: np.ndarray, windows_seconds: tuple[float, ...]
) -> list[tuple[int, int]]:
    """Per class: argmax, keep, decay one slice by (|o| / h)^2, drop under the threshold; repeat."""
    kept: list[tuple[int, int]] = []
    for c, window_seconds in enumerate(windows_seconds):
        scores = per_position[:, c].astype(np.float64)
        half_window = window_seconds * 2 / 2
        reach = int(np.ceil(half_window)) - 1
        while scores.max() >= THRESHOLD:
            best = int(np.argmax(scores))
            kept.append((best, c))
            first, last = max(best - reach, 0), min(best + reach, scores.size - 1)
            ratio = np.abs(np.arange(first - best, last - best + 1)) / half_window
            scores[first : last + 1] *= ratio * ratio
            scores[first : last + 1][scores[first : last + 1] < THRESHOLD] = 0
    return kept


def _best_ms(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


if __name__ == "__main__":
    main()
