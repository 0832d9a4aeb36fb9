"""Arguments that several commands share: where the data is, and ``section.key=value`` overrides
anywhere on the command line (standard library only at import time)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from astra.config import DataConfig
    from astra.data.dataset import DataRoots


def add_data_arguments(parser: argparse.ArgumentParser, *, audio: bool = True) -> None:
    """``--data`` (the labels, and the features and audio unless given apart), ``--features-root``
    and, with ``audio``, ``--audio-root``."""
    parser.add_argument(
        "--data", type=Path, required=True, help="dataset root: labels, and features and audio unless given"
    )
    parser.add_argument("--features-root", type=Path, help="visual features root, if not under --data")
    if audio:
        parser.add_argument("--audio-root", type=Path, help="audio root, if not under --data")


def data_roots(args: argparse.Namespace, config: DataConfig) -> DataRoots:
    """The roots of ``add_data_arguments``' arguments, with the file names of ``config``."""
    from astra.data.dataset import DataRoots

    return DataRoots.from_config(
        args.data,
        config,
        features_root=args.features_root,
        audio_root=getattr(args, "audio_root", None),
    )


_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, where ``section.key=value`` overrides may also come after later
    options (``astra train --data D m.x=1 --out O t.y=2``).

    argparse fills a positional list from one stretch of the command line, and calls the words of a
    later stretch unrecognised. Those that are overrides join ``args.overrides`` in the order given
    (a later one wins); anything else is still an error.
    """
    args, extras = parser.parse_known_args(argv)
    overrides = [word for word in extras if _OVERRIDE.match(word)]
    others = [word for word in extras if not _OVERRIDE.match(word)]
    if others or (overrides and not hasattr(args, "overrides")):
        parser.error("unrecognized arguments: " + " ".join(others or overrides))
    if overrides:
        args.overrides = [*(args.overrides or []), *overrides]
    return args
