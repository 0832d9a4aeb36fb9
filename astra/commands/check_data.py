"""Check a SoccerNet-v2 dataset on disk before training on it.

Opens every game of the chosen splits, reads every feature and audio value once to
look for NaN and inf (training only checks the clips it reads), checks shapes and
labels, and prints per split: games, halves, hours, annotations per class, the share
of "not shown" annotations, the labels outside the 17 classes, the labels a little
past the end of their half (kept for evaluation, left out of training targets) and
the audio files shorter than their half, with how much of it they cover. Audio
covering less than 90% of its half and labels more than 60 s past its end are
problems (``astra.data.dataset`` says why). Every problem of a game is listed (its labels,
each half's files, each half's NaN and inf), each naming its file; the games of a split with
no folder at all are one problem, counted. Exit status 0 when everything is clean, 2 with the
list of problems otherwise.

The data is named as for ``astra train``: ``--data`` (labels), ``--features-root`` and
``--audio-root`` when they live apart, the file names from the config (``data.features_filename``,
``data.audio_filename``) given by ``--config`` and ``section.key=value`` overrides.

Examples:
    astra check-data --data /data/SoccerNet --split train valid
    astra check-data --config configs/small.yaml --data D --features-root F --audio-root A
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING

from astra.commands.arguments import add_data_arguments, data_roots

if TYPE_CHECKING:
    from astra.data.dataset import DataRoots

HELP = "scan a dataset for missing files, bad shapes, bad labels and NaN/inf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE",
        help="YAML config (repeatable), as for astra train: its data.* file names and model.use_audio",
    )  # fmt: skip
    add_data_arguments(parser)
    parser.add_argument(
        "--split",
        nargs="+",
        default=None,
        metavar="NAME",
        help="splits to check (default: those of <data>/splits.json, else train valid test challenge)",
    )
    parser.add_argument(
        "--no-audio", action="store_true", help="do not look for audio files (nor with model.use_audio=false)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="config overrides (before --split)"
    )


def run(args: argparse.Namespace) -> int:
    from astra.config import ConfigError, load_config
    from astra.data.splits import OFFICIAL_SPLITS, SPLITS_FILENAME, read_splits_file

    misplaced = [name for name in args.split or () if "=" in name]
    if misplaced:  # --split takes every word after it
        raise ConfigError(
            f"--split {misplaced[0]}: not a split name; put section.key=value overrides before --split"
        )
    config = load_config(args.config, args.overrides)
    roots = data_roots(args, config.data)
    with_audio = config.model.use_audio and not args.no_audio
    if args.split:
        splits = list(args.split)
    elif (args.data / SPLITS_FILENAME).is_file():
        splits = list(read_splits_file(args.data / SPLITS_FILENAME))
    else:
        splits = list(OFFICIAL_SPLITS)

    problems: list[str] = []
    feature_dims: dict[int, str] = {}
    for split in splits:
        report, split_problems = _check_split(roots, split, with_audio=with_audio, feature_dims=feature_dims)
        print(report)
        problems.extend(split_problems)
    if len(feature_dims) > 1:
        found = "; ".join(f"{dim} in {path}" for dim, path in feature_dims.items())
        problems.append(f"feature dimensions differ across games: {found}")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 2
    print("\nno problems found")
    return 0


def _check_split(
    roots: DataRoots, split: str, *, with_audio: bool, feature_dims: dict[int, str]
) -> tuple[str, list[str]]:
    """Open and fully scan every game of ``split``; returns its printed summary and its problems."""
    import numpy as np

    from astra.classes import CLASSES, NUM_CLASSES
    from astra.data.dataset import PAST_END_TOLERANCE_SECONDS, scan_game
    from astra.data.splits import games_of_split
    from astra.progress import progress

    try:
        games = games_of_split(split, roots.labels, game_roots=(roots.features,))
    except ValueError as error:
        return f"split {split}: not checked", [str(error)]
    # The challenge labels are hidden: its games need none.
    labels_expected = "challenge" not in split.lower().split("+")
    problems: list[str] = []
    num_halves = 0
    num_seconds = 0
    num_unlabelled = 0
    per_class = np.zeros(NUM_CLASSES, dtype=np.int64)
    not_shown = 0
    ignored: Counter[str] = Counter()
    past_end: Counter[str] = Counter()
    short_audio: list[tuple[float, str]] = []  # (coverage, audio file) of audio shorter than its half
    missing: list[str] = []  # games without a folder under the features root: one problem for all
    for game in progress(games, desc=f"checking {split}", unit="game"):
        if not (roots.features / game).is_dir() and not (roots.labels / game).is_dir():
            missing.append(game)
            num_unlabelled += 1
            continue
        has_labels = roots.labels_file(game).is_file()
        if not has_labels:
            num_unlabelled += 1
            if labels_expected:
                problems.append(
                    f"{roots.labels_file(game)}: label file not found (labels root {roots.labels})"
                )
        halves, game_ignored, game_problems = scan_game(roots, game, with_audio=with_audio)
        if game_problems:
            problems.extend(game_problems)
            continue
        feature_dims.setdefault(halves[0].feature_dim, str(halves[0].features_path))
        ignored.update(game_ignored)
        for half in halves:
            num_halves += 1
            num_seconds += half.num_seconds
            per_class += np.bincount(half.annotations.class_index, minlength=NUM_CLASSES)
            not_shown += int((~half.annotations.visible).sum())
            past_end[game] += int(half.annotations.past_end.sum())
            coverage = half.audio_coverage
            if coverage is not None and coverage < 1.0:
                short_audio.append((coverage, str(half.audio_path)))

    if len(missing) == 1:
        problems.append(
            f"game {missing[0]!r}: no folder {roots.features / missing[0]} "
            f"under the features root {roots.features}"
        )
    elif missing:
        shown = ", ".join(repr(game) for game in missing[:3]) + (", ..." if len(missing) > 3 else "")
        problems.append(
            f"{len(missing)} of the {len(games)} games of split {split!r} have no folder under the features "
            f"root {roots.features} ({shown})"
        )
    num_annotations = int(per_class.sum())
    lines = [
        f"split {split}: {len(games)} games, {num_halves} halves opened, {num_seconds / 3600:.2f} hours"
        + (f", {num_unlabelled} games without labels" if num_unlabelled else ""),
        f"  annotations: {num_annotations}"
        + (f", not shown {not_shown / num_annotations:.1%}" if num_annotations else ""),
    ]
    width = max(len(name) for name in CLASSES)
    lines += [f"    {name:<{width}}  {int(count)}" for name, count in zip(CLASSES, per_class, strict=True)]
    if ignored:
        counts = ", ".join(f"{name!r}: {count}" for name, count in ignored.most_common())
        lines.append(f"  ignored labels (outside the 17 classes): {ignored.total()} ({counts})")
    else:
        lines.append("  ignored labels (outside the 17 classes): 0")
    past_end = +past_end  # the games that have some
    tolerated = f"within {PAST_END_TOLERANCE_SECONDS} s; scored in evaluation, not trained on"
    if past_end:
        counts = ", ".join(f"{game!r}: {count}" for game, count in past_end.most_common())
        lines.append(
            f"  labels past the end of their half ({tolerated}): {past_end.total()} "
            f"in {len(past_end)} games ({counts})"
        )
    else:
        lines.append(f"  labels past the end of their half ({tolerated}): 0")
    if short_audio:
        least, least_path = min(short_audio)
        lines.append(
            f"  audio shorter than its half (padded with its last frame): {len(short_audio)} of "
            f"{num_halves} halves; the shortest covers {least:.1%} of its half ({least_path})"
        )
    elif with_audio:
        lines.append("  audio shorter than its half: none")
    return "\n".join(lines), problems
