"""Write a synthetic SoccerNet-v2 dataset in the real layout (see docs/simulator.md).

Example: ``astra synth runs/data`` (40 games, ~2 GB, under a minute);
``astra synth runs/big --games 4 --half-minutes 45 --feature-dims 2048,2048,384,2048,2048``
writes SoccerNet-scale files. The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from astra.data.simulator import SimulatorConfig

HELP = "write a synthetic SoccerNet-v2 dataset (features, audio, labels, splits)"

# The defaults below restate SimulatorConfig's (this module may not import numpy at import time);
# tests/data/test_simulator.py checks that they agree.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="folder to write; must be empty unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    size = parser.add_argument_group("size and layout")
    size.add_argument(
        "--games", metavar="N", type=_positive_int, default=40, help="number of games (default: %(default)s)"
    )
    size.add_argument(
        "--split-fractions",
        type=_split_fractions,
        default=(0.6, 0.15, 0.15, 0.1),
        metavar="TRAIN,VALID,TEST,CHALLENGE",
        help="relative split sizes, normalised to sum to 1 (default: 0.6,0.15,0.15,0.1)",
    )
    size.add_argument(
        "--half-minutes",
        metavar="MINUTES",
        type=_at_least_one,
        default=8.0,
        help="shortest half in minutes; real halves last 45-50 (default: %(default)s)",
    )
    size.add_argument(
        "--half-spread-seconds",
        metavar="SECONDS",
        type=_non_negative_float,
        default=60.0,
        help="each half is longer by up to this many seconds (default: %(default)s)",
    )
    size.add_argument(
        "--audio-offset-seconds",
        metavar="SECONDS",
        type=_non_negative_float,
        default=4.0,
        help="audio length differs from the visual one by 1 to this many seconds (default: %(default)s)",
    )
    size.add_argument(
        "--feature-dims",
        type=_feature_dims,
        default=(64, 64, 32, 64, 64),
        metavar="A,B,C,D,E",
        help="dims of the visual backbones; real: 2048,2048,384,2048,2048 (default: 64,64,32,64,64)",
    )
    size.add_argument(
        "--seed", type=int, default=0, help="random seed: same seed, same bytes (default: %(default)s)"
    )
    size.add_argument("--no-audio", action="store_true", help="skip audioN.npy (97%% of the disk use)")
    tail = parser.add_argument_group("class frequencies")
    tail.add_argument(
        "--events-per-minute",
        metavar="RATE",
        type=_non_negative_float,
        default=2.3,
        help="labels per minute of play, kick-offs aside, as in Table 1 (default: %(default)s)",
    )
    tail.add_argument(
        "--class-tempering",
        metavar="T",
        type=_non_negative_float,
        default=0.5,
        help="class rate ~ Table 1 count**t; 1 = real long tail, 0 = uniform (default: %(default)s)",
    )
    tail.add_argument(
        "--min-events-per-split",
        metavar="N",
        type=_non_negative_int,
        default=3,
        help="inject events until every split has this many of every class (default: %(default)s)",
    )
    flow = parser.add_argument_group("game flow and labels")
    flow.add_argument(
        "--no-game-flow",
        action="store_true",
        help="independent events instead of out -> throw-in, foul -> free kick, goal -> kick-off, ...",
    )
    flow.add_argument(
        "--not-shown-scale",
        metavar="X",
        type=_non_negative_float,
        default=1.0,
        help="multiplies each class's share of 'not shown' labels (default: %(default)s)",
    )
    flow.add_argument(
        "--label-jitter-scale",
        metavar="X",
        type=_non_negative_float,
        default=1.0,
        help="multiplies each class's annotation spread; 0 = exact labels (default: %(default)s)",
    )
    visual = parser.add_argument_group("visual evidence")
    visual.add_argument(
        "--signal-strength",
        metavar="X",
        type=_non_negative_float,
        default=1.25,
        help="class signature amplitude in units of the feature noise (default: %(default)s)",
    )
    visual.add_argument(
        "--backbone-spread",
        metavar="SIGMA",
        type=_non_negative_float,
        default=0.6,
        help="log-normal spread of a class's strength across backbones (default: %(default)s)",
    )
    visual.add_argument(
        "--not-shown-visual-strength",
        metavar="X",
        type=_non_negative_float,
        default=0.3,
        help="a not-shown event keeps at most this share of its signature (default: %(default)s)",
    )
    visual.add_argument(
        "--background-correlation-seconds",
        metavar="SECONDS",
        type=_positive_float,
        default=20.0,
        help="time constant of the slowly varying background (default: %(default)s)",
    )
    visual.add_argument(
        "--replay-scale",
        metavar="X",
        type=_non_negative_float,
        default=1.0,
        help="multiplies each class's chance of an unlabelled replay 10-40 s later (default: %(default)s)",
    )
    visual.add_argument(
        "--near-misses-per-minute",
        metavar="RATE",
        type=_non_negative_float,
        default=0.6,
        help="unlabelled partial signatures per minute (default: %(default)s)",
    )
    audio = parser.add_argument_group("audio evidence")
    audio.add_argument(
        "--audio-strength",
        metavar="X",
        type=_non_negative_float,
        default=1.0,
        help="scales whistles and crowd swells in dB; 0 = background only (default: %(default)s)",
    )
    audio.add_argument(
        "--audio-distractors-per-minute",
        metavar="RATE",
        type=_non_negative_float,
        default=0.8,
        help="unlabelled whistles and crowd swells per minute (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from astra.data.simulator import simulate

    summary = simulate(args.out, config_from_args(args), progress=not args.quiet, overwrite=args.overwrite)
    print(summary.summary())
    return 0


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The :class:`~astra.data.simulator.SimulatorConfig` that the parsed arguments describe."""
    from astra.data.simulator import SimulatorConfig

    return SimulatorConfig(
        num_games=args.games,
        split_fractions=args.split_fractions,
        half_minutes=args.half_minutes,
        half_spread_seconds=args.half_spread_seconds,
        audio_offset_seconds=args.audio_offset_seconds,
        feature_dims=args.feature_dims,
        seed=args.seed,
        write_audio=not args.no_audio,
        events_per_minute=args.events_per_minute,
        class_tempering=args.class_tempering,
        min_events_per_split=args.min_events_per_split,
        game_flow=not args.no_game_flow,
        not_shown_scale=args.not_shown_scale,
        label_jitter_scale=args.label_jitter_scale,
        signal_strength=args.signal_strength,
        backbone_spread=args.backbone_spread,
        not_shown_visual_strength=args.not_shown_visual_strength,
        background_correlation_seconds=args.background_correlation_seconds,
        replay_scale=args.replay_scale,
        near_misses_per_minute=args.near_misses_per_minute,
        audio_strength=args.audio_strength,
        audio_distractors_per_minute=args.audio_distractors_per_minute,
    )


def _feature_dims(text: str) -> tuple[int, ...]:
    dims = []
    for part in text.split(","):
        try:
            dim = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {part.strip()!r} is not a whole number; expected e.g. 64,64,32,64,64"
            ) from None
        if dim <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: dims must be positive, got {dim}")
        dims.append(dim)
    return tuple(dims)


def _split_fractions(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 4 numbers (train,valid,test,challenge)")
    values = [_non_negative_float(part) for part in parts]
    total = sum(values)
    if total <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one split must have a positive size")
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value


def _at_least_one(text: str) -> float:
    value = _non_negative_float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 0")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number > 0")
    return value
