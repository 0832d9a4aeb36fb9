"""Which trials an ensemble averages, chosen on the validation split only (numpy; no torch, no Ray).

Both selections see the candidates through one function, ``score(ensembles) -> scores``: each
ensemble is ``{trial: weight}`` (weights are pick counts), its score the validation tight a-mAP
of the weighted average of its members' per-position outputs. Scoring several ensembles in one
call lets the caller read each game's outputs once for all of them.

- ``top``: the K best trials by their own validation score, equal weights (the baseline).
- ``greedy``: forward selection with replacement (Caruana et al., ICML 2004). Sorted
  initialisation: of the averages of the 1, 2, ..., ``init`` best trials, the best one starts.
  Then each step adds (again, if already in) the candidate whose addition most raises the score;
  the selection stops when no addition raises it, when the next would make more than K distinct
  members, or after ``max_steps`` steps. A re-pick doubles a member's weight: that is how the
  selection shifts weight towards a member without a separate weight fit.
- ``bags`` > 1: bagged greedy selection, against overfitting the validation split with many
  candidates. Each bag runs the greedy selection on a random ``bag_fraction`` of the candidates;
  the weights of all bags are summed, and the K members with the most weight are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Ensemble = dict[str, int]
Scorer = Callable[[Sequence[Ensemble]], list[float]]
SELECTIONS: tuple[str, ...] = ("greedy", "top")


class SelectionError(ValueError):
    """Selection settings or candidates that cannot give an ensemble; the message says which."""


@dataclass(frozen=True)
class Selection:
    """The chosen members and how the choice went.

    Attributes:
        weights: ``{trial: weight}`` (pick counts), best first.
        score: the validation score of the weighted average.
        history: ``(trial added, score after)`` per step, initialisation included.
        evaluations: ensembles scored.
    """

    weights: dict[str, int]
    score: float
    history: list[tuple[str, float]] = field(default_factory=list)
    evaluations: int = 0

    @property
    def normalised(self) -> dict[str, float]:
        total = sum(self.weights.values())
        return {trial: weight / total for trial, weight in self.weights.items()}


def select(
    candidates: Sequence[str],
    own_scores: Sequence[float],
    score: Scorer,
    k: int,
    *,
    method: str = "greedy",
    init: int = 3,
    max_steps: int | None = None,
    bags: int = 1,
    bag_fraction: float = 0.5,
    seed: int = 0,
) -> Selection:
    """Choose up to ``k`` members among ``candidates`` (see the module docstring).

    ``own_scores[i]`` is candidate i's own validation score (it orders the candidates).
    """
    if k < 1:
        raise SelectionError(f"the number of members must be at least 1, got {k}")
    if method not in SELECTIONS:
        raise SelectionError(f"unknown selection {method!r}; expected one of {', '.join(SELECTIONS)}")
    if not candidates:
        raise SelectionError("no candidate trials to choose from")
    if len(own_scores) != len(candidates) or len(set(candidates)) != len(candidates):
        raise SelectionError("candidates must be distinct, with one own score each")
    if init < 1 or bags < 1 or not 0 < bag_fraction <= 1:
        raise SelectionError(
            f"init and bags must be >= 1 and 0 < bag_fraction <= 1, got {init}, {bags}, {bag_fraction}"
        )
    ranked = [candidates[i] for i in np.argsort(-np.asarray(own_scores, dtype=np.float64), kind="stable")]
    if method == "top":
        weights = {trial: 1 for trial in ranked[:k]}
        (value,) = score([weights])
        return Selection(weights, value, [(trial, value) for trial in weights], 1)
    max_steps = 3 * k if max_steps is None else max_steps
    if bags == 1:
        return _greedy(ranked, score, k, init, max_steps)
    rng = np.random.default_rng(seed)
    total: dict[str, int] = {}
    evaluations = 0
    size = max(1, round(bag_fraction * len(ranked)))
    for _ in range(bags):
        chosen = set(rng.choice(len(ranked), size=size, replace=False).tolist())
        bag = _greedy([t for i, t in enumerate(ranked) if i in chosen], score, k, init, max_steps)
        evaluations += bag.evaluations
        for trial, weight in bag.weights.items():
            total[trial] = total.get(trial, 0) + weight
    kept = sorted(total, key=lambda t: (-total[t], ranked.index(t)))[:k]
    weights = {trial: total[trial] for trial in kept}
    (value,) = score([weights])
    return Selection(weights, value, [(trial, value) for trial in kept], evaluations + 1)


def _greedy(ranked: Sequence[str], score: Scorer, k: int, init: int, max_steps: int) -> Selection:
    """Sorted initialisation, then forward selection with replacement (module docstring)."""
    starts = [{trial: 1 for trial in ranked[:n]} for n in range(1, min(init, k, len(ranked)) + 1)]
    start_scores = score(starts)
    evaluations = len(starts)
    best = int(np.argmax(start_scores))  # the first (fewest members) of equal scores
    weights, current = dict(starts[best]), start_scores[best]
    history = [(trial, start_scores[n]) for n, trial in enumerate(ranked[: best + 1])]
    for _ in range(max_steps):
        options = [t for t in ranked if t in weights or len(weights) < k]
        trials = [{**weights, t: weights.get(t, 0) + 1} for t in options]
        scores = score(trials)
        evaluations += len(trials)
        pick = int(np.argmax(scores))
        if not scores[pick] > current:
            break
        weights, current = trials[pick], scores[pick]
        history.append((options[pick], current))
    ordered = dict(sorted(weights.items(), key=lambda item: (-item[1], ranked.index(item[0]))))
    return Selection(ordered, current, history, evaluations)
