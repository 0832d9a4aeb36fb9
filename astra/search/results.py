"""The results of a search: ``results.parquet`` (one row per trial), ``summary.md`` and plots.

Built from what the trials leave on disk (``trials/<id>/params.json``, ``result.json``,
``error.json``, the run folder) and from the statuses the driver saw, so that ``--report``
rebuilds it all from the experiment folder alone. The best trial is the finished one with the
best validation score: nothing is chosen on the test split, whose figures are reported as they fall.

Columns of ``results.parquet`` (read it with ``polars.read_parquet``): ``trial_id``,
``number``, ``status`` (``finished``; ``stopped``: by ASHA, or interrupted; ``running``;
``errored``), ``error``, one column per searched parameter (its dotted path), ``epochs_run``,
``best_epoch``, ``best_valid_tight_a_map`` (the training's own validation), then for
``{valid,test}_{tight,loose}_{paper,searched}`` the a-mAP with the paper's and with the
searched windows, ``windows`` (the 17 searched windows), ``wall_seconds``, and the paths
``best_checkpoint``, ``valid_per_position``, ``test_per_position``.

``best.yaml`` is the best trial's full config, for ``astra train --config`` and for
``astra p1 --ablations`` (its five seeds against the base config's).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra.classes import CLASSES
from astra.files import atomic_write
from astra.search.space import SearchSpace
from astra.search.trial import ERROR_NAME, PARAMS_NAME, RESULT_NAME

log = logging.getLogger(__name__)

RESULTS_NAME = "results.parquet"
SUMMARY_NAME = "summary.md"
BEST_CONFIG_NAME = "best.yaml"
PLOTS_DIR = "plots"
STATUSES: tuple[str, ...] = ("finished", "stopped", "running", "pending", "errored")
SCORES: tuple[str, ...] = tuple(
    f"{split}_{metric}_{windows}"
    for windows in ("paper", "searched")
    for split in ("valid", "test")
    for metric in ("tight", "loose")
)


@dataclass(frozen=True)
class TrialRow:
    """One trial as the table shows it."""

    values: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.values["status"])


def trial_rows(
    experiment: Path, space: SearchSpace, statuses: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per trial folder under ``experiment/trials`` (see the module docstring)."""
    statuses = dict(statuses or {})
    rows = []
    trials = experiment / "trials"
    for folder in sorted(trials.iterdir()) if trials.is_dir() else []:
        if not folder.is_dir():
            continue
        trial_id = folder.name
        result = _read_json(folder / RESULT_NAME)
        error = _read_json(folder / ERROR_NAME)
        proposed = _read_json(folder / PARAMS_NAME) or {}
        params = proposed.get("params", {})
        if result is not None:
            status = "finished"
        elif error is not None or statuses.get(trial_id) == "errored":
            status = "errored"
        else:
            status = statuses.get(trial_id, "stopped")
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "number": 0,  # set below, by creation time
            "_created": proposed.get("created", math.inf),
            "status": status,
            "error": (error or {}).get("error", "") if status == "errored" else "",
        }
        for path in space.parameters:
            row[path] = _scalar(params.get(path))
        record = _training_record(folder) if result is None else None
        row["epochs_run"] = (result or {}).get("epochs_run", record and record["epoch"] + 1)
        row["best_epoch"] = (result or {}).get("best_epoch", record and record["best_epoch"] + 1)
        best = (result or {}).get("best_valid_tight_a_map", record and record["best"])
        row["best_valid_tight_a_map"] = best if best is None or best >= 0 else None
        for score in SCORES:
            row[score] = (result or {}).get(score)
        row["windows"] = (result or {}).get("windows")
        row["wall_seconds"] = (result or {}).get("wall_seconds")
        best_checkpoint = folder / "run" / "checkpoints" / "best.pt"
        row["best_checkpoint"] = str(best_checkpoint) if best_checkpoint.is_file() else None
        for split in ("valid", "test"):
            outputs = folder / split / "per_position"
            row[f"{split}_per_position"] = str(outputs) if result is not None and outputs.is_dir() else None
        rows.append(row)
    rows.sort(key=lambda row: (row.pop("_created"), row["trial_id"]))
    for number, row in enumerate(rows):
        row["number"] = number
    return rows


def write_results(experiment: Path, rows: list[dict[str, Any]], space: SearchSpace) -> Path:
    """``results.parquet``, written atomically (readers never see half a table)."""
    import polars as pl

    schema: dict[str, Any] = {
        "trial_id": pl.String, "number": pl.Int64, "status": pl.String, "error": pl.String,
        "epochs_run": pl.Int64, "best_epoch": pl.Int64, "best_valid_tight_a_map": pl.Float64,
        **{score: pl.Float64 for score in SCORES}, "windows": pl.List(pl.Float64),
        "wall_seconds": pl.Float64, "best_checkpoint": pl.String, "valid_per_position": pl.String,
        "test_per_position": pl.String,
    }  # fmt: skip
    for path, distribution in space.parameters.items():
        kinds = {type(row[path]) for row in rows if row[path] is not None}
        schema[path] = pl.Float64 if kinds <= {float, int} and distribution.kind != "choice" else pl.String
    columns = ["trial_id", "number", "status", "error", *space.parameters, *[k for k in schema if k not in
               ("trial_id", "number", "status", "error", *space.parameters)]]  # fmt: skip
    table = pl.DataFrame(
        [{k: (str(row[k]) if schema[k] == pl.String and row[k] is not None else row[k]) for k in columns}
         for row in rows],
        schema={k: schema[k] for k in columns},
        orient="row",
    ) if rows else pl.DataFrame(schema={k: schema[k] for k in columns})  # fmt: skip
    path = experiment / RESULTS_NAME
    with atomic_write(path) as f:
        table.write_parquet(f)
    return path


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished trial with the best validation score (the training's own), or None."""
    finished = [
        row for row in rows if row["status"] == "finished" and row["best_valid_tight_a_map"] is not None
    ]
    return max(finished, key=lambda row: row["best_valid_tight_a_map"], default=None)


def write_summary(
    experiment: Path,
    rows: list[dict[str, Any]],
    space: SearchSpace,
    *,
    study: Any = None,
    base_trial: str = "",
) -> Path:
    """``summary.md`` and the plots under ``plots/``."""
    lines = [f"# Search `{space.name}`", ""]
    counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    compute = sum(row["wall_seconds"] or 0.0 for row in rows)
    lines += [
        f"Space: `{space.path}`. {len(rows)} trials: "
        + ", ".join(f"{count} {status}" for status, count in counts.items() if count)
        + f". Trial time of the finished trials: {compute / 3600:.2f} h.",
        "",
    ]
    best = best_trial(rows)
    if best is None:
        lines.append("No trial has finished yet.")
    else:
        lines += _best_trial_lines(best, rows, space, base_trial)
    lines += ["", "## Trials (by validation score)", ""]
    header = ["trial", "status", "epochs", "best valid tight", "test tight (paper)", "test tight (searched)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=lambda r: -(r["best_valid_tight_a_map"] or -1.0)):
        lines.append(
            f"| {row['trial_id']} | {row['status']} | {row['epochs_run'] or '-'} | "
            f"{_fmt(row['best_valid_tight_a_map'])} | {_fmt(row['test_tight_paper'])} | "
            f"{_fmt(row['test_tight_searched'])} |"
        )
    plots = write_plots(experiment, rows, space, study=study, base_trial=base_trial)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in plots]
    errored = [row for row in rows if row["status"] == "errored"]
    if errored:
        lines += ["", "## Errors", ""] + [f"- {row['trial_id']}: {row['error']}" for row in errored]
    write_best_config(experiment, best, space)
    path = experiment / SUMMARY_NAME
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_best_config(experiment: Path, best: dict[str, Any] | None, space: SearchSpace) -> Path | None:
    """``best.yaml``: the best trial's full config, readable by ``--config`` and ``--ablations``.

    The searched values head the file as comments. Removed while no trial has finished, so
    that it never names a trial the table no longer calls best.
    """
    path = experiment / BEST_CONFIG_NAME
    source = experiment / "trials" / str(best["trial_id"]) / "run" / "config.yaml" if best else None
    if source is None or not source.is_file():
        path.unlink(missing_ok=True)
        return None
    header = [
        f"# The best trial of search `{space.name}` (chosen on validation): {best['trial_id']},",
        f"# best valid tight a-mAP {_fmt(best['best_valid_tight_a_map'])} at epoch {best['best_epoch']}.",
        "# Its searched settings:",
        *[f"#   {name} = {_scalar(best[name])}" for name in space.parameters],
        "# Train it: astra train --config best.yaml; five seeds against the base config:",
        "# astra p1 --config BASE.yaml --ablations best.yaml (docs/protocols.md).",
    ]
    with atomic_write(path, "w") as f:
        f.write("\n".join(header) + "\n" + source.read_text())
    return path


def _best_trial_lines(
    best: dict[str, Any], rows: list[dict[str, Any]], space: SearchSpace, base_trial: str
) -> list[str]:
    lines = [
        f"## Best trial: `{best['trial_id']}` (chosen on validation)",
        "",
        "| parameter | value |",
        "|---|---|",
        *[f"| `{path}` | {best[path]} |" for path in space.parameters],
        "",
        "| split | tight, paper windows | tight, searched windows | loose, paper | loose, searched |",
        "|---|---:|---:|---:|---:|",
    ]
    for split in ("valid", "test"):
        lines.append(
            f"| {split} | {_fmt(best[f'{split}_tight_paper'])} | {_fmt(best[f'{split}_tight_searched'])} | "
            f"{_fmt(best[f'{split}_loose_paper'])} | {_fmt(best[f'{split}_loose_searched'])} |"
        )
    if best["test_tight_searched"] is not None and best["test_tight_paper"] is not None:
        change = best["test_tight_searched"] - best["test_tight_paper"]
        verdict = "help" if change > 0 else "do not help"
        lines += ["", f"The searched windows {verdict} on the test split: {change:+.4f} tight a-mAP."]
    base = next((row for row in rows if row["trial_id"] == base_trial), None)
    if base is not None and base["status"] == "finished" and base is not best:
        lines += [
            "",
            f"The base configuration (trial `{base_trial}`): best valid tight "
            f"{_fmt(base['best_valid_tight_a_map'])}, "
            f"test tight {_fmt(base['test_tight_paper'])} (paper windows).",
        ]
    if best["windows"]:
        lines += ["", "Searched windows (s): " + ", ".join(
            f"{name} {w:g}" for name, w in zip(CLASSES, best["windows"], strict=True))]  # fmt: skip
    lines += ["", f"Best checkpoint: `{best['best_checkpoint']}`"]
    return lines


def write_plots(
    experiment: Path,
    rows: list[dict[str, Any]],
    space: SearchSpace,
    *,
    study: Any = None,
    base_trial: str = "",
) -> list[Path]:
    """PNG plots: score by trial with the best so far, valid against test, parameter importance,
    per-class AP of the best trial against the base configuration."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        log.warning("matplotlib is not installed: no plots")
        return []
    folder = experiment / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    scored = [row for row in rows if row["best_valid_tight_a_map"] is not None]
    if scored:
        figure, axis = plt.subplots(figsize=(7, 4))
        numbers = [row["number"] for row in scored]
        values = [row["best_valid_tight_a_map"] for row in scored]
        colours = {"finished": "tab:blue", "stopped": "tab:orange", "running": "tab:gray"}
        for status, colour in colours.items():
            mine = [
                (n, v) for n, v, row in zip(numbers, values, scored, strict=True) if row["status"] == status
            ]
            if mine:
                axis.scatter(*zip(*mine, strict=True), c=colour, label=status, s=20)
        best_so_far, running = [], -math.inf
        for value in values:
            running = max(running, value)
            best_so_far.append(running)
        axis.step(numbers, best_so_far, where="post", c="k", label="best so far")
        axis.set(xlabel="trial", ylabel="best valid tight a-mAP", title=f"search {space.name}")
        axis.legend()
        written.append(_save(figure, folder / "score_by_trial.png"))
    finished = [row for row in rows if row["status"] == "finished"]
    if finished:
        figure, axis = plt.subplots(figsize=(5, 5))
        for windows, marker in (("paper", "o"), ("searched", "^")):
            pairs = [(r[f"valid_tight_{windows}"], r[f"test_tight_{windows}"]) for r in finished
                     if r[f"valid_tight_{windows}"] is not None]  # fmt: skip
            if pairs:
                axis.scatter(*zip(*pairs, strict=True), marker=marker, label=f"{windows} windows")
        low = min(min(r["valid_tight_paper"] or 1, r["test_tight_paper"] or 1) for r in finished)
        high = max(max(r["valid_tight_paper"] or 0, r["test_tight_paper"] or 0) for r in finished)
        axis.plot([low, high], [low, high], c="gray", lw=0.5)
        axis.set(xlabel="valid tight a-mAP", ylabel="test tight a-mAP", title="valid against test")
        axis.legend()
        written.append(_save(figure, folder / "valid_vs_test.png"))
    importance = _importance(study)
    if importance:
        figure, axis = plt.subplots(figsize=(7, 0.4 * len(importance) + 1))
        names = list(importance)
        axis.barh(names[::-1], [importance[n] for n in names][::-1])
        axis.set(xlabel="importance (Optuna, fANOVA)", title="parameter importance")
        written.append(_save(figure, folder / "parameter_importance.png"))
    best = best_trial(rows)
    base = next((row for row in rows if row["trial_id"] == base_trial and row["status"] == "finished"), None)
    if best is not None:
        per_class = _per_class(experiment, best["trial_id"])
        if per_class:
            figure, axis = plt.subplots(figsize=(10, 4))
            positions = range(len(CLASSES))
            width = 0.4 if base is not None and base is not best else 0.8
            axis.bar(
                [p - width / 2 * (width < 0.8) for p in positions],
                per_class,
                width,
                label=f"best ({best['trial_id']})",
            )
            if width < 0.8:
                axis.bar([p + width / 2 for p in positions], _per_class(experiment, base_trial), width,
                         label=f"base ({base_trial})")  # fmt: skip
            axis.set_xticks(list(positions), CLASSES, rotation=60, ha="right", fontsize=8)
            axis.set(ylabel="test tight AP (paper windows)", title="per class, on the test split")
            axis.legend()
            figure.tight_layout()
            written.append(_save(figure, folder / "per_class.png"))
    return written


def _importance(study: Any) -> dict[str, float]:
    if study is None:
        return {}
    try:
        import optuna

        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        log.info("no parameter importance yet (%s)", error)
        return {}


def _per_class(experiment: Path, trial_id: str) -> list[float]:
    result = _read_json(experiment / "trials" / trial_id / RESULT_NAME) or {}
    return list(result.get("test_tight_per_class_paper") or [])


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _training_record(folder: Path) -> dict[str, Any] | None:
    last = folder / "run" / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    from astra.training.checkpoint import CheckpointError, load

    try:
        return load(last, mmap=True)["training"]
    except CheckpointError:
        return None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
