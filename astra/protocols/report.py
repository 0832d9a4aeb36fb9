"""The P1 report: ``p1.parquet`` (one row per run), ``report.md`` and the plots under ``plots/``.

Built from what the runs leave on disk (``result.json``, ``error.json``, ``bootstrap.json``), so
that a rerun of the command rebuilds it all without training. Every figure of a run comes from
its best validated checkpoint; nothing is chosen on test.

Columns of ``p1.parquet`` (``polars.read_parquet``): ``row``, ``seed``, ``status``
(``finished``, ``errored``, ``unfinished``), ``error``, ``epochs_run``, ``best_epoch``,
``best_valid_tight_a_map`` (the training's own validation), ``{valid,test}_{tight,loose}``
(a-mAP with the paper's Soft-NMS windows), ``{valid,test}_{visible,unshown}`` (tight a-mAP of the
visible and of the not-shown events), ``test_tight_per_class`` (17 APs, official class order),
``resumed_after_epochs`` (epochs done before the attempt that finished the run), ``wall_seconds``
(of that attempt) and ``run_dir``. Values are fractions; ``report.md`` shows them in percent.

``report.md``: per row the mean ± sample standard deviation over its finished seeds; per class
the test tight AP; each row against the first (the reference): the difference of the seed
means, the two-sided sign-flip test over the seeds finished in both rows (paired by seed
index), and the 95% percentile interval of the difference over resamples of the test games
(:mod:`astra.protocols.statistics`), with a verdict in words.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astra.classes import CLASSES
from astra.files import atomic_write
from astra.protocols import statistics
from astra.protocols.p1 import run_dir
from astra.search.trial import ERROR_NAME, RESULT_NAME

TABLE_NAME = "p1.parquet"
REPORT_NAME = "report.md"
PLOTS_DIR = "plots"
LEVEL = 0.95  # of the bootstrap intervals
ALPHA = 0.05  # a difference is within the noise when p >= ALPHA or its interval holds 0
# With 5 pairs the sign-flip test cannot go below 2 / 2**5 = 0.0625: the paper's five seeds
# pass it when all five agree in sign (p at that floor), a level of 0.0625 rather than 0.05.
FEWEST_PAIRS = 5
# result.json key -> column: the paper's windows (P1 does not search them).
FIGURES: dict[str, str] = {
    "valid_tight": "valid_tight_paper",
    "valid_loose": "valid_loose_paper",
    "valid_visible": "valid_tight_visible_paper",
    "valid_unshown": "valid_tight_unshown_paper",
    "test_tight": "test_tight_paper",
    "test_loose": "test_loose_paper",
    "test_visible": "test_tight_visible_paper",
    "test_unshown": "test_tight_unshown_paper",
}


@dataclass(frozen=True)
class Outcome:
    """What the report says in a few lines, and whether every run of it finished."""

    summary: str
    all_finished: bool


@dataclass(frozen=True)
class Comparison:
    """One row against the reference, on test tight a-mAP (fractions)."""

    row: str
    difference: float  # of the seed means
    loose_difference: float
    pairs: int  # seeds finished in both rows
    p_value: float | None  # None without a pair
    interval: tuple[float, float]

    @property
    def within_noise(self) -> bool:
        low, high = self.interval
        return not self.seeds_agree or low <= 0 <= high

    @property
    def seeds_agree(self) -> bool:
        """Whether the paired seeds tell the difference from noise: p < ALPHA, or at 5 pairs its floor."""
        if self.p_value is None:
            return False
        floor = statistics.smallest_p_value(self.pairs)
        return self.p_value < ALPHA or (self.pairs >= FEWEST_PAIRS and self.p_value <= floor)


def run_records(out: Path, rows: Sequence[str], seeds: int) -> list[dict[str, Any]]:
    """One record per (row, seed) of the report, from the runs' files (module docstring's columns)."""
    records = []
    for row in rows:
        for seed in range(seeds):
            folder = run_dir(out, row, seed)
            result = _read_json(folder / RESULT_NAME)
            error = _read_json(folder / ERROR_NAME)
            status = "finished" if result is not None else "errored" if error is not None else "unfinished"
            result = result or {}
            record: dict[str, Any] = {
                "row": row,
                "seed": seed,
                "status": status,
                "error": (error or {}).get("error", "") if status == "errored" else "",
                "epochs_run": result.get("epochs_run"),
                "best_epoch": result.get("best_epoch"),
                "best_valid_tight_a_map": result.get("best_valid_tight_a_map"),
                **{column: result.get(key) for column, key in FIGURES.items()},
                "test_tight_per_class": result.get("test_tight_per_class_paper"),
                "resumed_after_epochs": result.get("resumed_after_epochs"),
                "wall_seconds": result.get("wall_seconds"),
                "run_dir": str(folder),
            }
            records.append(record)
    return records


def write_table(out: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """``p1.parquet``, written atomically."""
    import polars as pl

    schema: dict[str, Any] = {
        "row": pl.String, "seed": pl.Int64, "status": pl.String, "error": pl.String,
        "epochs_run": pl.Int64, "best_epoch": pl.Int64, "best_valid_tight_a_map": pl.Float64,
        **{column: pl.Float64 for column in FIGURES}, "test_tight_per_class": pl.List(pl.Float64),
        "resumed_after_epochs": pl.Int64, "wall_seconds": pl.Float64, "run_dir": pl.String,
    }  # fmt: skip
    table = pl.DataFrame([{k: r[k] for k in schema} for r in records], schema=schema, orient="row")
    path = out / TABLE_NAME
    with atomic_write(path) as f:
        table.write_parquet(f)
    return path


def compare(
    records: Sequence[Mapping[str, Any]],
    scores: Mapping[tuple[str, int], np.ndarray],
    row: str,
    reference: str,
) -> Comparison | None:
    """``row`` against ``reference`` (None when either has no finished seed)."""
    mine, theirs = _finished(records, row), _finished(records, reference)
    if not mine or not theirs:
        return None
    pairs = sorted(set(mine) & set(theirs))
    differences = [mine[seed]["test_tight"] - theirs[seed]["test_tight"] for seed in pairs]
    interval = statistics.difference_interval(
        np.stack([scores[row, seed] for seed in mine]),
        np.stack([scores[reference, seed] for seed in theirs]),
        LEVEL,
    )
    return Comparison(
        row=row,
        difference=_mean(mine, "test_tight") - _mean(theirs, "test_tight"),
        loose_difference=_mean(mine, "test_loose") - _mean(theirs, "test_loose"),
        pairs=len(pairs),
        p_value=statistics.sign_flip_p_value(differences) if pairs else None,
        interval=interval,
    )


def write_report(
    out: Path,
    records: Sequence[Mapping[str, Any]],
    scores: Mapping[tuple[str, int], np.ndarray],
    *,
    rows: Sequence[tuple[str, Sequence[str]]],
    seeds: int,
    overrides: Sequence[str],
    data: str,
    bootstrap: tuple[int, int],
) -> Outcome:
    """``p1.parquet``, ``report.md`` and the plots; ``rows`` are (name, config files) in report order."""
    names = [name for name, _ in rows]
    reference = names[0]
    write_table(out, records)
    comparisons = [c for c in (compare(records, scores, name, reference) for name in names[1:]) if c]
    intervals = {
        name: statistics.mean_interval(np.stack([scores[name, seed] for seed in finished]), LEVEL)
        for name in names
        if (finished := _finished(records, name))
    }
    resamples, bootstrap_seed = bootstrap
    lines = [
        f"# P1: {len(names)} configuration{'s' * (len(names) > 1)}, seeds 0 to {seeds - 1}",
        "",
        "Each run keeps its best validated epoch (valid tight a-mAP); valid and test are scored with "
        "that checkpoint and the paper's Soft-NMS windows, the test split as it falls "
        "(docs/protocols.md). Values in %: the mean ± the sample standard deviation over the "
        "finished seeds; intervals are 95% percentile intervals over "
        f"{resamples} resamples of the test games (seed {bootstrap_seed}).",
        "",
        f"Data: `{data}`." + (f" Settings of every row: `{' '.join(overrides)}`." if overrides else ""),
        "",
        *[f"- `{name}`: " + (" + ".join(f"`{f}`" for f in files) or "the defaults") for name, files in rows],
        "",
        "## Test split",
        "",
        "| row | seeds | tight a-mAP | 95% interval | loose a-mAP | visible | not shown "
        "| valid tight | best epoch | wall |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        finished = _finished(records, name)
        if not finished:
            lines.append(f"| `{name}` | 0/{seeds} | - | - | - | - | - | - | - | - |")
            continue
        low, high = intervals[name]
        lines.append(
            f"| `{name}` | {len(finished)}/{seeds} | {_spread(finished, 'test_tight')} | "
            f"[{100 * low:.2f}, {100 * high:.2f}] | {_spread(finished, 'test_loose')} | "
            f"{_spread(finished, 'test_visible')} | {_spread(finished, 'test_unshown')} | "
            f"{_spread(finished, 'valid_tight')} | {_spread(finished, 'best_epoch', scale=1, digits=1)} | "
            f"{_wall(finished)} |"
        )
    lines += _per_class_lines(records, names)
    lines += _comparison_lines(comparisons, reference)
    plots = write_plots(out, records, names, intervals)
    if plots:
        lines += ["", "## Plots", "", *[f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in plots]]
    lines += _unfinished_lines(records)
    path = out / REPORT_NAME
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    counts = {s: sum(r["status"] == s for r in records) for s in ("finished", "errored", "unfinished")}
    summary = [
        f"P1: {len(records)} runs (" + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ")",
        *[
            f"  {name:<12} test tight a-mAP {_spread(_finished(records, name), 'test_tight')}"
            for name in names
            if _finished(records, name)
        ],
        *[f"  {_verdict(c, reference).replace('`', '')}" for c in comparisons],
        f"report {path}",
        f"table  {out / TABLE_NAME}",
    ]
    return Outcome("\n".join(summary), counts["finished"] == len(records))


def write_plots(
    out: Path,
    records: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    intervals: Mapping[str, tuple[float, float]],
) -> list[Path]:
    """Per-class test tight AP with error bars over seeds; each row's tight a-mAP with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [name for name in names if _finished(records, name)]
    if not shown:
        return []
    folder = out / PLOTS_DIR
    written = []
    figure, axis = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(shown)
    positions = np.arange(len(CLASSES))
    for i, name in enumerate(shown):
        per_class = np.array([r["test_tight_per_class"] for r in _finished(records, name).values()])
        spread = per_class.std(axis=0, ddof=1) if len(per_class) > 1 else np.zeros(len(CLASSES))
        axis.bar(
            positions - 0.4 + width * (i + 0.5), 100 * per_class.mean(axis=0), width,
            yerr=100 * spread, capsize=2, label=f"{name} ({len(per_class)} seeds)",
        )  # fmt: skip
    axis.set_xticks(list(positions), CLASSES, rotation=60, ha="right", fontsize=8)
    axis.set(ylabel="test tight AP (%)", title="per class: mean and standard deviation over seeds")
    axis.legend(fontsize=8)
    figure.tight_layout()
    written.append(_save(figure, folder / "per_class.png"))

    figure, axis = plt.subplots(figsize=(max(4.0, 1.2 * len(shown) + 2), 4))
    for i, name in enumerate(shown):
        values = [100 * r["test_tight"] for r in _finished(records, name).values()]
        mean = float(np.mean(values))
        low, high = (100 * v for v in intervals[name])
        # Lines, not error bars: a percentile interval need not hold the mean it goes with.
        axis.vlines(i, low, high, colors="tab:blue")
        axis.hlines([low, high], i - 0.1, i + 0.1, colors="tab:blue")
        axis.scatter([i], [mean], s=40, c="tab:blue", zorder=4)
        axis.scatter([i] * len(values), values, s=12, c="gray", zorder=3)
    axis.set_xticks(range(len(shown)), shown)
    axis.set(
        ylabel="test tight a-mAP (%)",
        title="seed mean, 95% interval over test games; dots: seeds",
    )
    figure.tight_layout()
    written.append(_save(figure, folder / "tight_a_map.png"))
    return written


def _per_class_lines(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    shown = [name for name in names if _finished(records, name)]
    if not shown:
        return []
    lines = [
        "",
        "## Per class (test tight AP, %)",
        "",
        "| class | " + " | ".join(f"`{name}`" for name in shown) + " |",
        "|---|" + "---:|" * len(shown),
    ]
    per_class = {
        name: np.array([r["test_tight_per_class"] for r in _finished(records, name).values()])
        for name in shown
    }
    for c, class_name in enumerate(CLASSES):
        cells = [_format(per_class[name][:, c].tolist()) for name in shown]
        lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
    return lines


def _comparison_lines(comparisons: Sequence[Comparison], reference: str) -> list[str]:
    if not comparisons:
        return []
    lines = [
        "",
        f"## Against `{reference}` (test tight a-mAP)",
        "",
        "| row | difference of means | loose difference | seeds paired | sign-flip p | 95% interval "
        "| verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in comparisons:
        low, high = c.interval
        lines.append(
            f"| `{c.row}` | {100 * c.difference:+.2f} | {100 * c.loose_difference:+.2f} | {c.pairs} | "
            f"{'-' if c.p_value is None else f'{c.p_value:.4f}'} | [{100 * low:+.2f}, {100 * high:+.2f}] | "
            f"{'within the noise' if c.within_noise else 'beyond the noise'} |"
        )
    lines += ["", *[f"- {_verdict(c, reference)}" for c in comparisons]]
    lines += [
        "",
        "The difference of means is that of each row's finished seeds. The sign-flip test pairs the "
        "runs of equal seed and asks how often flipping the signs of their differences gives a mean "
        f"at least as far from 0 (two-sided). A difference is within the noise when p >= {ALPHA} "
        f"(with {FEWEST_PAIRS} pairs, whose smallest p is {statistics.smallest_p_value(FEWEST_PAIRS):.4f}: "
        "unless every pair agrees in sign) or the interval over resampled test games contains 0.",
    ]
    return lines


def _verdict(c: Comparison, reference: str) -> str:
    """One sentence: the difference, and whether the seeds and the test games can tell it from noise."""
    low, high = c.interval
    direction = "above" if c.difference > 0 else "below" if c.difference < 0 else "level with"
    points = f"{abs(100 * c.difference):.2f} points" if c.difference else "exactly"
    head = f"`{c.row}` scores {points} of tight a-mAP {direction} `{reference}`"
    if c.p_value is None:
        return f"{head}; no seed finished in both rows, so the seeds cannot be paired."
    reasons = []
    if low <= 0 <= high:
        reasons.append(f"the interval over test games, [{100 * low:+.2f}, {100 * high:+.2f}], contains 0")
    floor = statistics.smallest_p_value(c.pairs)
    if not c.seeds_agree:
        reasons.append(
            f"the sign-flip p over {c.pairs} paired seeds is {c.p_value:.4f}"
            + (f" (the smallest {c.pairs} pairs can give is {floor:.4f})" if floor >= ALPHA else "")
        )
    if not reasons:
        at_floor = (
            f", the smallest {c.pairs} pairs can give: every seed agrees in sign"
            if c.p_value >= ALPHA
            else ""
        )
        return (
            f"{head}: beyond the noise (p = {c.p_value:.4f} over {c.pairs} paired seeds{at_floor}; "
            f"the interval over test games, [{100 * low:+.2f}, {100 * high:+.2f}], excludes 0)."
        )
    return f"{head}: within the noise, since " + " and ".join(reasons) + "."


def _unfinished_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for r in records:
        if r["status"] == "errored":
            lines.append(f"- `{r['row']}` seed {r['seed']}: errored: {r['error']}")
        elif r["status"] == "unfinished":
            lines.append(
                f"- `{r['row']}` seed {r['seed']}: not finished (run the command again to resume it)"
            )
    resumed = [r for r in records if r["status"] == "finished" and r["resumed_after_epochs"]]
    notes = [
        f"- `{r['row']}` seed {r['seed']}: resumed after {r['resumed_after_epochs']} epochs; its wall time "
        "is that of the last attempt only"
        for r in resumed
    ]
    if not lines and not notes:
        return []
    return ["", "## Runs not finished, resumed", "", *lines, *notes]


def _finished(records: Sequence[Mapping[str, Any]], row: str) -> dict[int, Mapping[str, Any]]:
    return {r["seed"]: r for r in records if r["row"] == row and r["status"] == "finished"}


def _mean(runs: Mapping[int, Mapping[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in runs.values()]))


def _spread(runs: Mapping[int, Mapping[str, Any]], key: str, *, scale: float = 100, digits: int = 2) -> str:
    return _format([r[key] for r in runs.values()], scale=scale, digits=digits)


def _format(values: Sequence[float], *, scale: float = 100, digits: int = 2) -> str:
    """``mean ± std`` (scaled), or the mean alone with one value."""
    mean, std = statistics.mean_and_std(values)
    if math.isnan(std):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _wall(runs: Mapping[int, Mapping[str, Any]]) -> str:
    """Mean ± std of the wall times, in the unit that suits their mean (s, min or h)."""
    seconds = [r["wall_seconds"] for r in runs.values()]
    mean = float(np.mean(seconds))
    unit, per = ("h", 3600.0) if mean >= 3600 else ("min", 60.0) if mean >= 60 else ("s", 1.0)
    return _format(seconds, scale=1 / per, digits=1) + f" {unit}"


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
