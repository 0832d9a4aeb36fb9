"""Training throughput of the paper preset (clips per second), and where the time goes.

One training step as `fit` runs it (`astra.training.loop.train_step`): the audio turned into the
model's input, the configured mixup (and its queue), forward, loss, backward, the Adam step, the
schedule and the weight average, on random inputs of the paper's shapes (visual [B, 50, 8576],
audio [B, 128, 5000] mel power), fp32 on the CPU, or on a GPU with --device cuda (bf16 autocast
there unless --precision fp32). Where the config prepares the audio in the data loader
(train.prepare_audio_in_loader), the timed step includes that preparation, clip by clip, as the
loader does it: the figure is the work of one step of an epoch, data loading aside.

  .venv/bin/python benchmarks/train_throughput.py                 # visual-only, batch 8
  .venv/bin/python benchmarks/train_throughput.py --audio --batch-size 2
  .venv/bin/python benchmarks/train_throughput.py --audio --batch-size 2 --profile

--compare-optimizer times the same steps with PyTorch's default (foreach) Adam and
with the fused Adam the trainer uses, side by side in one process; --compare-dropout
times them with ``torch.nn.Dropout`` (bernoulli_ masks) and with the model's
``FastDropout`` (torch.rand masks), likewise; --compare-denormals with denormal floats
kept and flushed to zero, as the trainer does (steep locality biases leave attention
weights like e^-90); --compare-audio-pool F,B (with --audio) with the configured audio
input and with log-mel patches average-pooled by F frames and B mel bins before the
audio CNN (model.audio_input_pool); --compare-with section.key=value (repeatable) with the
configured model and with the model under those overrides (another audio front end, say):

  .venv/bin/python benchmarks/train_throughput.py --config configs/small.yaml --audio \
      --compare-with model.audio_conv_channels=[] --compare-with model.audio_input_pool=[8,4]

--compare-precision times fp32 against bf16 autocast (train.mixed_precision=bf16, which also
applies on the CPU), each on its own copy of the model, and prints both variants' first losses
(with the random parts of the step turned off by overrides, the same to bf16's rounding).
--rounds R alternates the variants in R rounds after a warm-up round and prints each round's
ratio, for comparisons on a machine whose speed drifts:

  .venv/bin/python benchmarks/train_throughput.py --compare-precision --rounds 6 --steps 3

--flops counts the operations of one step
and prints the rate each variant sustains next to a plain matrix product's: how far a
faster step can go without computing less.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from astra.classes import NUM_CLASSES
from astra.config import ConfigError, load_config
from astra.model import build_model
from astra.model.dropout import FastDropout, use_fast_dropout
from astra.training.host_memory import reuse_freed_memory
from astra.training.loop import Placement, TrainingSession, _autocast_dtype, train_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", action="append", default=[], help="config files (default: the paper preset)"
    )
    parser.add_argument("--audio", action="store_true", help="with the audio branch (default: visual only)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto",
        help="auto: bf16 autocast on CUDA, fp32 on the CPU; bf16: bf16 autocast on the CPU too "
        "(train.mixed_precision=bf16) (default: auto)",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="time the variants in this many alternating rounds of --steps steps each (after one "
        "warm-up round), and print each round's ratio of the first variant's step to the others'",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="print the top operators of one step")
    parser.add_argument("--compare-optimizer", action="store_true", help="foreach Adam vs fused Adam")
    parser.add_argument(
        "--compare-dropout", action="store_true", help="nn.Dropout vs FastDropout (fused Adam)"
    )
    parser.add_argument(
        "--compare-precision",
        action="store_true",
        help="fp32 vs bf16 autocast (train.mixed_precision=bf16), on the CPU too (fused Adam)",
    )
    parser.add_argument(
        "--compare-denormals",
        action="store_true",
        help="denormal floats kept vs flushed to zero (what the trainer does; fused Adam)",
    )
    parser.add_argument(
        "--compare-audio-pool",
        metavar="F,B",
        help="with --audio: the configured audio input vs log-mel patches average-pooled by F frames "
        "and B mel bins before the audio CNN (model.audio_input_pool), side by side",
    )
    parser.add_argument(
        "--compare-with",
        action="append",
        default=[],
        metavar="section.key=value",
        help="the configured model vs the model with these overrides, side by side (repeat the "
        "option for several overrides of one variant)",
    )
    parser.add_argument(
        "--flops",
        action="store_true",
        help="count the floating-point operations of one step (torch.utils.flop_counter) and print the "
        "rate each variant sustains, next to a plain matrix product's rate on this machine",
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error(f"--rounds and --steps must be at least 1, got {args.rounds} and {args.steps}")
    if args.compare_audio_pool and not args.audio:
        parser.error("--compare-audio-pool needs --audio")
    compared = [
        args.compare_optimizer,
        args.compare_dropout,
        args.compare_denormals,
        args.compare_precision,
        bool(args.compare_audio_pool),
        bool(args.compare_with),
    ]
    if sum(compared) > 1:
        parser.error("give one --compare-* option at a time")

    config = load_config(args.config, [f"model.use_audio={str(args.audio).lower()}", *args.overrides])
    device = torch.device(args.device)
    if config.train.reuse_host_memory:  # as fit does
        reuse_freed_memory()

    def network(model_config):
        torch.manual_seed(0)
        built = build_model(model_config, config.clips).to(device).train()
        if built.visual_whitening is not None:  # a timing needs the work, not fitted statistics
            dims = model_config.visual_dims
            built.visual_whitening.fit([np.zeros(d) for d in dims], [np.eye(d) for d in dims])
        return built

    model = network(config.model)
    batch = args.batch_size
    features = torch.randn(batch, config.clips.clip_seconds, sum(config.model.visual_dims), device=device)
    audio = (
        torch.rand(batch, config.clips.mel_bins, config.clips.clip_seconds * 100, device=device)
        if args.audio
        else torch.zeros(batch, 0, device=device)  # what the loader gives without audio
    )
    classification = torch.zeros(batch, config.clips.num_outputs, NUM_CLASSES + 1, device=device)
    classification[..., 0] = 1
    classification[:, 40:50, 0], classification[:, 40:50, 9] = 0, 1
    displacement = torch.full_like(classification, float("nan"))
    displacement[:, 38:52, 9] = torch.arange(-7, 7, device=device, dtype=torch.float32)
    mode = {"fp32": "off", "bf16": "bf16"}.get(args.precision, config.train.mixed_precision)
    if args.precision == "auto" and device.type == "cuda":
        mode = "bf16"
    autocast = _autocast_dtype(mode, device)
    placement = Placement(
        rank=0, world_size=1, device=device, autocast_dtype=autocast, batch_per_worker=batch
    )

    def make_step(
        fused: bool,
        dropout: type[torch.nn.Dropout] = FastDropout,
        flush_denormal: bool = True,
        model: torch.nn.Module = model,
        step_config=config,
        placement: Placement = placement,
    ):
        # The trainer's session around this model: Adam (fused unless asked otherwise), the schedule,
        # the weight average and the mixup of the config.
        session = TrainingSession.around(model, step_config, placement, steps_per_epoch=100, fused_adam=fused)
        in_loader = step_config.train.prepare_audio_in_loader and args.audio

        def step() -> None:
            torch.set_flush_denormal(flush_denormal)  # the trainer flushes them
            use_fast_dropout(model, dropout)
            clip_audio = audio
            if in_loader:  # what the loader does, clip by clip
                with torch.no_grad():
                    clip_audio = torch.stack([model.prepare_audio(clip[None])[0] for clip in audio])
            loss, _ = train_step(
                session,
                step_config,
                features,
                clip_audio,
                classification,
                displacement,
                description="benchmark",
            )
            losses.append(loss)
            if device.type == "cuda":
                torch.cuda.synchronize()

        losses: list[float] = []
        step.losses = losses  # type: ignore[attr-defined]
        return step

    variants = {"fused Adam": make_step(True)}
    if args.compare_optimizer:
        variants = {"foreach Adam": make_step(False), **variants}
    if args.compare_dropout:
        variants = {"nn.Dropout": make_step(True, torch.nn.Dropout), "FastDropout": make_step(True)}
    if args.compare_denormals:
        variants = {"denormals": make_step(True, flush_denormal=False), "flushed": make_step(True)}
    if args.compare_precision:
        # Each its own copy of the model (the same start): the two sessions' Adam steps do not mix.
        variants = {
            "fp32": make_step(True, model=network(config.model), placement=dataclasses.replace(
                placement, autocast_dtype=None)),
            "bf16 autocast": make_step(True, model=network(config.model), placement=dataclasses.replace(
                placement, autocast_dtype=torch.bfloat16)),
        }  # fmt: skip
    if args.compare_audio_pool:
        pool = tuple(int(f) for f in args.compare_audio_pool.split(","))
        if pool == tuple(config.model.audio_input_pool):
            parser.error(f"--compare-audio-pool {args.compare_audio_pool} is the configured pool already")
        pooled = network(dataclasses.replace(config.model, audio_input_pool=pool))
        configured = "x".join(str(f) for f in config.model.audio_input_pool)
        variants = {
            f"pool {configured}": make_step(True),
            f"pool {pool[0]}x{pool[1]}": make_step(True, model=pooled),
        }
    if args.compare_with:
        try:
            other = load_config(
                args.config,
                [f"model.use_audio={str(args.audio).lower()}", *args.overrides, *args.compare_with],
            )
        except ConfigError as error:
            parser.error(f"--compare-with: {error}")
        if other.clips != config.clips:
            parser.error("--compare-with: compare models on the same clips (clips.* overrides differ)")
        variants = {
            "configured": make_step(True),
            " ".join(args.compare_with): make_step(True, model=network(other.model), step_config=other),
        }
    preset = " + ".join(args.config) or "paper preset"
    precision = "bf16 autocast" if autocast else "fp32"
    print(f"{preset}, {'with' if args.audio else 'without'} audio, batch {batch}, {device}, {precision}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    flops = _count_flops(list(variants.values())[-1]) if args.flops else 0.0
    if flops:
        print(f"{flops / 1e9:.1f} GFLOP per step (forward, backward; torch.utils.flop_counter)")
        rate = _matmul_rate(batch * config.clips.clip_seconds, device, autocast or torch.float32)
        print(f"plain matrix product [{batch * config.clips.clip_seconds}, 2048] x [2048, 2048], "
              f"{'bf16' if autocast else 'fp32'}: {rate / 1e9:.0f} GFLOP/s")  # fmt: skip
    # Alternating rounds (the first a warm-up): each variant's --steps steps, then the next's.
    times: dict[str, list[float]] = {name: [] for name in variants}
    per_round: list[dict[str, float]] = []
    for round_ in range(args.rounds + 1 if args.rounds > 1 else 1):
        medians = {}
        for name, step in variants.items():
            if round_ == 0:
                for _ in range(2):
                    step()
            if round_ == 0 and args.rounds > 1:
                continue
            timed = []
            for _ in range(args.steps):
                started = time.perf_counter()
                step()
                timed.append(time.perf_counter() - started)
            times[name] += timed
            medians[name] = statistics.median(timed)
        if medians:
            per_round.append(medians)
    for name, timed in times.items():
        median = statistics.median(timed)
        rate = f", {flops / median / 1e9:.0f} GFLOP/s" if flops else ""
        summary = f"{median:.3f} s per step, {batch / median:.3f} clips/s (median of {len(timed)})"
        print(f"{name:>13}: {summary}{rate}")
    if args.compare_precision:
        # The same start and batch: the first steps' losses of the two precisions side by side (the
        # same to bf16's rounding where overrides turn dropout and mixup off; each draws its own masks).
        for name, step in variants.items():
            print(f"{name:>13}: losses of the first 3 steps {', '.join(f'{x:.4f}' for x in step.losses[:3])}")
    if len(per_round) > 1 and len(variants) > 1:
        first, *others = list(variants)
        for other in others:
            ratios = [medians[first] / medians[other] for medians in per_round]
            listed = ", ".join(f"{ratio:.2f}" for ratio in ratios)
            print(f"{first} / {other}, per round: {listed} (median {statistics.median(ratios):.2f}x, "
                  f"{min(ratios):.2f} to {max(ratios):.2f})")  # fmt: skip
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            list(variants.values())[-1]()
        # On a GPU: the kernels by their device time (what the GPU did), then the host's operators
        # (what launched them): a step bound by launches shows host time well above device time.
        if device.type == "cuda":
            print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=20))
            events = prof.key_averages()
            device_total = sum(event.self_device_time_total for event in events) / 1e3
            host_total = sum(event.self_cpu_time_total for event in events) / 1e3
            print(f"one step: {device_total:.1f} ms of kernels on the GPU, {host_total:.1f} ms on the host")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def _count_flops(step) -> float:
    """Floating-point operations of one call of ``step`` (matrix products and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def _matmul_rate(rows: int, device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """FLOP/s of a plain matrix product the size of the PFFNs' largest ones: the machine's ceiling."""
    a = torch.randn(rows, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 2 * rows * 2048 * 2048 / statistics.median(times)


if __name__ == "__main__":
    main()
