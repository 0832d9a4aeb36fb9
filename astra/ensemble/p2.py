"""Protocol P2 for an ensemble's members: each retrained on train+valid+test, then predicting a split.

The paper's challenge entries are trained under P2: once P1 (train on train, select on valid)
has fixed a configuration and its number of epochs, the same configuration is trained again on
every labelled game, for the epochs its P1 run chose, with no early stopping (there is no
held-out split left: ``data.valid_split: ''``, so ``best.pt`` holds the last epoch). Here each
member of an ensemble is one search trial: its own config (``trials/<id>/run/config.yaml``) and
its best epoch (``result.json``). The members train side by side as Ray Tune trials, with the
search space's resources per trial (a cluster runs them in parallel), each into
``OUT/p2/<trial>/run``, and then predict the split (``OUT/p2/<trial>/<split>/per_position``).

Resumable: a member whose predictions are done is not trained again; one interrupted resumes
from its ``last.pt``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra.config import ExperimentConfig, config_from_dict, load_config, replace
from astra.data.dataset import DataRoots
from astra.files import atomic_write

log = logging.getLogger(__name__)

P2_DIRNAME = "p2"
DONE_NAME = "p2.json"  # in a member's folder once it has trained and predicted
ERROR_NAME = "error.txt"  # a member's error that a retry would meet again (cleared by the next command)
TUNE_NAME = "tune"


class P2Error(ValueError):
    """A member that cannot be retrained under P2; the message names the trial and the file."""


@dataclass(frozen=True)
class Retraining:
    """One member to retrain: its trial, its P2 config (as a plain dict) and its folder."""

    trial_id: str
    config: dict[str, Any]
    folder: Path


@dataclass(frozen=True)
class P2Context:
    """What every retraining trial needs, sent once to the workers."""

    retrainings: dict[str, Retraining]
    roots: DataRoots
    split: str
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


def p2_config(config: ExperimentConfig, epochs: int) -> ExperimentConfig:
    """``config`` trained under P2: on its train, valid and test splits together, for ``epochs``
    epochs, with nothing held out (no validation, no early stopping)."""
    if epochs < 1:
        raise P2Error(f"P2 needs at least 1 epoch, got {epochs}")
    data = config.data
    parts: list[str] = []
    for split in (data.train_split, data.valid_split, data.test_split):
        parts += [part for part in split.split("+") if part and part not in parts]
    return replace(
        config,
        {
            "data.train_split": "+".join(parts),
            "data.valid_split": "",
            "train.epochs": epochs,
            "train.patience_epochs": epochs,
        },
    )


def plan_retraining(trials: Sequence[tuple[str, Path, Mapping[str, Any]]], out: Path) -> list[Retraining]:
    """The retraining of each ``(trial id, trial folder, result.json)``: the trial's own config for
    the epochs of its best validation epoch."""
    retrainings = []
    for trial_id, folder, result in trials:
        path = folder / "run" / "config.yaml"
        if not path.is_file():
            raise P2Error(f"trial {trial_id}: {path} is missing; its configuration cannot be retrained")
        if "best_epoch" not in result:
            raise P2Error(f"trial {trial_id}: {folder / 'result.json'} has no best_epoch to retrain for")
        config = p2_config(load_config([path]), int(result["best_epoch"]))
        retrainings.append(Retraining(trial_id, config.to_dict(), out / P2_DIRNAME / trial_id))
    return retrainings


def retrain(
    retrainings: Sequence[Retraining],
    roots: DataRoots,
    split: str,
    *,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
) -> dict[str, Path]:
    """Train the members not yet done (Ray Tune, one trial each) and return each member's
    ``per_position`` folder of ``split``. Raises :class:`P2Error` naming each member that failed."""
    todo = [r for r in retrainings if not (r.folder / DONE_NAME).is_file()]
    for r in todo:  # each command tries again what an earlier one failed
        (r.folder / ERROR_NAME).unlink(missing_ok=True)
    if todo:
        log.info("P2: retraining %d member(s) on train+valid+test: %s", len(todo), [r.trial_id for r in todo])
        context = P2Context(
            {r.trial_id: r for r in retrainings}, roots, split, workers, cpus_per_worker, gpus_per_worker
        )
        _tune(context, todo)
    failed = [r for r in retrainings if not (r.folder / DONE_NAME).is_file()]
    if failed:
        reasons = []
        for r in failed:
            error = r.folder / ERROR_NAME
            reasons.append(
                f"trial {r.trial_id}: "
                + (error.read_text(encoding="utf-8").strip() if error.is_file() else "did not finish")
            )
        raise P2Error("P2 retraining failed: " + "; ".join(reasons) + " (run the command again to resume)")
    return {r.trial_id: r.folder / split / "per_position" for r in retrainings}


def retrain_member(params: Mapping[str, Any], context: P2Context) -> None:
    """The Ray Tune function trainable: ``params["trial"]``, one member's trial id."""
    logging.basicConfig(  # a Ray worker's root logger has no handler
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    retraining = context.retrainings[str(params["trial"])]
    failed = retraining.folder / ERROR_NAME
    if failed.is_file():  # an error this command met before: a retry would meet it again
        raise P2Error(failed.read_text(encoding="utf-8").strip())
    try:
        _retrain_member(retraining, context)
    except ValueError as error:  # config, data and checkpoint errors: a retry would meet them again
        retraining.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(failed, "w") as f:
            f.write(f"{type(error).__name__}: {error}\n")
        raise


def _retrain_member(retraining: Retraining, context: P2Context) -> None:
    import ray.tune

    started = time.time()
    config = config_from_dict(retraining.config)
    run = retraining.folder / "run"
    if context.workers == 1:
        import torch

        from astra.training.loop import fit

        torch.set_num_threads(max(1, int(context.cpus_per_worker)))
        fit(config, context.roots, run, progress=False, reporter=lambda m, _: ray.tune.report(dict(m)))
        predict_split_to(run / "checkpoints" / "best.pt", context.roots, retraining.folder / context.split,
                         context.split, source={"trial": retraining.trial_id, "protocol": "p2"})  # fmt: skip
    else:
        import ray
        from ray.tune.integration.ray_train import TuneReportCallback
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from astra.training.ray_train import train_with_ray

        train_with_ray(
            config, context.roots, run, num_workers=context.workers, use_gpu=context.gpus_per_worker > 0,
            name=f"p2-{retraining.trial_id}", storage_path=str(retraining.folder / "ray"),
            callbacks=[TuneReportCallback()], cpus_per_worker=context.cpus_per_worker,
        )  # fmt: skip
        # Predicting on a worker of the members' own kind, out of the trial's placement group.
        task = ray.remote(num_cpus=context.cpus_per_worker, num_gpus=context.gpus_per_worker)(
            predict_split_to
        )
        outside = PlacementGroupSchedulingStrategy(placement_group=None)
        ray.get(
            task.options(scheduling_strategy=outside).remote(
                run / "checkpoints" / "best.pt", context.roots, retraining.folder / context.split,
                context.split, source={"trial": retraining.trial_id, "protocol": "p2"},
            )
        )  # fmt: skip
    record = {
        "trial": retraining.trial_id,
        "epochs": config.train.epochs,
        "train_split": config.data.train_split,
        "split": context.split,
        "seconds": time.time() - started,
    }
    with atomic_write(retraining.folder / DONE_NAME, "w") as f:
        json.dump(record, f, indent=1)


def predict_split_to(
    checkpoint_path: Path, roots: DataRoots, folder: Path, split: str, *, source: dict[str, Any]
) -> None:
    """The checkpoint's per-position outputs (and decoded predictions) of ``split``, into ``folder``."""
    from astra.data.dataset import load_split
    from astra.inference import load_for_inference, predict_games
    from astra.prediction import write_prediction

    model, config = load_for_inference(checkpoint_path)
    halves = load_split(roots, split, with_audio=config.model.use_audio, require_labels=False, progress=False)
    device = next(model.parameters()).device
    write_prediction(
        folder, split, predict_games(model, halves, config, device=device), config.inference,
        source={"checkpoint": str(checkpoint_path), **source}, overwrite=True,
    )  # fmt: skip


def _tune(context: P2Context, todo: Sequence[Retraining]) -> None:
    import ray
    from ray import tune

    from astra.search.space import TRAIN_DRIVER_CPUS
    from astra.training.ray_train import connect_ray

    resources = (
        {"cpu": context.cpus_per_worker, "gpu": context.gpus_per_worker}
        if context.workers == 1
        else {"cpu": TRAIN_DRIVER_CPUS}  # the trial's own process; its Ray Train workers ask for theirs
    )
    trainable = tune.with_resources(tune.with_parameters(retrain_member, context=context), resources)
    storage = todo[0].folder.parent.resolve()
    owns_ray = connect_ray()
    try:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([r.trial_id for r in todo])},
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(
                name=TUNE_NAME,
                storage_path=str(storage),
                # A killed member's process is tried again: it resumes from its last.pt.
                failure_config=tune.FailureConfig(max_failures=2),
                verbose=1,
            ),
        )
        tuner.fit()
    finally:
        if owns_ray:
            ray.shutdown()
