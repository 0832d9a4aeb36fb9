"""Search spaces: YAML files that map dotted config paths to distributions, with the search's budget.

A space file (``search_spaces/README.md`` documents every key)::

    configs: [../configs/small.yaml]     # the base configs, relative to this file, in order
    settings:                            # fixed overrides of every trial (dotted paths)
      train.epochs: 8
    parameters:                          # what Optuna proposes, by dotted config path
      train.base_learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
      clips.class_radius_seconds: {quniform: [0.5, 3.0, 0.5]}
      model.encoder_layers: {int: [1, 4]}
      augment.mixup: {choice: [none, plain, balanced]}
    budget: {trials: 12, concurrent: 2}
    asha: {enabled: true, grace_epochs: 2, reduction_factor: 2}
    resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}
    windows: {search: true, method: optuna, trials_per_class: 40}
    start_from_base: true                # the first trial is the base config itself

Every path must name a setting of ``astra/config.py``; every bound and choice must be a value
that setting accepts (type and range); a distribution must suit the setting's type. Mistakes are
:class:`SpaceError` naming the file and the key. Loading a space also builds the base config,
so that a space that cannot train is refused before Ray starts.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from astra.config import (
    ConfigError,
    ExperimentConfig,
    check_setting,
    field_bounds,
    flatten,
    load_config,
    replace,
)

DISTRIBUTIONS: tuple[str, ...] = ("uniform", "loguniform", "quniform", "int", "logint", "choice")
TOP_LEVEL_KEYS: tuple[str, ...] = (
    "description", "configs", "settings", "parameters", "budget", "asha", "resources", "windows",
    "start_from_base",
)  # fmt: skip
SPACES_FOLDER = "search_spaces"


class SpaceError(ValueError):
    """A search space that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Distribution:
    """One searched setting: ``kind`` of :data:`DISTRIBUTIONS` and its arguments.

    ``low``/``high`` (inclusive) and ``step`` for the numeric kinds; ``choices`` for ``choice``.
    """

    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def optuna(self) -> Any:
        """The Optuna distribution (choices of lists become their JSON text, see :meth:`decode`)."""
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution([_encode(choice) for choice in self.choices])
        if self.kind in ("int", "logint"):
            return d.IntDistribution(int(self.low), int(self.high), log=self.kind == "logint")
        return d.FloatDistribution(
            float(self.low), float(self.high), log=self.kind == "loguniform", step=self.step
        )

    def decode(self, value: Any) -> Any:
        """A value Optuna proposed, as the config takes it."""
        if self.kind == "choice" and isinstance(value, str) and value.startswith("json:"):
            return json.loads(value.removeprefix("json:"))
        if self.kind == "quniform" and self.step is not None:
            return round(round(value / self.step) * self.step, 10)  # no 0.30000000000000004
        return value

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {list(self.choices)}"
        step = f" step {self.step:g}" if self.step else ""
        return f"{self.kind} [{self.low:g}, {self.high:g}]{step}"


@dataclass(frozen=True)
class Budget:
    trials: int = 12  # trials in all, the first ones included
    concurrent: int = 2  # trials at a time (each also needs its resources free)


@dataclass(frozen=True)
class Asha:
    enabled: bool = True
    grace_epochs: int = 2  # no trial is stopped before this many epochs
    reduction_factor: int = 2  # at each rung, 1 / reduction_factor of the trials go on


# A Ray Train trial's own process only waits for its workers, but Ray gives no task zero CPUs.
TRAIN_DRIVER_CPUS = 0.01


@dataclass(frozen=True)
class Resources:
    workers: int = 1  # Ray Train workers per trial; above 1, DDP through a TorchTrainer
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractions share a GPU between trials (0.5: two at a time)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def worker_threads(self) -> int:
        """Whole CPUs of one worker (at least 1): its torch threads, its window-search processes."""
        return max(1, int(self.cpus_per_worker))

    @property
    def trial_cpus(self) -> float:
        """CPUs one trial holds: its worker's, or under Ray Train its workers' and its own process's."""
        if self.workers == 1:
            return self.cpus_per_worker
        return self.workers * self.cpus_per_worker + TRAIN_DRIVER_CPUS

    @property
    def trial_gpus(self) -> float:
        return self.workers * self.gpus_per_worker


@dataclass(frozen=True)
class WindowSettings:
    search: bool = True  # search the per-class Soft-NMS windows on each finished trial's valid outputs
    method: str = "optuna"  # or "grid"
    trials_per_class: int = 40
    low_seconds: float = 1.0
    high_seconds: float = 40.0


@dataclass(frozen=True)
class SearchSpace:
    """A loaded, checked search space (see the module docstring)."""

    path: Path
    configs: tuple[Path, ...]
    settings: dict[str, Any]
    parameters: dict[str, Distribution]
    budget: Budget = field(default_factory=Budget)
    asha: Asha = field(default_factory=Asha)
    resources: Resources = field(default_factory=Resources)
    windows: WindowSettings = field(default_factory=WindowSettings)
    start_from_base: bool = True
    description: str = ""

    @property
    def name(self) -> str:
        return self.path.stem

    def base_config(
        self, configs: Sequence[str | Path] = (), overrides: Sequence[str] = ()
    ) -> ExperimentConfig:
        """The configs of the space, then ``configs``, then its settings, then ``overrides``."""
        settings = [f"{key}={_yaml_text(value)}" for key, value in self.settings.items()]
        return load_config([*self.configs, *configs], [*settings, *overrides])

    def trial_config(self, base: ExperimentConfig, proposed: Mapping[str, Any]) -> ExperimentConfig:
        """``base`` with the values Optuna proposed (decoded), checked with every relation."""
        updates = {path: self.parameters[path].decode(value) for path, value in proposed.items()}
        return replace(base, updates)

    def base_point(self, base: ExperimentConfig) -> dict[str, Any]:
        """The base config's own values of the searched settings, as Optuna would propose them.

        Values outside a parameter's range (or not among its choices) are left out: Optuna
        then proposes them.
        """
        flat = flatten(base.to_dict())
        point = {}
        for path, distribution in self.parameters.items():
            value = flat[path]
            if distribution.kind == "choice":
                encoded = [_encode(c) for c in distribution.choices]
                if _encode(value) in encoded:
                    point[path] = _encode(value)
            elif distribution.low <= value <= distribution.high:
                point[path] = value
        return point

    def optuna_space(self) -> dict[str, Any]:
        return {path: distribution.optuna() for path, distribution in self.parameters.items()}

    @property
    def max_epochs(self) -> int:
        return int(self.settings.get("train.epochs", ExperimentConfig().train.epochs))


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a space file (a path, or the name of a shipped one: ``smoke``)."""
    path = resolve_space(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(document, dict):
        raise SpaceError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise SpaceError(f"{path}: unknown key {unknown[0]!r}; known: {', '.join(TOP_LEVEL_KEYS)}")
    configs = tuple(
        (path.parent / str(c)).resolve() for c in _list(document.get("configs", []), path, "configs")
    )
    for config_path in configs:
        if not config_path.is_file():
            raise SpaceError(f"{path}: configs: {config_path} not found")
    settings = _mapping(document.get("settings", {}), path, "settings")
    for key, value in settings.items():
        _checked(path, f"settings.{key}", lambda key=key, value=value: check_setting(key, value))
    parameters_doc = _mapping(document.get("parameters", {}), path, "parameters")
    if not parameters_doc:
        raise SpaceError(f"{path}: parameters: nothing to search; map dotted config paths to distributions")
    parameters = {key: _distribution(path, key, spec) for key, spec in parameters_doc.items()}
    overlap = sorted(set(parameters) & set(settings))
    if overlap:
        raise SpaceError(f"{path}: {overlap[0]} is both a setting and a searched parameter")
    space = SearchSpace(
        path=path,
        configs=configs,
        settings=settings,
        parameters=parameters,
        budget=_section(Budget, document, "budget", path),
        asha=_section(Asha, document, "asha", path),
        resources=_section(Resources, document, "resources", path),
        windows=_section(WindowSettings, document, "windows", path),
        start_from_base=bool(document.get("start_from_base", True)),
        description=str(document.get("description", "")),
    )
    _check_space(space)
    return space


def resolve_space(name: str | Path) -> Path:
    """A space file by path, or by name among the shipped ones (``search_spaces/<name>.yaml`` beside
    the working folder or beside the installed project, as on a cluster where the script runs from
    the home folder)."""
    candidate = Path(name)
    tried = [candidate]
    if not candidate.suffix:
        tried.append(Path(SPACES_FOLDER) / f"{candidate}.yaml")
    project = Path(__file__).resolve().parents[2] / SPACES_FOLDER
    tried.append(project / candidate.name if candidate.suffix else project / f"{candidate}.yaml")
    for path in tried:
        if path.is_file():
            return path.resolve()
    raise SpaceError(f"search space {str(name)!r} not found (looked for {', '.join(map(str, tried))})")


def _distribution(path: Path, key: str, spec: Any) -> Distribution:
    where = f"{path}: parameters.{key}"
    hint, bounds = _checked(path, f"parameters.{key}", lambda: field_bounds(key))
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SpaceError(f"{where}: expected one distribution, e.g. {{uniform: [low, high]}}, got {spec!r}")
    kind, arguments = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise SpaceError(f"{where}: unknown distribution {kind!r}; known: {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(arguments, list) or not arguments:
            raise SpaceError(f"{where}: choice needs a non-empty list of values")
        choices = tuple(
            _checked(path, f"parameters.{key}", lambda v=v: check_setting(key, v)) for v in arguments
        )
        return Distribution(key, kind, choices=tuple(_plain(c) for c in choices))
    numeric = hint in (int, float)
    if not numeric:
        raise SpaceError(f"{where}: {key} is not a number ({_type_name(hint)}): use choice")
    if kind in ("int", "logint") and hint is not int:
        raise SpaceError(f"{where}: {key} takes a float: use uniform, loguniform or quniform")
    if kind in ("uniform", "loguniform", "quniform") and hint is int:
        raise SpaceError(f"{where}: {key} takes an integer: use int or logint")
    expected = 3 if kind == "quniform" else 2
    if (
        not isinstance(arguments, list)
        or len(arguments) != expected
        or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in arguments)
    ):
        shape = "[low, high, step]" if kind == "quniform" else "[low, high]"
        raise SpaceError(f"{where}: {kind} needs {shape} numbers, got {arguments!r}")
    low, high = float(arguments[0]), float(arguments[1])
    step = float(arguments[2]) if kind == "quniform" else None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise SpaceError(f"{where}: needs low < high, got {arguments!r}")
    if kind in ("loguniform", "logint") and low <= 0:
        raise SpaceError(f"{where}: {kind} needs low > 0, got {low:g}")
    if step is not None and not (step > 0 and abs((high - low) / step - round((high - low) / step)) < 1e-9):
        raise SpaceError(f"{where}: quniform needs a step > 0 that divides high - low, got {arguments!r}")
    if kind in ("int", "logint") and not (low.is_integer() and high.is_integer()):
        raise SpaceError(f"{where}: int bounds must be whole numbers, got {arguments!r}")
    for end in (low, high):
        problem = bounds.violation(end)
        if problem:
            raise SpaceError(f"{where}: the bound {end:g} is outside the range of {key} ({problem})")
    return Distribution(key, kind, low, high, step)


def _check_space(space: SearchSpace) -> None:
    path = space.path
    counts = {
        "budget.trials": space.budget.trials,
        "budget.concurrent": space.budget.concurrent,
        "asha.grace_epochs": space.asha.grace_epochs,
        "resources.workers": space.resources.workers,
        "windows.trials_per_class": space.windows.trials_per_class,
    }
    for name, value in counts.items():
        if not value >= 1:
            raise SpaceError(f"{path}: {name} must be >= 1, got {value}")
    if space.asha.reduction_factor < 2:
        raise SpaceError(f"{path}: asha.reduction_factor must be >= 2, got {space.asha.reduction_factor}")
    if space.resources.cpus_per_worker <= 0 or space.resources.gpus_per_worker < 0:
        raise SpaceError(f"{path}: resources: cpus_per_worker must be > 0 and gpus_per_worker >= 0")
    if space.resources.workers > 1 and 0 < space.resources.gpus_per_worker < 1:
        raise SpaceError(
            f"{path}: resources: fractional GPUs are for one-worker trials; DDP needs whole GPUs"
        )
    if space.windows.method not in ("optuna", "grid"):
        raise SpaceError(f"{path}: windows.method must be optuna or grid, got {space.windows.method!r}")
    base = _checked(path, "configs and settings", space.base_config)
    if space.asha.enabled and space.asha.grace_epochs > base.train.epochs:
        raise SpaceError(
            f"{path}: asha.grace_epochs ({space.asha.grace_epochs}) exceeds train.epochs "
            f"({base.train.epochs})"
        )
    if base.train.batch_size % space.resources.workers:
        raise SpaceError(
            f"{path}: train.batch_size ({base.train.batch_size}) must split evenly over resources.workers "
            f"({space.resources.workers})"
        )


def _section(cls: type, document: Mapping[str, Any], key: str, path: Path) -> Any:
    values = _mapping(document.get(key, {}), path, key)
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise SpaceError(f"{path}: unknown key {key}.{unknown[0]}; known: {', '.join(hints)}")
    checked = {}
    for name, value in values.items():
        hint = hints[name]
        ok = (
            isinstance(value, bool)
            if hint is bool
            else isinstance(value, int) and not isinstance(value, bool)
            if hint is int
            else isinstance(value, int | float) and not isinstance(value, bool)
            if hint is float
            else isinstance(value, str)
        )
        if not ok:
            raise SpaceError(f"{path}: {key}.{name} must be {_type_name(hint)}, got {value!r}")
        checked[name] = float(value) if hint is float else value
    return cls(**checked)


def _checked(path: Path, key: str, build: Any) -> Any:
    try:
        return build()
    except ConfigError as error:
        raise SpaceError(f"{path}: {key}: {error}") from None


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpaceError(f"{path}: {key} must be a mapping, got {value!r}")
    return dict(value)


def _list(value: Any, path: Path, key: str) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise SpaceError(f"{path}: {key} must be a list, got {value!r}")
    return value


def _encode(value: Any) -> Any:
    """Optuna's categorical choices must be scalars: lists travel as their JSON text."""
    value = _plain(value)
    return f"json:{json.dumps(value)}" if isinstance(value, list) else value


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def _yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
