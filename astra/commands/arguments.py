"""Arguments that several commands share: where the data is (standard library only at import time)."""

from __future__ import annotations

import argparse
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
