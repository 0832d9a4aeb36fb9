"""An ensemble's ``report.md`` and ``per_class.png``: the ensemble against each member and the best trial."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from astra.classes import CLASSES
from astra.files import atomic_write

COLUMNS = (("tight", "tight"), ("loose", "loose"), ("visible", "visible"), ("unshown", "not shown"))


def write_report(
    out: Path, record: Mapping[str, Any], members: Sequence[Any], best: Any, valid: str, test: str
) -> Path:
    """``report.md`` from ``ensemble.json``'s ``record`` and the members' and best trial's results."""
    scores = record["scores"]
    lines = [
        f"# Ensemble of {len(members)} trial{'s' if len(members) != 1 else ''} "
        f"({record['selection']}, up to {record['top']})",
        "",
        f"Experiment `{record['experiment']}`; members chosen among the {len(record['pool'])} best "
        f"finished trials on {valid} only; {test} figures are reported as they fall.",
        "",
        "| member | weight | own valid tight |",
        "|---|---:|---:|",
    ]
    total = sum(record["members"].values())
    for member in members:
        weight = record["members"][member.trial_id]
        lines.append(f"| {member.trial_id} | {weight}/{total} | {member.valid_score:.4f} |")
    lines += [
        "",
        f"## Scores on {test}",
        "",
        "Each row with the paper's windows and with the windows searched on valid (its own, for a trial).",
        "",
        "| | windows | valid tight | " + " | ".join(f"{test} {name}" for _, name in COLUMNS) + " |",
        "|---|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for windows in ("searched", "paper"):
        row = [f"{scores[test][windows][key]:.4f}" for key, _ in COLUMNS]
        lines.append(
            f"| **ensemble** | {windows} | {scores[valid][windows]['tight']:.4f} | " + " | ".join(row) + " |"
        )
    rows = [(f"best single trial ({best.trial_id})", best)]
    rows += [(m.trial_id, m) for m in members if m.trial_id != best.trial_id]
    for name, trial in rows:
        for windows in ("searched", "paper"):
            result = trial.result
            if f"{test}_tight_{windows}" not in result:
                continue
            row = [_fmt(result.get(_key(test, key, windows))) for key, _ in COLUMNS]
            lines.append(
                f"| {name} | {windows} | {_fmt(result.get(_key(valid, 'tight', windows)))} | "
                + " | ".join(row)
                + " |"
            )
    gain = scores[test]["searched"]["tight"] - best.result.get(f"{test}_tight_searched", np.nan)
    lines += [
        "",
        f"Ensemble against the best single trial on {test} (searched windows): {gain:+.4f} tight a-mAP.",
        "",
    ]
    challenge = record.get("challenge")
    if challenge:
        lines += [
            "## Challenge submission",
            "",
            f"`{challenge['submission']}` ({challenge['games']} games), "
            + (
                "averaging the members retrained under protocol P2 (train+valid+test, each for its "
                "trial's best epoch; `p2/`)."
                if challenge.get("protocol") == "p2"
                else "averaging the members as the search trained them (train only)."
            ),
        ]
        known = challenge.get("withheld_labels")
        if known:
            lines += [
                "",
                "What the challenge server would say, scored against the simulator's withheld "
                f"challenge labels: tight {known['tight']:.4f}, loose {known['loose']:.4f}, "
                f"visible {known['visible']:.4f}, not shown {known['unshown']:.4f}.",
            ]
        lines.append("")
    lines += _diversity(record, members)
    lines += _per_class(
        scores[test]["searched"]["per_class"], best.result.get(f"{test}_tight_per_class_searched"), test
    )
    plot = _plot(out, scores[test]["searched"]["per_class"], best, members, test)
    if plot is not None:
        lines += ["", f"![per-class AP]({plot.name})", ""]
    lines += [
        f"Built in {record['seconds']:.0f} s ({record['evaluations']} ensembles scored during the selection)."
    ]
    path = out / "report.md"
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _key(split: str, metric: str, windows: str) -> str:
    return (
        f"{split}_tight_{metric}_{windows}"
        if metric in ("visible", "unshown")
        else f"{split}_{metric}_{windows}"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _diversity(record: Mapping[str, Any], members: Sequence[Any]) -> list[str]:
    if len(members) < 2:
        return []
    names = [m.trial_id for m in members]
    lines = [
        "## Diversity of the members (valid)",
        "",
        "Correlation of the per-position outputs (every frame and class), and below the diagonal the "
        "mean absolute difference of their per-class APs (paper's windows): lower correlation and "
        "larger differences are what averaging gains from.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    correlation = record["correlation"]
    differences = record["per_class_ap_difference"]
    for i, name in enumerate(names):
        cells = [
            f"{correlation[i][j]:.3f}" if j >= i else f"Δ {differences[i][j]:.3f}" for j in range(len(names))
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _per_class(ensemble: Sequence[float], best: Sequence[float] | None, test: str) -> list[str]:
    lines = [
        f"## Per class on {test} (tight AP, searched windows)",
        "",
        "| class | ensemble | best single | Δ |",
        "|---|---:|---:|---:|",
    ]
    for c, name in enumerate(CLASSES):
        single = best[c] if best is not None else None
        delta = "-" if single is None else f"{ensemble[c] - single:+.4f}"
        lines.append(f"| {name} | {ensemble[c]:.4f} | {_fmt(single)} | {delta} |")
    return lines


def _plot(out: Path, ensemble: Sequence[float], best: Any, members: Sequence[Any], test: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("ensemble", ensemble)]
    single = best.result.get(f"{test}_tight_per_class_searched")
    if single is not None:
        series.append((f"best single ({best.trial_id})", single))
    series += [(m.trial_id, m.result[f"{test}_tight_per_class_searched"]) for m in members if m is not best
               and f"{test}_tight_per_class_searched" in m.result][:4]  # fmt: skip
    x = np.arange(len(CLASSES))
    width = 0.8 / len(series)
    figure, axes = plt.subplots(figsize=(12, 4.5))
    for i, (name, values) in enumerate(series):
        axes.bar(
            x + (i - (len(series) - 1) / 2) * width, values, width, label=name, alpha=1.0 if i == 0 else 0.7
        )
    axes.set_xticks(x, CLASSES, rotation=45, ha="right", fontsize=8)
    axes.set_ylabel(f"{test} tight AP")
    axes.set_title(f"Per-class tight AP on {test}: the ensemble against its members")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = out / "per_class.png"
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(path)
    return path
