"""The search driver: Ray Tune with Optuna (TPE, seeded) and ASHA over a search space, resumable.

``run_search`` is what ``run_search.py`` calls. An experiment folder holds one search::

    search.json        what defines the search (space, configs, overrides, data, seed)
    study.db           the Optuna study (SQLite; or --storage: a journal file or a database URL)
    tune/              Ray Tune's state (what --resume restores)
    trials/<id>/       each trial's run folder, predictions, windows and result (astra.search.trial)
    results.parquet    one row per trial, kept current while the search runs (astra.search.results)
    summary.md, plots/ the summary; ``--report`` rebuilds them from what is on disk

Re-running with the same experiment folder (or ``--resume``) continues the search: finished
trials are kept and not re-run, unfinished ones continue from their last checkpoint, the study
gets no duplicate trials. A different definition in the same folder is refused. An experiment
on object storage (``--experiment s3://bucket/path``) is worked on in a local copy kept in step
with it (:mod:`astra.storage`): it resumes from the storage alone, on any machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astra.config import ExperimentConfig, flatten
from astra.data.dataset import DataRoots
from astra.files import atomic_write
from astra.search.space import TRAIN_DRIVER_CPUS, Resources, SearchSpace, load_space
from astra.storage import Mirror, is_remote

log = logging.getLogger(__name__)

DEFINITION_NAME = "search.json"
TUNE_NAME = "tune"
STUDY_NAME = "study.db"
DEFAULT_EXPERIMENTS = Path("runs") / "search"


class SearchError(ValueError):
    """A search that cannot run as asked; the message says why and what to do."""


@dataclass
class SearchOptions:
    """What ``run_search.py`` was asked (see its ``--help``)."""

    space: str = "smoke"
    configs: list[str] = field(default_factory=list)
    data: str | None = None
    features_root: str | None = None
    audio_root: str | None = None
    experiment: str | None = None
    trials: int | None = None
    concurrent: int | None = None
    storage: str | None = None
    resume: bool = False
    seed: int = 0
    dry_run: bool = False
    report: bool = False
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """A search ready to run: the space, the base config, the data and where it all goes."""

    space: SearchSpace
    base: ExperimentConfig
    roots: DataRoots | None  # None: the default simulated data, not written yet
    experiment: Path
    trials: int
    concurrent: int
    storage: str
    seed: int
    options: SearchOptions
    mirror: Mirror | None = None  # an experiment on object storage, worked on in its local copy
    data_mirrors: tuple[Mirror, ...] = ()  # data on object storage, copied to each machine

    @property
    def study_name(self) -> str:
        return f"astra-{self.space.name}"


def run_search(options: SearchOptions) -> int:
    """Run (or resume, or only plan or report) a search; returns the exit status.

    An ``--experiment`` on object storage (``s3://...``, :mod:`astra.storage`) is worked on in a
    local copy: brought from the storage first (a search resumes from the storage alone), copied
    back after each trial and at the end.
    """
    mirror = None
    if is_remote(options.experiment):
        assert options.experiment is not None
        mirror = Mirror.of(options.experiment)
        if options.dry_run:
            print(f"experiment on storage {mirror.uri}, worked on in {mirror.local}")
        else:
            brought = mirror.pull()
            log.info("%s: local copy %s (%d file(s) brought)", mirror.uri, mirror.local, brought)
            if (options.report or options.resume) and not (mirror.local / DEFINITION_NAME).is_file():
                raise SearchError(
                    f"{mirror.uri}: no search experiment there (no {DEFINITION_NAME}) to "
                    + ("report on" if options.report else "resume")
                )
        options = dataclasses.replace(options, experiment=str(mirror.local))
    data_mirrors = []
    for name in ("data", "features_root", "audio_root"):  # copied once per machine, then read locally
        location = getattr(options, name)
        if is_remote(location) and not (options.dry_run or options.report):
            data_mirror = Mirror.of(location, kind="data")
            log.info("%s: %d file(s) brought to %s", location, data_mirror.pull(), data_mirror.local)
            data_mirrors.append(data_mirror)
            options = dataclasses.replace(options, **{name: str(data_mirror.local)})
    plan = make_plan(options)
    plan = Plan(**{**plan.__dict__, "mirror": mirror, "data_mirrors": tuple(data_mirrors)})
    if options.report:
        report(plan.experiment)
        if mirror is not None:
            mirror.push()
        return 0
    if options.dry_run:
        print(describe(plan))
        return 0
    roots = plan.roots or DataRoots.from_config(default_data(), plan.base.data)
    plan = Plan(**{**plan.__dict__, "roots": roots})
    _claim_experiment(plan)
    print(describe(plan))
    try:
        outcome = _tune(plan)
    except BaseException:
        if mirror is not None:  # what was done is on the storage, without hiding the search's error
            try:
                mirror.push()
            except (OSError, ValueError) as error:
                log.error("could not copy %s to %s: %s", mirror.local, mirror.uri, error)
        raise
    if mirror is not None:
        log.info("%s: %d file(s) copied to the storage", mirror.uri, mirror.push())
    print(outcome)
    if mirror is not None:
        print(f"experiment on storage {mirror.uri} (local copy {mirror.local})")
    return 0


def make_plan(options: SearchOptions) -> Plan:
    """Load and check everything a search needs, without starting Ray or reading the data."""
    if options.report:
        experiment = Path(options.experiment or "")
        definition = _read_definition(experiment)
        if definition is None:
            raise SearchError(f"{experiment}: not a search experiment folder (no {DEFINITION_NAME})")
        recorded = dict(definition["options"])
        if recorded.get("storage") == _default_storage(Path(recorded.get("experiment") or experiment)):
            recorded["storage"] = None  # the study file of the folder, wherever it is now
        options = SearchOptions(**{**recorded, "report": True, "experiment": str(experiment)})
    space = load_space(options.space)
    searched = sorted({o.partition("=")[0].strip() for o in options.overrides} & set(space.parameters))
    if searched:
        raise SearchError(
            f"{searched[0]} is searched by {space.path}: it cannot also be set on the command line"
        )
    overrides = [*options.overrides, f"train.seed={options.seed}"]
    base = space.base_config(options.configs, overrides)
    if space.asha.enabled and space.asha.grace_epochs > base.train.epochs:
        raise SearchError(
            f"train.epochs={base.train.epochs} is below the ASHA grace period of {space.path} "
            f"(asha.grace_epochs: {space.asha.grace_epochs}): ASHA could stop no trial; give "
            f"train.epochs={space.asha.grace_epochs} or more, or a space with asha.enabled: false"
        )
    experiment = Path(options.experiment) if options.experiment else DEFAULT_EXPERIMENTS / space.name
    roots = None
    if options.data is not None:
        roots = DataRoots.from_config(
            options.data, base.data, features_root=options.features_root, audio_root=options.audio_root
        )
        if not options.report and not is_remote(options.data) and not Path(options.data).is_dir():
            raise SearchError(f"--data {options.data}: no such folder")
    trials = options.trials or space.budget.trials
    concurrent = options.concurrent or space.budget.concurrent
    if trials < 1 or concurrent < 1:
        raise SearchError(f"--trials and --concurrent must be >= 1, got {trials} and {concurrent}")
    storage = options.storage or _default_storage(experiment)
    return Plan(space, base, roots, experiment, trials, concurrent, storage, options.seed, options)


def describe(plan: Plan) -> str:
    """What the search would run, in a few lines (``--dry-run`` prints it)."""
    space, resources = plan.space, plan.space.resources
    data = (
        f"{plan.roots.labels}"
        if plan.roots is not None
        else f"the simulator's default dataset ({default_data_dir()})"
    )
    lines = [
        f"search space   {space.path} ({len(space.parameters)} parameters)",
        *[f"  {path:<36} {d.describe()}" for path, d in space.parameters.items()],
        "base config    "
        + (", ".join(str(p) for p in [*space.configs, *plan.options.configs]) or "the defaults")
        + (
            f" + {len(space.settings) + len(plan.options.overrides)} settings"
            if space.settings or plan.options.overrides
            else ""
        ),
        f"data           {data}",
        f"trials         {plan.trials}, {plan.concurrent} at a time, "
        f"up to {plan.base.train.epochs} epochs each"
        + (" (the first: the base config itself)" if space.start_from_base else ""),
        "scheduler      "
        + (
            f"ASHA on {_metric_name()} by epoch (grace {space.asha.grace_epochs}, "
            f"reduction {space.asha.reduction_factor})"
            if space.asha.enabled
            else "none: every trial runs to its last epoch"
        ),
        f"one trial      {resources.workers} worker(s) x ({resources.cpus_per_worker:g} CPU, "
        f"{resources.gpus_per_worker:g} GPU)" + (" under Ray Train (DDP)" if resources.workers > 1 else ""),
        f"               needs {plan.concurrent * resources.trial_cpus:g} CPUs and "
        f"{plan.concurrent * resources.trial_gpus:g} GPUs "
        f"for {plan.concurrent} at a time"
        f" (this machine: {os.cpu_count()} CPUs)",
        "windows        "
        + (
            f"searched per class on valid ({space.windows.method})" if space.windows.search else "the paper's"
        ),
        f"study          {plan.storage} (study {plan.study_name}, seed {plan.seed})",
        f"experiment     {plan.experiment}",
    ]
    return "\n".join(lines)


def report(experiment: Path) -> None:
    """Rebuild ``results.parquet``, ``summary.md`` and the plots from the experiment folder."""
    from astra.search import results

    plan = make_plan(SearchOptions(experiment=str(experiment), report=True))
    statuses = _saved_statuses(experiment)
    rows = results.trial_rows(experiment, plan.space, statuses)
    results.write_results(experiment, rows, plan.space)
    summary = results.write_summary(
        experiment, rows, plan.space, study=_load_study(plan), base_trial=_base_trial(rows, plan.space)
    )
    print(f"{len(rows)} trials -> {experiment / results.RESULTS_NAME}, {summary}")


def default_data_dir() -> Path:
    """Where the simulator's default dataset is cached (``$ASTRA_CACHE``, else the user's cache)."""
    from astra.data.simulator import SimulatorConfig

    root = Path(
        os.environ.get("ASTRA_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "astra"
    )
    version = hashlib.sha256(repr(SimulatorConfig()).encode()).hexdigest()[:8]
    return root / f"simulated-default-{version}"


def default_data() -> Path:
    """The simulator's default dataset, written on first use (under a lock: one writer at a time)."""
    import fcntl
    import shutil
    import tempfile

    from astra.data.simulator import SimulatorConfig, simulate

    target = default_data_dir()
    if (target / "splits.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "splits.json").is_file():
            print(f"writing the simulator's default dataset to {target} (once; about 2 GB, a minute)")
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                simulate(staging, SimulatorConfig(), progress=True, overwrite=True)
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _tune(plan: Plan) -> str:
    import ray

    from astra.training.ray_train import connect_ray

    assert plan.roots is not None
    owns_ray = connect_ray()
    try:
        _check_trial_fits(plan.space.resources, local=owns_ray == "local")
        return _search_on_ray(plan)
    finally:
        if owns_ray:  # a Ray this search started or joined; one the caller started stays up
            ray.shutdown()


def _check_trial_fits(resources: Resources, *, local: bool) -> None:
    """Refuse, on a Ray started here, a trial bigger than the machine: Ray would wait for it forever
    (Ray Train gives up on its workers after a minute, and Tune retries). On a cluster joined, warn:
    an autoscaler may add the nodes."""
    import ray

    have = ray.cluster_resources()
    short = [
        f"{need:g} {name}s (the Ray cluster has {have.get(key, 0.0):g})"
        for name, key, need in (("CPU", "CPU", resources.trial_cpus), ("GPU", "GPU", resources.trial_gpus))
        if need > have.get(key, 0.0) + 1e-9
    ]
    if not short:
        return
    message = (
        f"one trial needs {' and '.join(short)}: {resources.workers} worker(s) x "
        f"({resources.cpus_per_worker:g} CPU, {resources.gpus_per_worker:g} GPU)"
        + (f" + {TRAIN_DRIVER_CPUS:g} CPU for the trial's own process" if resources.workers > 1 else "")
    )
    if local:
        raise SearchError(
            f"{message}; lower resources.cpus_per_worker (or workers, gpus_per_worker) in the space"
        )
    log.warning("%s; trials wait until the cluster has room (an autoscaler may add nodes)", message)


def _search_on_ray(plan: Plan) -> str:
    from ray import tune

    from astra.search import results
    from astra.search.callbacks import ProgressLine, ResultsTable
    from astra.search.trial import TrialContext, run_trial

    assert plan.roots is not None
    space = plan.space
    context = TrialContext(
        plan.experiment.resolve(), space, plan.base.to_dict(), plan.roots, plan.mirror, plan.data_mirrors
    )
    resources = space.resources
    trial_resources = (
        {"cpu": resources.cpus_per_worker, "gpu": resources.gpus_per_worker}
        if resources.workers == 1
        else {"cpu": TRAIN_DRIVER_CPUS}  # the trial's own process; its Ray Train workers ask for theirs
    )
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), trial_resources)

    def callbacks() -> list[Any]:  # a fresh list per Tuner: Ray adds its own console reporter to it
        return [
            ResultsTable(plan.experiment, space, mirror=plan.mirror),
            ProgressLine(plan.trials, plan.concurrent),
        ]

    tune_path = (plan.experiment / TUNE_NAME).resolve()
    started = time.time()
    errors: dict[str, str] = {}
    if tune.Tuner.can_restore(str(tune_path)):
        # Trials of the last run that did not finish continue from their last checkpoints; the
        # finished ones report their result.json again and do nothing else.
        log.info("resuming the search in %s", plan.experiment)
        tuner = tune.Tuner.restore(
            str(tune_path), trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
        # The restored run config is the one of the first run: give it this run's callbacks.
        tuner._local_tuner.get_run_config().callbacks = callbacks()
        errors.update(_record_errors(plan.experiment, tuner.fit()))
    remaining = plan.trials - _trials_started(plan.experiment)
    if remaining > 0:
        # A fresh search, or a budget raised since the last run: new trials from the same study.
        tuner = _new_tuner(plan, trainable, callbacks(), remaining)
        errors.update(_record_errors(plan.experiment, tuner.fit()))
    statuses = errors
    rows = results.trial_rows(plan.experiment, space, statuses)
    _save_statuses(plan.experiment, rows)
    results.write_results(plan.experiment, rows, space)
    summary = results.write_summary(
        plan.experiment, rows, space, study=_load_study(plan), base_trial=_base_trial(rows, space)
    )
    return _outcome(plan, rows, time.time() - started, summary)


def _new_tuner(plan: Plan, trainable: Any, callbacks: list[Any], num_samples: int) -> Any:
    """A Tuner for ``num_samples`` new trials, proposed by the experiment's Optuna study."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from astra.search.trial import METRIC

    space = plan.space
    storage = _optuna_storage(plan.storage)
    if plan.study_name not in optuna.study.get_all_study_names(storage):
        study = optuna.create_study(storage=storage, study_name=plan.study_name, direction="maximize")
        point = space.base_point(plan.base) if space.start_from_base else {}
        if point:
            # Enqueued once, in a fresh study only: on a restore it would come back as a duplicate.
            # Parameters the base config holds outside the space are sampled.
            study.enqueue_trial(point)
    searcher = OptunaSearch(
        space=space.optuna_space(), metric=METRIC, mode="max", storage=storage,
        study_name=plan.study_name, seed=plan.seed + _trials_started(plan.experiment),
    )  # fmt: skip
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(plan),
            num_samples=num_samples,
            max_concurrent_trials=plan.concurrent,
        ),
        run_config=tune.RunConfig(
            name=TUNE_NAME,
            storage_path=str(plan.experiment.resolve()),
            # A killed trial process is restarted (it resumes from its last.pt); errors a retry
            # would meet again are not (astra.search.trial).
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
            verbose=1,
        ),
    )


def _scheduler(plan: Plan) -> Any:
    """ASHA on the best validated score by reported epoch (not by report: epochs without validation
    are not reported), or none; a trial that reports its last epoch is never stopped."""
    from ray.tune.schedulers import FIFOScheduler

    from astra.search.scheduler import LastEpochASHA
    from astra.search.trial import METRIC

    asha = plan.space.asha
    if not asha.enabled:
        return FIFOScheduler()
    return LastEpochASHA(
        metric=METRIC,
        mode="max",
        time_attr="epoch",
        max_t=plan.base.train.epochs,
        grace_period=asha.grace_epochs,
        reduction_factor=asha.reduction_factor,
    )


def _trials_started(experiment: Path) -> int:
    """Trials of this experiment so far, whatever became of them (one folder each)."""
    trials = experiment / "trials"
    return sum(1 for p in trials.iterdir() if p.is_dir()) if trials.is_dir() else 0


def _record_errors(experiment: Path, grid: Any) -> dict[str, str]:
    """Errored trials: their error (the last line of Ray's traceback) in their error.json if none is there."""
    from astra.search.trial import ERROR_NAME

    statuses = {}
    for result in grid:
        if result.error is None:
            continue
        trial_id = _trial_id_of(Path(str(result.path)).name, experiment)
        if not trial_id:
            continue
        statuses[trial_id] = "errored"
        path = experiment / "trials" / trial_id / ERROR_NAME
        if not path.is_file():
            lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
            with atomic_write(path, "w") as f:
                json.dump({"error": lines[-1] if lines else type(result.error).__name__}, f)
    return statuses


def _trial_id_of(tune_folder: str, experiment: Path) -> str:
    """The trial id in the name of its Ray Tune folder (``run_trial_<id>_<n>_<params>``)."""
    trials = experiment / "trials"
    known = {p.name for p in trials.iterdir()} if trials.is_dir() else set()
    return next((part for part in tune_folder.split("_") if part in known), "")


def _outcome(plan: Plan, rows: list[dict[str, Any]], seconds: float, summary: Path) -> str:
    from astra.search.results import BEST_CONFIG_NAME, RESULTS_NAME, best_trial

    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "stopped", "errored", "running")}
    lines = [
        f"search {plan.space.name}: {len(rows)} trials in {seconds / 60:.1f} min ("
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + ")",
    ]
    best = best_trial(rows)
    if best is None:
        lines.append("no trial finished")
    else:
        lines += [
            f"best trial {best['trial_id']} (chosen on valid): best valid tight a-mAP "
            f"{best['best_valid_tight_a_map']:.4f} at epoch {best['best_epoch']}",
            *[f"  {path} = {best[path]}" for path in plan.space.parameters],
            f"  valid tight {_f(best['valid_tight_paper'])} with the paper's windows, "
            f"{_f(best['valid_tight_searched'])} searched",
            f"  test  tight {_f(best['test_tight_paper'])} with the paper's windows, "
            f"{_f(best['test_tight_searched'])} searched"
            f" (loose {_f(best['test_loose_paper'])}, {_f(best['test_loose_searched'])})",
        ]
        if best["windows"]:
            lines.append("  windows (s) " + ", ".join(f"{w:g}" for w in best["windows"]))
        lines.append(f"  checkpoint {best['best_checkpoint']}")
        best_config = plan.experiment / BEST_CONFIG_NAME
        if best_config.is_file():
            lines.append(f"  config     {best_config} (its five seeds: astra p1 --ablations)")
    lines += [f"results  {plan.experiment / RESULTS_NAME}", f"summary  {summary}"]
    return "\n".join(lines)


def _default_storage(experiment: Path) -> str:
    """The Optuna study of an experiment folder when no --storage is given: its own SQLite file."""
    return f"sqlite:///{(experiment / STUDY_NAME).resolve()}"


def _claim_experiment(plan: Plan) -> None:
    """Record what defines the search; refuse a folder that holds another search, or a study
    other than its own."""
    assert plan.roots is not None
    data = {k: str(v) for k, v in plan.roots.__dict__.items()}
    # Where the data comes from: a root copied from object storage is named by its URI, so that
    # the search resumes from another machine (another cache folder) all the same.
    sources = dict(data)
    for mirror in plan.data_mirrors:
        for key, value in data.items():
            if Path(value) == mirror.local or Path(value).is_relative_to(mirror.local):
                sources[key] = mirror.uri + value[len(str(mirror.local)) :]
    definition = {
        "space": str(plan.space.path),
        "space_sha256": hashlib.sha256(plan.space.path.read_bytes()).hexdigest(),
        "base_config": plan.base.to_dict(),
        "data": data,
        "data_sources": sources,
        "resources": dataclasses.asdict(plan.space.resources),
        "options": {
            **{k: v for k, v in plan.options.__dict__.items() if k not in ("dry_run", "report", "resume")},
            "data": str(plan.roots.labels),
            "trials": plan.trials,
            "concurrent": plan.concurrent,
            "storage": plan.storage,
        },
    }
    if plan.mirror is not None:
        definition["experiment_uri"] = plan.mirror.uri
    recorded = _read_definition(plan.experiment)
    if recorded is not None:
        data_key = "data_sources" if "data_sources" in recorded else "data"
        differs = [
            key.replace("_sources", "")
            for key in ("space_sha256", data_key)
            if recorded.get(key) != definition[key]
        ]
        settings = base_config_differences(recorded.get("base_config", {}), plan.base)
        if settings:
            differs.append(f"base_config ({', '.join(settings[:5])}{', ...' if len(settings) > 5 else ''})")
        if differs:
            raise SearchError(
                f"{plan.experiment} holds another search (its {', '.join(differs)} differ): use another "
                "--experiment, or the same space, configs, settings and data to continue it"
            )
        study = recorded.get("options", {}).get("storage")
        own = _default_storage(Path(recorded.get("options", {}).get("experiment") or plan.experiment))
        if study and study != own and study != plan.storage:
            raise SearchError(
                f"{plan.experiment}: its Optuna study is in {study}; give --storage {study} to continue "
                "this search (without it a new, empty study would be started)"
            )
        if not (plan.experiment / TUNE_NAME).is_dir():
            log.info("%s: no Ray Tune state yet; starting the search", plan.experiment)
    elif plan.options.resume:
        raise SearchError(f"--resume: {plan.experiment} holds no search to resume")
    plan.experiment.mkdir(parents=True, exist_ok=True)
    with atomic_write(plan.experiment / DEFINITION_NAME, "w") as f:
        json.dump(definition, f, indent=1)


def base_config_differences(recorded: Mapping[str, Any], current: ExperimentConfig) -> list[str]:
    """The settings in which a search's recorded base config and ``current`` differ (dotted paths).

    The recorded one is read as a config, so that a setting added to the project since (at its
    default) is no difference; the speed settings (``astra.config.SPEED_SETTINGS``), which change
    no result, are none either.
    """
    from astra.config import SPEED_SETTINGS, ConfigError, config_from_dict

    try:
        old = config_from_dict(recorded, "the recorded base config").to_dict()
    except ConfigError:
        old = dict(recorded)  # a setting since removed or renamed: compared as it is, and it differs
    old_flat, new_flat = flatten(old), flatten(current.to_dict())
    return [
        key
        for key in sorted(set(old_flat) | set(new_flat))
        if key not in SPEED_SETTINGS and old_flat.get(key) != new_flat.get(key)
    ]


def _read_definition(experiment: Path) -> dict[str, Any] | None:
    path = experiment / DEFINITION_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _optuna_storage(uri: str) -> Any:
    """An Optuna storage object from ``--storage``: a database URL, or a journal file (NFS-safe)."""
    import optuna

    if "://" in uri:
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(uri)
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    return optuna.storages.JournalStorage(
        JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    )


def _load_study(plan: Plan) -> Any:
    import optuna

    try:
        return optuna.load_study(study_name=plan.study_name, storage=_optuna_storage(plan.storage))
    except (KeyError, ValueError) as error:
        log.info("no Optuna study to read (%s)", error)
        return None


def _base_trial(rows: Sequence[dict[str, Any]], space: SearchSpace) -> str:
    """The trial that ran the base config (the first one, when the space starts from it)."""
    return rows[0]["trial_id"] if rows and space.start_from_base else ""


def _save_statuses(experiment: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic_write(experiment / "statuses.json", "w") as f:
        json.dump({row["trial_id"]: row["status"] for row in rows}, f)


def _saved_statuses(experiment: Path) -> dict[str, str]:
    path = experiment / "statuses.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _metric_name() -> str:
    from astra.search.trial import METRIC

    return METRIC


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
