"""Members' per-position outputs, read one game at a time: averages, scores, diversity (numpy only).

An ensemble's per-position output is the weighted mean of its members' (the paper averages
the per-position outputs of its variants; weights are greedy pick counts). Everything here reads
a split game by game, so that memory holds one game's outputs per member, never a split's:
:func:`score_ensembles` decodes each game's averages to detections (small) as it goes and
scores several candidate ensembles from one reading; :class:`AveragedOutputs` averages each game
when it is asked for (for writing); :func:`correlations` accumulates pairwise sums.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from astra import per_position
from astra.config import InferenceConfig
from astra.data.labels import Annotations
from astra.evaluation.average_map import AverageMAP, evaluate_dense
from astra.postprocess.decode import dense_detections
from astra.processes import map_games

Halves = dict[int, np.ndarray]


class MemberError(ValueError):
    """A member's outputs that do not fit the split or the other members; the message names them."""


class MemberOutputs:
    """The per-position folders of the candidates for one split: ``{trial: DIR/per_position}``."""

    def __init__(self, folders: Mapping[str, Path], games: Sequence[str], split: str) -> None:
        self.folders = dict(folders)
        self.games = list(games)
        self.split = split
        for trial, folder in self.folders.items():
            missing = [game for game in self.games if not (folder / game / per_position.FILENAME).is_file()]
            if missing:
                raise MemberError(
                    f"trial {trial}: {folder} has no per-position outputs for {len(missing)} of the "
                    f"{len(self.games)} games of split {split!r}, e.g. {missing[0]!r}"
                )

    def read(self, trial: str, game: str) -> Halves:
        return per_position.read_game(self.folders[trial], game)

    def game(self, game: str, trials: Sequence[str]) -> dict[str, Halves]:
        """The outputs of ``trials`` for ``game``, checked to have the same shapes."""
        outputs = {trial: self.read(trial, game) for trial in trials}
        shapes = {trial: tuple(halves[h].shape for h in (1, 2)) for trial, halves in outputs.items()}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{trial} {shape}" for trial, shape in shapes.items())
            raise MemberError(
                f"game {game!r} of split {self.split!r}: members' outputs differ in shape: {listed}"
            )
        return outputs


def average(outputs: Mapping[str, Halves], weights: Mapping[str, float]) -> Halves:
    """The weighted mean of one game's outputs, per half (float32)."""
    total = float(sum(weights.values()))
    mean = {}
    for half in (1, 2):
        acc = np.zeros_like(outputs[next(iter(weights))][half], dtype=np.float32)
        for trial, weight in weights.items():
            acc += np.float32(weight / total) * outputs[trial][half]
        mean[half] = acc
    return mean


def score_ensembles(
    members: MemberOutputs,
    labels: Mapping[str, Annotations],
    ensembles: Sequence[Mapping[str, float]],
    inference: InferenceConfig,
    metric: str = "tight",
    workers: int = 1,
) -> list[AverageMAP]:
    """The a-mAP of each ensemble's averaged outputs on ``labels`` (one reading of the split).

    ``workers`` > 1 reads and decodes the games in that many processes (each holds one game
    per member at a time), with the same result.
    """
    games = list(labels)
    ensembles = [dict(ensemble) for ensemble in ensembles]
    found = map_games(_detections, games, members, ensembles, inference, workers=workers)
    return [
        evaluate_dense(labels, {game: found[game][e] for game in games}, metric)
        for e in range(len(ensembles))
    ]


def _detections(
    games: Sequence[str],
    members: MemberOutputs,
    ensembles: Sequence[Mapping[str, float]],
    inference: InferenceConfig,
) -> dict[str, list[list[np.ndarray]]]:
    """``{game: [each ensemble's [half 1, half 2] dense detections]}``."""
    needed = sorted({trial for ensemble in ensembles for trial in ensemble})
    found: dict[str, list[list[np.ndarray]]] = {}
    for game in games:
        outputs = members.game(game, needed)
        found[game] = []
        for ensemble in ensembles:
            mean = average(outputs, ensemble)
            found[game].append([dense_detections(mean[half], inference) for half in (1, 2)])
    return found


class AveragedOutputs(Mapping[str, Halves]):
    """The ensemble's averaged outputs of a split as a read-only mapping ``{game: halves}``, each
    game averaged from its members' files when asked for: nothing is held between two look-ups."""

    def __init__(self, members: MemberOutputs, weights: Mapping[str, float]) -> None:
        self.members = members
        self.weights = dict(weights)
        self._games = set(members.games)

    def __getitem__(self, game: str) -> Halves:
        if game not in self._games:
            raise KeyError(game)
        return average(self.members.game(game, list(self.weights)), self.weights)

    def __contains__(self, game: object) -> bool:
        return game in self._games

    def __iter__(self) -> Iterator[str]:
        return iter(self.members.games)

    def __len__(self) -> int:
        return len(self.members.games)


def correlations(members: MemberOutputs, trials: Sequence[str]) -> np.ndarray:
    """``[M, M]`` Pearson correlation of the members' per-position outputs over the whole split.

    Over every (frame, class) cell of every half: members that score the same moments alike
    correlate near 1; diverse members lower, which is what averaging gains from.
    """
    m = len(trials)
    count = 0
    sums = np.zeros(m)
    products = np.zeros((m, m))
    for game in members.games:
        outputs = members.game(game, trials)
        for half in (1, 2):
            stacked = np.stack([outputs[t][half].ravel() for t in trials]).astype(np.float64)
            count += stacked.shape[1]
            sums += stacked.sum(axis=1)
            products += stacked @ stacked.T
    means = sums / max(count, 1)
    covariance = products / max(count, 1) - np.outer(means, means)
    scale = np.sqrt(np.clip(np.diag(covariance), 1e-30, None))
    return np.clip(covariance / np.outer(scale, scale), -1.0, 1.0)
