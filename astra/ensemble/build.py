"""Build an ensemble from a search's experiment folder (``python ensembles/build.py``).

1. The candidates: the experiment's finished trials (``trials/<id>/result.json``), each with the
   per-position outputs of its best checkpoint on valid and test; the ``pool`` best by their own
   validation score (tight a-mAP with the paper's windows).
2. The members, chosen on valid only (:mod:`astra.ensemble.selection`): greedy forward
   selection by default, plain top-K as the baseline.
3. The ensemble's per-class Soft-NMS windows, searched on its valid average (the search's
   function, :func:`astra.search.windows.search_windows`).
4. Written to ``OUT/``: ``valid/``, ``test/`` (and ``challenge/``) prediction folders of the
   averaged outputs decoded with the searched windows (``per_position/``, ``predictions/``,
   ``predictions.zip``: for the challenge split, the file the challenge server takes),
   ``ensemble.json`` (members, weights, windows, every score), ``report.md`` and
   ``per_class.png``.

Test figures are reported as they fall: nothing here looks at them to choose. Members without
outputs for the challenge split are first predicted from their best checkpoints (torch is
imported only then). Where the data holds the simulator's withheld challenge labels
(``challenge_labels/``), the challenge submission is scored too, labelled as what the challenge
server would say.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astra.config import ExperimentConfig, config_from_dict, replace
from astra.data.dataset import DataRoots
from astra.data.labels import Annotations, read_labels
from astra.data.splits import games_of_split
from astra.ensemble.outputs import (
    AveragedOutputs,
    MemberOutputs,
    correlations,
    score_ensembles,
)
from astra.ensemble.selection import SELECTIONS, SelectionError, select
from astra.evaluation.average_map import EvaluationError, evaluate_dense
from astra.files import atomic_write
from astra.layout import LABELS_FILENAME
from astra.postprocess.decode import dense_detections
from astra.processes import WorkerError, check_workers, map_games

log = logging.getLogger(__name__)

ENSEMBLE_NAME = "ensemble.json"
REPORT_NAME = "report.md"
PLOT_NAME = "per_class.png"
CHALLENGE_LABELS_DIRNAME = "challenge_labels"  # where the simulator keeps the challenge labels


class EnsembleError(ValueError):
    """An experiment or settings an ensemble cannot be built from; the message names them."""


@dataclass(frozen=True)
class EnsembleOptions:
    """What ``ensembles/build.py`` was asked (see its ``--help``)."""

    experiment: str
    top: int = 4
    selection: str = "greedy"
    pool: int = 10
    init: int = 3
    bags: int = 1
    split: str | None = None  # "challenge": also write the challenge submission
    out: str | None = None
    seed: int = 0
    protocol: str = "p1"  # "p2": the members are retrained on train+valid+test for the challenge
    # Processes (astra.processes; ensembles/build.py gives the CPUs it may use). A script
    # calling build_ensemble with more than one needs the `if __name__ == "__main__":` guard.
    workers: int = 1


@dataclass(frozen=True)
class Candidate:
    trial_id: str
    folder: Path
    result: dict[str, Any]

    @property
    def valid_score(self) -> float:
        return float(self.result["valid_tight_paper"])


@dataclass
class Experiment:
    """What the ensemble needs of a search's experiment folder."""

    folder: Path
    base: ExperimentConfig
    roots: DataRoots
    candidates: list[Candidate] = field(default_factory=list)
    resources: dict[str, Any] | None = None  # one trial's, as the search recorded them (P2 retrains so)


def read_experiment(folder: str | Path) -> Experiment:
    """The experiment's base config, data roots and finished trials; named errors otherwise."""
    from astra.storage import Mirror, is_remote

    if is_remote(str(folder)):
        raise EnsembleError(
            f"{folder}: an experiment on object storage; ensembles read a local folder: run python "
            f"run_search.py --experiment '{folder}' --report, then pass the local copy it names "
            f"({Mirror.of(str(folder)).local})"
        )
    folder = Path(folder)
    definition = folder / "search.json"
    if not (folder / "results.parquet").is_file() or not definition.is_file():
        raise EnsembleError(
            f"{folder}: not a search experiment with results (no results.parquet or search.json); "
            "run python run_search.py --experiment DIR first"
        )
    try:
        recorded = json.loads(definition.read_text(encoding="utf-8"))
        base = config_from_dict(recorded["base_config"])
        data = recorded["data"]
        roots = DataRoots(
            labels=Path(data["labels"]), features=Path(data["features"]), audio=Path(data["audio"]),
            features_pattern=data["features_pattern"], audio_pattern=data["audio_pattern"],
        )  # fmt: skip
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise EnsembleError(f"{definition}: damaged ({error})") from None
    resources = recorded.get("resources")
    if resources is None and recorded.get("space") and Path(recorded["space"]).is_file():
        from astra.search.space import SpaceError, load_space

        try:  # a search recorded before its resources were: its space file says them
            resources = dataclasses.asdict(load_space(recorded["space"]).resources)
        except SpaceError:
            resources = None
    experiment = Experiment(folder, base, roots, resources=resources)
    for trial in sorted((folder / "trials").glob("*/result.json")):
        try:
            result = json.loads(trial.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise EnsembleError(f"{trial}: damaged ({error})") from None
        if "valid_tight_paper" in result:
            experiment.candidates.append(Candidate(trial.parent.name, trial.parent, result))
    if not experiment.candidates:
        raise EnsembleError(f"{folder}: no finished trial (trials/*/result.json) to build an ensemble from")
    return experiment


def split_labels(roots: DataRoots, split: str) -> dict[str, Annotations]:
    games = games_of_split(split, roots.labels)
    return {game: read_labels(roots.labels / game / LABELS_FILENAME) for game in games}


def build_ensemble(options: EnsembleOptions) -> dict[str, Any]:
    """Choose, average, search the windows, write and report (module docstring); returns ensemble.json."""
    if options.top < 1:
        raise EnsembleError(f"--top must be at least 1, got {options.top}")
    try:
        check_workers(options.workers)
    except WorkerError:
        raise EnsembleError(f"--workers must be at least 1, got {options.workers!r}") from None
    if options.pool < 1:
        raise EnsembleError(f"--pool must be at least 1, got {options.pool}")
    if options.selection not in SELECTIONS:
        raise EnsembleError(f"--selection must be one of {', '.join(SELECTIONS)}, got {options.selection!r}")
    if options.split not in (None, "challenge"):
        raise EnsembleError(
            f"--split may only be challenge (valid and test are always written), got {options.split!r}"
        )
    if options.protocol not in ("p1", "p2"):
        raise EnsembleError(f"--protocol must be p1 or p2, got {options.protocol!r}")
    if options.protocol == "p2" and options.split != "challenge":
        raise EnsembleError(
            "--protocol p2 retrains the members on train+valid+test, so only the challenge split is left "
            "to predict: add --split challenge"
        )
    started = time.time()
    experiment = read_experiment(options.experiment)
    base = experiment.base
    valid, test = base.data.valid_split, base.data.test_split
    out = (
        Path(options.out)
        if options.out
        else experiment.folder
        / "ensembles"
        / f"{options.selection}-top{options.top}{'-p2' if options.protocol == 'p2' else ''}"
    )
    pool = sorted(experiment.candidates, key=lambda c: -c.valid_score)[: options.pool]
    by_id = {c.trial_id: c for c in pool}
    labels = {split: split_labels(experiment.roots, split) for split in (valid, test)}
    members_of = {
        split: MemberOutputs(
            {c.trial_id: c.folder / split / "per_position" for c in pool}, list(labels[split]), split
        )
        for split in (valid, test)
    }

    from astra.search.windows import search_windows

    workers = options.workers  # processes (astra.processes): the same results for any number
    cache: dict[tuple[tuple[str, int], ...], float] = {}

    def score(ensembles: Sequence[Mapping[str, int]]) -> list[float]:
        keys = [tuple(sorted(e.items())) for e in ensembles]
        todo = [dict(k) for k in dict.fromkeys(keys) if k not in cache]
        if todo:
            for key, value in zip(
                [tuple(sorted(e.items())) for e in todo],
                score_ensembles(members_of[valid], labels[valid], todo, base.inference, workers=workers),
                strict=True,
            ):
                cache[key] = float(value.a_mAP)
        return [cache[k] for k in keys]

    log.info(
        "choosing up to %d members among %d trials on %s (%s)",
        options.top,
        len(pool),
        valid,
        options.selection,
    )
    try:
        selection = select(
            [c.trial_id for c in pool], [c.valid_score for c in pool], score, options.top,
            method=options.selection, init=options.init, bags=options.bags, seed=options.seed,
        )  # fmt: skip
    except SelectionError as error:
        raise EnsembleError(str(error)) from None
    weights = selection.weights
    log.info("members %s, valid tight %.4f", weights, selection.score)

    from astra.prediction import write_prediction

    # Read game by game: the window search keeps its own columns of the split, nothing else does.
    windows = search_windows(
        labels[valid],
        AveragedOutputs(members_of[valid], weights),
        base.inference,
        metric="tight",
        method="optuna",
        split=valid,
        seed=options.seed,
        workers=workers,
    )
    log.info(
        "windows searched on %s: tight %.4f (paper's windows %.4f)", valid, windows.a_map, windows.start_a_map
    )
    searched = replace(base, {"inference.nms_windows_seconds": list(windows.windows_seconds)}).inference
    source = {"experiment": str(experiment.folder), "members": dict(weights)}
    scores: dict[str, dict[str, Any]] = {}
    for split in (valid, test):
        write_prediction(
            out / split,
            split,
            AveragedOutputs(members_of[split], weights),  # each game averaged where it is written
            searched,
            source=source,
            overwrite=True,
            workers=workers,
        )
        log.info("%s written to %s", split, out / split)
        scores[split] = _figures(
            labels[split], out / split / "per_position", {"paper": base.inference, "searched": searched},
            workers=workers,
        )  # fmt: skip
        log.info("%s scored: tight %.4f with the searched windows", split, scores[split]["searched"]["tight"])
    challenge = None
    if options.split == "challenge":
        challenge = _challenge(
            experiment, weights, searched, out, source, protocol=options.protocol, workers=workers
        )
    trials = list(weights)
    record = {
        "experiment": str(experiment.folder),
        "selection": options.selection,
        "protocol": options.protocol,
        "top": options.top,
        "pool": [c.trial_id for c in pool],
        "members": weights,
        "history": selection.history,
        "valid_selection_score": selection.score,
        "evaluations": selection.evaluations,
        "windows": list(windows.windows_seconds),
        "scores": scores,
        "challenge": challenge,
        "correlation": correlations(members_of[valid], trials).round(4).tolist(),
        "per_class_ap_difference": _per_class_differences([by_id[t] for t in trials]),
        "seconds": time.time() - started,
        "out": str(out),
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / ENSEMBLE_NAME, "w") as f:
        json.dump(record, f, indent=1)
    from astra.ensemble.report import write_report

    write_report(out, record, [by_id[t] for t in trials], pool[0], valid, test)
    return record


def _figures(
    labels: Mapping[str, Annotations],
    per_position_dir: Path,
    inferences: Mapping[str, Any],
    *,
    workers: int = 1,
) -> dict[str, dict[str, Any]]:
    """Each inference's tight, loose, visible, not shown and per-class figures of the outputs.

    Each game is read once and decoded by every inference, in ``workers`` processes (the games
    shared among them); Soft-NMS is most of the work.
    """
    games = list(labels)
    decoded = map_games(_decode_games, games, per_position_dir, dict(inferences), workers=workers)
    figures = {}
    for name in inferences:
        # Games without outputs are left out: evaluate_dense names them.
        detections = {game: decoded[game][name] for game in games if game in decoded}
        tight = evaluate_dense(labels, detections, "tight")
        loose = evaluate_dense(labels, detections, "loose")
        figures[name] = {
            "tight": tight.a_mAP, "loose": loose.a_mAP, "visible": tight.a_mAP_visible,
            "unshown": tight.a_mAP_unshown, "per_class": [float(v) for v in tight.a_mAP_per_class],
        }  # fmt: skip
    return figures


def _decode_games(
    games: Sequence[str], per_position_dir: Path, inferences: Mapping[str, Any]
) -> dict[str, dict[str, list[np.ndarray]]]:
    """``{game: {inference name: [half 1, half 2] dense detections]}}`` of the games written."""
    outputs = _LazyOutputs(per_position_dir)
    decoded: dict[str, dict[str, list[np.ndarray]]] = {}
    for game in games:
        if game not in outputs:
            continue
        halves = outputs[game]
        if sorted(halves) != [1, 2]:
            raise EvaluationError(f"game {game!r}: expected outputs of halves 1 and 2, got {sorted(halves)}")
        decoded[game] = {
            name: [dense_detections(np.asarray(halves[half]), inference) for half in (1, 2)]
            for name, inference in inferences.items()
        }
    return decoded


def _per_class_differences(members: Sequence[Candidate]) -> list[list[float]]:
    """``[M, M]`` mean absolute difference of the members' per-class valid APs (paper's windows)."""
    per_class = np.asarray([m.result["valid_tight_per_class_paper"] for m in members], dtype=np.float64)
    return np.abs(per_class[:, None, :] - per_class[None, :, :]).mean(axis=2).round(4).tolist()


def _challenge(
    experiment: Experiment,
    weights: Mapping[str, int],
    searched: Any,
    out: Path,
    source: dict[str, Any],
    *,
    protocol: str = "p1",
    workers: int = 1,
) -> dict[str, Any]:
    """Members' challenge outputs (predicted first where missing; under P2, from the members
    retrained on train+valid+test), the ensemble's submission, and its score where the withheld
    labels are known."""
    split = "challenge"
    games = games_of_split(split, experiment.roots.labels)
    if not games:
        raise EnsembleError(f"{experiment.roots.labels}: the data has no challenge split")
    if protocol == "p2":
        folders = _retrain_members(experiment, weights, out, split)
    else:
        folders = {}
        for trial in weights:
            folder = experiment.folder / "trials" / trial / split
            if not all((folder / "per_position" / g / "per_position.npz").is_file() for g in games):
                _predict_member(experiment, trial, folder, split)
            folders[trial] = folder / "per_position"
    members = MemberOutputs(folders, games, split)
    from astra.prediction import write_prediction

    prediction = write_prediction(
        out / split, split, AveragedOutputs(members, weights), searched, source=source, overwrite=True,
        workers=workers,
    )  # fmt: skip
    result: dict[str, Any] = {
        "submission": str(prediction.out_dir / "predictions.zip"), "games": len(games), "protocol": protocol,
    }  # fmt: skip
    withheld = experiment.roots.labels / CHALLENGE_LABELS_DIRNAME
    if withheld.is_dir():
        labels = {g: read_labels(withheld / g / LABELS_FILENAME) for g in games}
        figures = _figures(labels, out / split / "per_position", {"searched": searched}, workers=workers)
        result["withheld_labels"] = figures["searched"]
    return result


def _predict_member(experiment: Experiment, trial: str, folder: Path, split: str) -> None:
    """A member's best checkpoint predicts ``split`` into ``folder`` (its trial folder)."""
    from astra.ensemble.p2 import predict_split_to

    best = experiment.folder / "trials" / trial / "run" / "checkpoints" / "best.pt"
    if not best.is_file():
        raise EnsembleError(f"trial {trial}: {best} is missing; its {split} outputs cannot be predicted")
    log.info("trial %s: predicting %s with %s", trial, split, best)
    predict_split_to(best, experiment.roots, folder, split, source={"trial": trial})


def _retrain_members(
    experiment: Experiment, weights: Mapping[str, int], out: Path, split: str
) -> dict[str, Path]:
    """Protocol P2 (:mod:`astra.ensemble.p2`): each member retrained on train+valid+test, with the
    search space's resources per member, then predicting ``split``; their per-position folders."""
    from astra.ensemble.p2 import P2Error, plan_retraining, retrain
    from astra.search.space import Resources

    by_id = {c.trial_id: c for c in experiment.candidates}
    if experiment.resources is None:
        raise EnsembleError(
            f"{experiment.folder / 'search.json'}: records no resources per trial, and its space file is "
            "gone; run python run_search.py --experiment DIR once more to record them"
        )
    try:
        resources = Resources(**experiment.resources)
    except TypeError as error:
        raise EnsembleError(f"{experiment.folder / 'search.json'}: resources: {error}") from None
    log.info(
        "P2: %d worker(s) x (%g CPU, %g GPU) per member, as the search's trials",
        resources.workers, resources.cpus_per_worker, resources.gpus_per_worker,
    )  # fmt: skip
    try:
        retrainings = plan_retraining([(t, by_id[t].folder, by_id[t].result) for t in weights], out)
        return retrain(
            retrainings, experiment.roots, split, workers=resources.workers,
            cpus_per_worker=resources.cpus_per_worker, gpus_per_worker=resources.gpus_per_worker,
        )  # fmt: skip
    except P2Error as error:
        raise EnsembleError(str(error)) from None


class _LazyOutputs(Mapping[str, dict[int, np.ndarray]]):
    """A prediction folder's per-position outputs, read when asked for (one game in memory)."""

    def __init__(self, folder: Path) -> None:
        from astra import per_position

        self.folder = folder
        self._games = per_position.list_games(folder)

    def __getitem__(self, game: str) -> dict[int, np.ndarray]:
        from astra import per_position

        if game not in self._games:
            raise KeyError(game)
        return per_position.read_game(self.folder, game)

    def __iter__(self) -> Iterator[str]:
        return iter(self._games)

    def __len__(self) -> int:
        return len(self._games)
