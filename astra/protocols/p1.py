"""Protocol P1: every configuration trained with seeds 0..S-1, selected on valid, tested as it falls.

The paper reports every ablation as the mean over 5 seeds (docs/protocols.md). ``astra p1`` runs
one Ray Tune trial per (row, seed): a row is the base configuration (the ``--config`` files and
the ``section.key=value`` settings), or the base with one ``--ablations`` file more. On a cluster
the trials run in parallel; on one machine they share it, each holding the CPUs and GPUs of one
run. A trial trains with ``train.seed`` set to its seed (in its own process with
:func:`astra.training.loop.fit`, or with ``--workers N`` on N Ray Train workers), keeps the best
validated epoch (``best.pt``), predicts valid and test with it and scores them with the paper's
Soft-NMS windows (:func:`astra.search.trial.finish_trial`: the same code as a search trial), then
scores the test split on the bootstrap's resampled games (:mod:`astra.protocols.statistics`).

The output folder ``OUT``::

    p1.json                        what defines the protocol: rows (files, configs), data
    runs/<row>/seed<k>/run/        the run folder of ``astra train`` (run.json, checkpoints, ...)
    runs/<row>/seed<k>/valid/      prediction folders of best.pt (per_position/, predictions.zip)
    runs/<row>/seed<k>/test/
    runs/<row>/seed<k>/bootstrap.json   the run's test tight a-mAP on each resample of the games
    runs/<row>/seed<k>/result.json      the run's figures, written last: its presence means done
    runs/<row>/seed<k>/error.json       the error of a run that cannot train (not retried)
    tune/                          Ray Tune's files
    p1.parquet, report.md, plots/  the report (astra.protocols.report)

Running the same command again keeps what is done: a run with ``result.json`` is not trained
again (no Ray starts when every run is done), a run cut short resumes from its ``last.pt``, and
a raised ``--seeds`` or a new ablation row trains only what it adds. A row whose configuration
differs from the one recorded under its name, another base row or other data is refused before
anything runs, naming what differs. A bootstrap asked with other settings than a run's
``bootstrap.json`` is recomputed from the run's test outputs when the report is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra.config import (
    SPEED_SETTINGS,
    ExperimentConfig,
    config_from_dict,
    flatten,
    load_config,
    parse_overrides,
    replace,
)
from astra.data.dataset import DataRoots
from astra.files import atomic_write
from astra.search.trial import DETERMINISTIC_ERRORS, ERROR_NAME, RESULT_NAME, TrialError

DEFINITION_NAME = "p1.json"
RUNS_DIR = "runs"
TUNE_NAME = "tune"
BOOTSTRAP_NAME = "bootstrap.json"
BASE_NAME = "base"
# Settings that may differ between two invocations on one OUT: they change nothing a run computes.
FREE_SETTINGS: tuple[str, ...] = ("train.loader_workers", *SPEED_SETTINGS)


class P1Error(ValueError):
    """A P1 that cannot run as asked; the message names the option, file or value at fault."""


@dataclass(frozen=True)
class Row:
    """One configuration of the report: its name (a folder name), the files it stacks, its config."""

    name: str
    files: tuple[str, ...]
    config: ExperimentConfig


@dataclass(frozen=True)
class Resources:
    """What one run holds: ``workers`` Ray Train workers (1: the trial's own process), each with
    ``cpus_per_worker`` CPUs and, with ``use_gpu``, one GPU."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False

    @property
    def trial_resources(self) -> dict[str, float]:
        if self.workers == 1:
            return {"cpu": self.cpus_per_worker, "gpu": 1.0 if self.use_gpu else 0.0}
        # The trial's own process only waits for its Ray Train workers, which ask for their own.
        return {"cpu": 0.01}

    @property
    def gpus_per_worker(self) -> float:
        return 1.0 if self.use_gpu else 0.0


@dataclass(frozen=True)
class Bootstrap:
    """Resamples of the test games (with replacement) and the seed that draws them."""

    resamples: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Plan:
    """A P1 ready to run: its rows (the first is the reference), seeds, data and where it goes."""

    rows: tuple[Row, ...]
    seeds: int
    roots: DataRoots
    out: Path
    resources: Resources
    bootstrap: Bootstrap
    overrides: tuple[str, ...]

    def run_dir(self, row: str, seed: int) -> Path:
        return run_dir(self.out, row, seed)

    def runs(self) -> list[tuple[str, int]]:
        """Every (row, seed) of the plan, rows in order, then seeds."""
        return [(row.name, seed) for row in self.rows for seed in range(self.seeds)]


def run_dir(out: Path, row: str, seed: int) -> Path:
    """The folder of one run of ``OUT`` (see the module docstring)."""
    return Path(out) / RUNS_DIR / row / f"seed{seed}"


def seed_config(config: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The configuration of seed ``seed`` of a row."""
    return replace(config, {"train.seed": seed})


def make_plan(
    *,
    configs: Sequence[str | Path],
    ablations: Sequence[str | Path],
    seeds: int,
    data: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
    features_root: str | Path | None = None,
    audio_root: str | Path | None = None,
    base_name: str = BASE_NAME,
    resources: Resources = Resources(),
    bootstrap: Bootstrap = Bootstrap(),
) -> Plan:
    """Load and check everything a P1 needs, without starting Ray or training.

    Raises :class:`P1Error` (or the config's and the splits' own errors) naming what is wrong:
    ``seeds`` < 1, a missing file, two rows of one name, ``train.seed`` among the settings,
    data without the rows' splits, rows that test on different splits.
    """
    if seeds < 1:
        raise P1Error(f"--seeds must be at least 1, got {seeds}")
    if resources.workers < 1:
        raise P1Error(f"--workers must be at least 1, got {resources.workers}")
    if resources.cpus_per_worker <= 0:
        raise P1Error(f"--cpus-per-worker must be above 0, got {resources.cpus_per_worker:g}")
    if bootstrap.resamples < 1:
        raise P1Error(f"--bootstrap must be at least 1 resample, got {bootstrap.resamples}")
    if "train.seed" in parse_overrides(overrides):
        raise P1Error("train.seed is set by P1 itself (seeds 0 to --seeds - 1): leave it out of the settings")
    for option, paths in (("--config", configs), ("--ablations", ablations)):
        for path in paths:
            if not Path(path).is_file():
                hint = (
                    " (section.key=value settings go before --ablations, or after a --)"
                    if "=" in str(path)
                    else ""
                )
                raise P1Error(f"{option} {path}: no such file{hint}")
    names = [base_name, *(Path(path).stem for path in ablations)]
    for name in names:
        if not name or name.startswith(".") or "/" in name or name != name.strip():
            raise P1Error(f"row name {name!r} cannot be a folder name: choose another (--name, file names)")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise P1Error(
            f"two rows are named {duplicates[0]!r} (a row is named by its ablation file's name, the base "
            f"by --name, {base_name!r}): rename a file, or give the base another --name"
        )
    rows = [Row(base_name, tuple(str(p) for p in configs), load_config(configs, overrides))]
    for name, path in zip(names[1:], ablations, strict=True):
        files = (*map(str, configs), str(path))
        rows.append(Row(name, files, load_config(files, overrides)))
    roots = DataRoots.from_config(
        data, rows[0].config.data, features_root=features_root, audio_root=audio_root
    )
    _check_data(rows, roots, Path(data))
    return Plan(tuple(rows), seeds, roots, Path(out), resources, bootstrap, tuple(overrides))


def run_p1(plan: Plan) -> int:
    """Train what is missing, then write the report; returns 0 when every run finished, else 1."""
    from astra.protocols import report

    definition = check_definition(plan)
    todo = [
        (row, seed)
        for row, seed in plan.runs()
        if not (plan.run_dir(row, seed) / RESULT_NAME).is_file()
        and not (plan.run_dir(row, seed) / ERROR_NAME).is_file()
    ]
    _check_run_folders(plan, todo)
    with atomic_write(plan.out / DEFINITION_NAME, "w") as f:
        json.dump(definition, f, indent=1)
    done = len(plan.runs()) - len(todo)
    if todo:
        print(f"P1: {len(todo)} runs to train, {done} already done or failed, in {plan.out}")
        _tune(plan, todo)
    else:
        print(f"P1: all {done} runs are done or failed in {plan.out}; writing the report")
    records = report.run_records(plan.out, [row.name for row in plan.rows], plan.seeds)
    scores = bootstrap_scores(plan, records)
    outcome = report.write_report(
        plan.out,
        records,
        scores,
        rows=[(row.name, row.files) for row in plan.rows],
        seeds=plan.seeds,
        overrides=plan.overrides,
        data=str(plan.roots.labels),
        bootstrap=(plan.bootstrap.resamples, plan.bootstrap.seed),
    )
    print(outcome.summary)
    return 0 if outcome.all_finished else 1


def check_definition(plan: Plan) -> dict[str, Any]:
    """What ``OUT/p1.json`` is to hold for this plan; refuses an OUT that holds another P1.

    Rows are compared by name: a recorded row whose configuration is not this one, another base
    row or other data roots are refused. Rows added since join the recorded ones; rows left out
    stay on disk and in the definition.
    """
    from astra.training.run_folder import check_writable

    try:
        check_writable(plan.out)
    except ValueError as error:
        raise P1Error(str(error)) from None
    data = {
        key: str(Path(value).resolve()) if isinstance(value, Path) else value
        for key, value in dataclasses.asdict(plan.roots).items()
    }
    rows = {row.name: {"files": list(row.files), "config": row.config.to_dict()} for row in plan.rows}
    recorded = _read_definition(plan.out)
    if recorded is not None:
        differences = []
        if recorded["base"] != plan.rows[0].name:
            differences.append(f"its base row is {recorded['base']!r}, here {plan.rows[0].name!r}")
        for name, row in rows.items():
            if name in recorded["rows"]:
                differences += [
                    f"row {name!r}: {difference}"
                    for difference in config_differences(recorded["rows"][name]["config"], row["config"])
                ]
        differences += [
            f"data {key}: {recorded['data'].get(key)!r} there, {value!r} here"
            for key, value in data.items()
            if recorded["data"].get(key) != value
        ]
        if differences:
            raise P1Error(
                f"{plan.out} holds another P1 ({'; '.join(differences[:5])}"
                + (f"; {len(differences) - 5} more" if len(differences) > 5 else "")
                + "): use another --out, or the same configurations and data to continue it"
            )
        rows = {**recorded["rows"], **rows}
    return {"base": plan.rows[0].name, "rows": rows, "data": data}


def config_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two configs (as ``to_dict`` gives them), in words, by dotted path."""
    old, new = flatten(recorded), flatten(current)
    return [
        f"{key}: {old.get(key, '(absent)')!r} there, {new.get(key, '(absent)')!r} here"
        for key in sorted(set(old) | set(new))
        if key not in FREE_SETTINGS and old.get(key) != new.get(key)
    ]


@dataclass(frozen=True)
class RunContext:
    """What every trial needs, sent once to the workers."""

    out: Path
    configs: dict[str, dict[str, Any]]  # row name -> config as a plain dict
    roots: DataRoots
    resources: Resources
    bootstrap: Bootstrap


def run_seed(params: Mapping[str, Any], context: RunContext) -> None:
    """The Ray Tune function trainable (with ``tune.with_parameters``): ``params["run"]``, one
    ``{"row": name, "seed": k}``."""
    logging.basicConfig(  # a Ray worker's root logger has no handler
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    row, seed = str(params["run"]["row"]), int(params["run"]["seed"])
    folder = run_dir(context.out, row, seed)
    failed = folder / ERROR_NAME
    if failed.is_file():  # a deterministic error: a retry would meet it again
        raise TrialError(json.loads(failed.read_text(encoding="utf-8"))["error"])
    try:
        _run_seed(row, seed, folder, context)
    except DETERMINISTIC_ERRORS as error:
        with atomic_write(failed, "w") as f:
            json.dump({"error": f"{type(error).__name__}: {error}"}, f)
        raise


def finish_run(
    folder: Path, config: ExperimentConfig, roots: DataRoots, bootstrap: Bootstrap, *, name: str = ""
) -> dict[str, Any]:
    """Predict valid and test with the run's best.pt, score them (paper windows), bootstrap test.

    Returns the figures of ``result.json`` (those of :func:`astra.search.trial.finish_trial`).
    """
    from astra.search.space import WindowSettings
    from astra.search.trial import finish_trial

    result = finish_trial(folder, roots, WindowSettings(search=False), trial_id=name)
    run_bootstrap(folder, config, roots, bootstrap)
    return result


def run_bootstrap(folder: Path, config: ExperimentConfig, roots: DataRoots, bootstrap: Bootstrap) -> Any:
    """``[resamples]`` the run's test tight a-mAP on each resample of the test games.

    Read from the run's ``bootstrap.json`` when it was drawn with these settings on these games;
    otherwise computed from the run's test outputs (decoded once) and written there.
    """
    import numpy as np

    from astra.data.splits import games_of_split
    from astra.postprocess.decode import dense_detections
    from astra.protocols.statistics import bootstrap_indices, resampled_a_maps
    from astra.search.windows import read_split_outputs

    split = config.data.test_split
    path = folder / BOOTSTRAP_NAME
    games = games_of_split(split, roots.labels)
    settings = {"resamples": bootstrap.resamples, "seed": bootstrap.seed, "metric": "tight", "games": games}
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if {key: saved.get(key) for key in settings} == settings:
            return np.asarray(saved["scores"], dtype=np.float64)
    labels, outputs = read_split_outputs(folder / split / "per_position", roots.labels, split)
    detections = {
        game: [dense_detections(outputs[game][half], config.inference) for half in (1, 2)] for game in games
    }
    indices = bootstrap_indices(len(games), bootstrap.resamples, bootstrap.seed)
    scores = resampled_a_maps(labels, detections, games, indices)
    with atomic_write(path, "w") as f:
        json.dump({**settings, "scores": scores.tolist()}, f)
    return scores


def bootstrap_scores(plan: Plan, records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], Any]:
    """The bootstrap scores of every finished run, keyed by (row, seed); missing ones are computed."""
    configs = {row.name: row.config for row in plan.rows}
    scores = {}
    for record in records:
        if record["status"] == "finished":
            row, seed = record["row"], record["seed"]
            config = seed_config(configs[row], seed)
            scores[row, seed] = run_bootstrap(plan.run_dir(row, seed), config, plan.roots, plan.bootstrap)
    return scores


def _run_seed(row: str, seed: int, folder: Path, context: RunContext) -> None:
    import ray.tune

    started = time.time()
    done = folder / RESULT_NAME
    if done.is_file():  # finished by an earlier attempt of this trial
        return
    config = seed_config(config_from_dict(context.configs[row]), seed)
    resumed_after = _epochs_done(folder / "run")
    resources = context.resources
    name = f"{row}/seed{seed}"
    if resources.workers == 1:
        import torch

        from astra.training.loop import fit

        torch.set_num_threads(max(1, int(resources.cpus_per_worker)))
        fit(
            config, context.roots, folder / "run", progress=False,
            reporter=lambda metrics, _: ray.tune.report(dict(metrics)),
        )  # fmt: skip
        result = finish_run(folder, config, context.roots, context.bootstrap, name=name)
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        from astra.training.ray_train import train_with_ray

        train_with_ray(
            config, context.roots, folder / "run", num_workers=resources.workers,
            use_gpu=resources.use_gpu, name=f"{row}-seed{seed}", callbacks=[TuneReportCallback()],
            cpus_per_worker=resources.cpus_per_worker,
        )  # fmt: skip
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # Predicting and scoring on a worker of the run's own kind (a GPU where runs have one), out
        # of the trial's placement group (which holds only the trial's own 0.01 CPU): on the
        # resources its Ray Train workers have just given back.
        task = ray.remote(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker)(finish_run)
        outside = PlacementGroupSchedulingStrategy(placement_group=None)
        result = ray.get(
            task.options(scheduling_strategy=outside).remote(
                folder, config, context.roots, context.bootstrap, name=name
            )
        )
    result.update(row=row, seed=seed, resumed_after_epochs=resumed_after, wall_seconds=time.time() - started)
    with atomic_write(done, "w") as f:
        json.dump(result, f, indent=1)


def _tune(plan: Plan, todo: Sequence[tuple[str, int]]) -> None:
    import ray
    from ray import tune

    from astra.training.ray_train import connect_ray

    context = RunContext(
        plan.out.resolve(), {row.name: row.config.to_dict() for row in plan.rows}, plan.roots,
        plan.resources, plan.bootstrap,
    )  # fmt: skip
    trainable = tune.with_resources(
        tune.with_parameters(run_seed, context=context), plan.resources.trial_resources
    )
    owns_ray = connect_ray()
    try:
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search([{"row": row, "seed": seed} for row, seed in todo])},
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(
                name=TUNE_NAME,
                storage_path=str(plan.out.resolve()),
                # A killed trial process is tried again (it resumes from its last.pt); errors a
                # retry would meet again are not (run_seed).
                failure_config=tune.FailureConfig(max_failures=2),
                verbose=1,
            ),
        )
        _report_errors(plan, tuner.fit())
    finally:
        if owns_ray:  # a Ray this command started or joined; one the caller started stays up
            ray.shutdown()


def _report_errors(plan: Plan, grid: Any) -> None:
    """Print the runs that Ray gave up on without an error.json (a process killed three times, a
    lost node): they are not recorded as failed, so that the next invocation resumes them."""
    for result in grid:
        if result.error is None:
            continue
        run = result.config["run"]
        if (plan.run_dir(str(run["row"]), int(run["seed"])) / ERROR_NAME).is_file():
            continue  # an error a retry would meet again: the report shows it
        lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
        print(
            f"P1: {run['row']} seed {run['seed']} did not finish "
            f"({lines[-1] if lines else type(result.error).__name__}); run the command again to resume it"
        )


def _check_run_folders(plan: Plan, todo: Sequence[tuple[str, int]]) -> None:
    """Refuse, before Ray starts, a run folder that holds another run (fit would, inside a trial)."""
    from astra.training.run_folder import RunFolder, RunFolderError

    configs = {row.name: row.config for row in plan.rows}
    for row, seed in todo:
        folder = plan.run_dir(row, seed)
        try:
            RunFolder(folder / "run").check(seed_config(configs[row], seed), plan.roots)
        except RunFolderError as error:
            raise P1Error(
                f"row {row!r} seed {seed}: {error} (astra p1 has no --restart: delete {folder} to train "
                "this run anew)"
            ) from None


def _check_data(rows: Sequence[Row], roots: DataRoots, data: Path) -> None:
    """Refuse data that lacks a split of a row, and rows that are not tested on one split."""
    from astra.data.splits import games_of_split

    if not data.is_dir():
        raise P1Error(f"--data {data}: no such folder")
    test_splits = {row.config.data.test_split for row in rows}
    if len(test_splits) > 1:
        raise P1Error(
            "every row must be tested on one split, to compare them on the same games; here: "
            + ", ".join(f"{row.name} on {row.config.data.test_split!r}" for row in rows)
        )
    for row in rows:
        for role in ("train_split", "valid_split", "test_split"):
            split = getattr(row.config.data, role)
            if not games_of_split(split, roots.labels, game_roots=(roots.features,)):
                raise P1Error(
                    f"--data {data}: split {split!r} (data.{role} of row {row.name!r}) has no games"
                )


def _epochs_done(run_folder: Path) -> int:
    """Epochs a run folder's last.pt has done (0 without one)."""
    from astra.training.checkpoint import LAST, load

    last = run_folder / "checkpoints" / LAST
    return int(load(last, mmap=True)["training"]["epoch"]) + 1 if last.is_file() else 0


def _read_definition(out: Path) -> dict[str, Any] | None:
    path = out / DEFINITION_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise P1Error(f"{path}: damaged ({error}); use another --out") from None
