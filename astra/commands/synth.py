"""Write a synthetic SoccerNet-v2 dataset in the real layout (see docs/simulator.md).

Example: ``astra synth runs/data`` (40 games, ~2 GB, under a minute);
``astra synth runs/big --games 4 --half-minutes 45 --feature-dims 2048,2048,384,2048,2048``
writes SoccerNet-scale files. The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse

from astra.config import SimulatorConfig
from astra.config_cli import add_config_arguments, config_from_arguments

HELP = "write a synthetic SoccerNet-v2 dataset (features, audio, labels, splits)"

# Options whose names are not their fields' (the rest are --field-name): --games, --audio/--no-audio.
OPTION_NAMES: dict[str, str] = {"num_games": "games", "write_audio": "audio"}
OPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "size and layout": (
        "num_games",
        "split_fractions",
        "half_minutes",
        "half_spread_seconds",
        "audio_offset_seconds",
        "feature_dims",
        "seed",
        "write_audio",
    ),
    "class frequencies": ("events_per_minute", "class_tempering", "min_events_per_split"),
    "game flow and labels": ("game_flow", "not_shown_scale", "label_jitter_scale"),
    "visual evidence": (
        "signal_strength",
        "backbone_spread",
        "not_shown_visual_strength",
        "background_correlation_seconds",
        "replay_scale",
        "near_misses_per_minute",
    ),
    "audio evidence": ("audio_strength", "audio_distractors_per_minute"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="folder to write; must be empty unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(parser, SimulatorConfig, names=OPTION_NAMES, groups=OPTION_GROUPS)


def run(args: argparse.Namespace) -> int:
    from astra.data.simulator import simulate

    config = config_from_arguments(SimulatorConfig, args, names=OPTION_NAMES)
    summary = simulate(args.out, config, progress=not args.quiet, overwrite=args.overwrite)
    print(summary.summary())
    return 0
