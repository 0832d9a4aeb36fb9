"""One trial of a search: train a proposed configuration, then predict, search its windows, score.

A trial's folder, ``EXPERIMENT/trials/<trial id>/``::

    params.json            what Optuna proposed (as the config takes it)
    run/                   the run folder of ``astra train`` (run.json, checkpoints/{last,best}.pt, ...)
    valid/, test/          prediction folders of the best checkpoint (per_position/, predictions.zip, ...)
    windows.yaml           the per-class Soft-NMS windows searched on valid/ (never on test/)
    result.json            the trial's figures, written last: its presence means the trial finished

Training reports to Ray Tune once per validated epoch (epochs without validation carry no fresh
score, so they never reach ASHA or Optuna). With one worker per trial the trial trains in its
own process (:func:`astra.training.loop.fit`); with more, it launches a TorchTrainer
(:func:`astra.training.ray_train.train_with_ray`) whose rank 0 reports through Ray Train. Both
run the same ``fit`` on the same config and give the same figures. A trial restarted after a
fault, or by a resumed search, resumes from ``run/checkpoints/last.pt``; one whose
``result.json`` exists reports its figures again and does nothing else.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra.config import ExperimentConfig, config_from_dict, replace
from astra.data.dataset import DataRoots
from astra.files import atomic_write
from astra.search.space import SearchSpace, WindowSettings
from astra.storage import Mirror

log = logging.getLogger(__name__)

# What ASHA and Optuna optimise: the best validated tight a-mAP so far (monotone over a trial).
METRIC = "best_valid_tight_a_map"
RESULT_NAME = "result.json"
PARAMS_NAME = "params.json"
ERROR_NAME = "error.json"
# Errors that a retry meets again: recorded in error.json, and the trial is not retried.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (ValueError,)


class TrialError(RuntimeError):
    """A trial that failed with a deterministic error (its error.json says which): not retried."""


class TrialFailure(RuntimeError):
    """A trial that failed with another error (the text holds its type, message and traceback):
    Tune retries it from its last checkpoint."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a search needs, sent once to the workers."""

    experiment: Path
    space: SearchSpace
    base: dict[str, Any]  # the base config as a plain dict
    roots: DataRoots
    mirror: Mirror | None = None  # an experiment on object storage (astra.storage)
    data_mirrors: tuple[Mirror, ...] = ()  # data on object storage: brought to the trial's node

    def trial_dir(self, trial_id: str) -> Path:
        return self.experiment / "trials" / trial_id


def run_trial(params: Mapping[str, Any], context: TrialContext) -> None:
    """The Ray Tune function trainable (with ``tune.with_parameters``)."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    _configure_logging()
    trial_dir = context.trial_dir(trial_id)
    own = f"trials/{trial_id}"
    if context.mirror is not None:  # on another node, or after it: what the trial left so far
        context.mirror.pull(own)
    for data in context.data_mirrors:  # nothing to copy where the node has it already
        data.pull()
    failed = trial_dir / ERROR_NAME
    if failed.is_file():  # a deterministic error: a retry would meet it again
        raise TrialError(json.loads(failed.read_text(encoding="utf-8"))["error"])
    try:
        _run_trial(params, context, trial_id, trial_dir)
    except DETERMINISTIC_ERRORS as error:
        # A config that cannot train, a diverging loss, bad data: recorded, and the search goes on.
        message = f"{type(error).__name__}: {error}"
        with atomic_write(failed, "w") as f:
            json.dump({"error": message}, f)
        raise TrialError(f"{message}\n\n{traceback.format_exc()}") from None
    except Exception as error:
        # Anything else is retried by Tune from the last checkpoint. Sent to the driver as this
        # module's own error, the traceback in its text: the driver must unpickle what a trial
        # raises, and an error it cannot rebuild (a class of a module it never imported, an
        # exception with arguments of its own) ends the whole search instead of one trial.
        raise TrialFailure(f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}") from None
    finally:
        if context.mirror is not None:
            context.mirror.push(own)


def _run_trial(params: Mapping[str, Any], context: TrialContext, trial_id: str, trial_dir: Path) -> None:
    import ray.tune

    started = time.time()
    done = trial_dir / RESULT_NAME
    if done.is_file():  # a finished trial restored by a resumed search: report again, nothing else
        ray.tune.report(json.loads(done.read_text(encoding="utf-8"))["last_report"])
        return
    if not (trial_dir / PARAMS_NAME).is_file():  # first: a drawn config that cannot train is shown
        proposed = {path: context.space.parameters[path].decode(v) for path, v in params.items()}
        with atomic_write(trial_dir / PARAMS_NAME, "w") as f:
            json.dump({"created": time.time(), "params": proposed}, f, indent=1)
    config = context.space.trial_config(config_from_dict(context.base), params)
    last_report: dict[str, float] = {}

    def report(metrics: dict[str, float], _: Path | None) -> None:
        if context.mirror is not None:  # the epoch's checkpoints, for a restart on another node
            context.mirror.push(f"trials/{trial_id}")
        if metrics.get("validated", 1.0):  # a stale score must not reach ASHA as a fresh one
            last_report.clear()
            last_report.update(metrics)
            ray.tune.report(dict(metrics))

    resources = context.space.resources
    if resources.workers == 1:
        import torch

        from astra.training.loop import fit

        torch.set_num_threads(resources.worker_threads)
        fit(config, context.roots, trial_dir / "run", reporter=report, progress=False)
        result = finish_trial(
            trial_dir, context.roots, context.space.windows, trial_id=trial_id,
            cpus=resources.worker_threads,
        )  # fmt: skip
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        from astra.training.ray_train import train_with_ray

        outcome = train_with_ray(
            config, context.roots, trial_dir / "run", num_workers=resources.workers,
            use_gpu=resources.use_gpu, name=trial_id,
            storage_path=(
                context.mirror.remote(f"trials/{trial_id}/ray") if context.mirror else str(trial_dir / "ray")
            ),
            callbacks=[TuneReportCallback()], report_unvalidated=False,
            cpus_per_worker=resources.cpus_per_worker,
        )  # fmt: skip
        last_report.update(outcome.metrics or {})
        result = _finish_remotely(trial_dir, context, trial_id)
    result["last_report"] = dict(last_report)
    result["wall_seconds"] = time.time() - started + result.get("wall_seconds", 0.0)
    with atomic_write(done, "w") as f:
        json.dump(result, f, indent=1)


def finish_trial(
    trial_dir: Path,
    roots: DataRoots,
    windows: WindowSettings,
    *,
    trial_id: str = "",
    device: Any = None,
    cpus: int = 1,
) -> dict[str, Any]:
    """Predict valid and test with the trial's best checkpoint, search the windows on valid, score.

    Returns the figures of ``result.json`` (the windows are chosen on valid only; test is scored
    with the paper's windows and with the searched ones, as they fall). The window search runs
    its classes in ``cpus`` processes.
    """
    from astra.data.dataset import load_split
    from astra.inference import game_annotations, group_by_game, load_for_inference, predict_games
    from astra.prediction import write_prediction
    from astra.training.checkpoint import load

    best = trial_dir / "run" / "checkpoints" / "best.pt"
    model, config = load_for_inference(best, device=device)
    # The best epoch's figures come from best.pt; the epochs run, from last.pt.
    last = load(trial_dir / "run" / "checkpoints" / "last.pt", mmap=True)["training"]
    record = {**load(best, mmap=True)["training"], "epoch": last["epoch"]}
    device = next(model.parameters()).device
    labels, outputs = {}, {}
    for split in (config.data.valid_split, config.data.test_split):
        halves = load_split(
            roots, split, with_audio=config.model.use_audio, require_labels=True, progress=False
        )
        write_prediction(
            trial_dir / split, split, predict_games(model, halves, config, device=device), config.inference,
            source={"checkpoint": str(best), "trial": trial_id}, overwrite=True,
        )  # fmt: skip
        labels[split] = {game: game_annotations(hs) for game, hs in group_by_game(halves).items()}
        outputs[split] = _read_outputs(trial_dir / split, labels[split])
    return score_trial(labels, outputs, config, windows, trial_dir, record, cpus=cpus)


def score_trial(
    labels: Mapping[str, Any],
    outputs: Mapping[str, Any],
    config: ExperimentConfig,
    windows: WindowSettings,
    trial_dir: Path,
    record: Mapping[str, Any],
    *,
    cpus: int = 1,
) -> dict[str, Any]:
    """The trial's figures from its valid and test outputs (see :func:`finish_trial`)."""
    from astra.evaluation.outputs import score_outputs
    from astra.search.windows import search_windows, write_windows

    valid, test = config.data.valid_split, config.data.test_split
    result: dict[str, Any] = {
        "epochs_run": int(record["epoch"]) + 1,
        "best_epoch": int(record["best_epoch"]) + 1,
        "best_valid_tight_a_map": float(record["best"]),
        "paper_windows": list(config.inference.nms_windows_seconds),
    }
    inferences = {"paper": config.inference}
    if windows.search:
        search = search_windows(
            labels[valid], outputs[valid], config.inference, metric="tight", method=windows.method,
            trials_per_class=windows.trials_per_class, low_seconds=windows.low_seconds,
            high_seconds=windows.high_seconds, split=valid, workers=cpus,
        )  # fmt: skip
        write_windows(trial_dir / "windows.yaml", search)
        result["windows"] = list(search.windows_seconds)
        inferences["searched"] = replace(
            config, {"inference.nms_windows_seconds": list(search.windows_seconds)}
        ).inference
    for name, inference in inferences.items():
        for split, role in ((valid, "valid"), (test, "test")):
            for metric in ("tight", "loose"):
                score = score_outputs(labels[split], outputs[split], inference, metric)
                result[f"{role}_{metric}_{name}"] = float(score.a_mAP)
                if metric == "tight":
                    result[f"{role}_tight_per_class_{name}"] = [float(v) for v in score.a_mAP_per_class]
                    result[f"{role}_tight_visible_{name}"] = float(score.a_mAP_visible)
                    result[f"{role}_tight_unshown_{name}"] = float(score.a_mAP_unshown)
    return result


def _read_outputs(prediction_dir: Path, labels: Mapping[str, Any]) -> dict[str, dict[int, Any]]:
    """The per-position outputs as written (float16, what ensembles read), for the games of ``labels``."""
    from astra import per_position

    return {game: per_position.read_game(prediction_dir / "per_position", game) for game in labels}


def _finish_remotely(trial_dir: Path, context: TrialContext, trial_id: str) -> dict[str, Any]:
    """Post-process on a worker with the trial's own resources (a GPU where trials have one)."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    resources = context.space.resources
    task = ray.remote(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker)(finish_trial)
    # Out of the trial's placement group (its one bundle is the trial's own 0.01 CPU): on the
    # resources its Ray Train workers have just given back.
    outside = PlacementGroupSchedulingStrategy(placement_group=None)
    return ray.get(
        task.options(scheduling_strategy=outside).remote(
            trial_dir, context.roots, context.space.windows, trial_id=trial_id, cpus=resources.worker_threads
        )
    )


def _configure_logging() -> None:
    # A Ray worker's root logger has no handler: without one, the trial's lines go nowhere.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
