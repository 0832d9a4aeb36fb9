"""The ``astra`` command line: ``astra <command> --help`` explains each command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from astra.commands.arguments import parse_with_overrides

# Subcommand name -> module under astra.commands, in the order --help lists them.
COMMANDS: dict[str, str] = {
    "synth": "synth",
    "check-data": "check_data",
    "audio-features": "audio_features",
    "summary": "summary",
    "train": "train",
    "predict": "predict",
    "baseline": "baseline",
    "evaluate": "evaluate",
    "search-windows": "search_windows",
    "p1": "p1",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astra",
        description="ASTRA action spotting on SoccerNet-v2: data, training, inference, evaluation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"astra.commands.{module_name}")
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_with_overrides(build_parser(), argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        # Our data and config errors name the file or value at fault: show them without a traceback.
        if args.verbose:
            raise
        print(f"astra {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
