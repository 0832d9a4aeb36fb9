"""Synthetic SoccerNet-v2 games, written in the real layout (docs/data.md).

Every later stage (training, inference, evaluation, search) reads a simulated
dataset through the same code path as the real one. What is simulated, and
why, is in ``docs/simulator.md``; in short, per game half:

1. a timeline of true events: Table 1's long tail (tempered, see
   :func:`class_rates_per_minute`), chained by game flow (ball out of play ->
   throw-in or corner, foul -> card -> free kick, goal -> kick-off, ...);
2. labels: per-class "not shown" shares (Figure 3 of the paper) and per-class
   annotation jitter (the noisy labels of Section 3.4);
3. visual features ``[seconds, sum(dims)]``: a slowly varying background plus
   camera-shot changes, and a two-phase class signature around each true
   event whose strength differs across the 5 backbones; weak for not-shown
   events; replays and near misses as unlabelled distractors;
4. audio mel power ``[128, frames]`` at 100 frames per second: a noise floor,
   crowd murmur, crowd swells (goals, shots) and whistles (fouls, offsides,
   kick-offs), whatever the visibility, plus unlabelled whistles and swells.

``simulate(out_dir, config)`` is the API; its settings are
:class:`astra.config.SimulatorConfig`, which ``astra synth`` parses into. Same config ->
byte-identical files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from astra.classes import CLASS_INDEX, CLASSES, NUM_CLASSES, PAPER_CLASS_COUNTS
from astra.config import SimulatorConfig
from astra.data.labels import LABELS_FILENAME, game_time
from astra.data.splits import OFFICIAL_SPLITS, SPLITS_FILENAME
from astra.files import OutputPathError, atomic_write, check_output_folder
from astra.layout import AUDIO_FRAMES_PER_SECOND, AUDIO_PATTERN, AUDIO_REFERENCE_POWER, FEATURES_PATTERN
from astra.layout import NUM_MELS as MEL_BINS

# Challenge labels are hidden in reality; we keep them apart so that submissions can be scored locally.
CHALLENGE_LABELS_DIRNAME = "challenge_labels"
# Rows (seconds) rendered per step: bounded memory at SoccerNet scale. A constant, not a knob,
# because the random stream depends on it and the same seed must give the same bytes.
CHUNK_SECONDS = 120


class SimulatorError(ValueError):
    """An output folder, or settings whose simulation cannot be done; the message names it."""


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`simulate` wrote.

    Attributes:
        games: split name -> game paths relative to the root.
        events_per_class: split name -> ``[17]`` label counts (challenge: the hidden labels).
        not_shown_per_class: split name -> ``[17]`` counts of "not shown" labels.
        total_bytes: size of every file written.
    """

    games: dict[str, list[str]]
    events_per_class: dict[str, np.ndarray]
    not_shown_per_class: dict[str, np.ndarray]
    total_bytes: int

    def summary(self) -> str:
        """A short table: games per split, labels per class and split, disk size."""
        splits = [s for s in OFFICIAL_SPLITS if s in self.games]
        width = max(len(name) for name in CLASSES)
        lines = ["games: " + ", ".join(f"{s} {len(self.games[s])}" for s in splits)]
        lines.append(f"{'labels':<{width}} " + " ".join(f"{s:>9}" for s in splits) + "  not shown")
        for c, name in enumerate(CLASSES):
            counts = " ".join(f"{int(self.events_per_class[s][c]):>9}" for s in splits)
            shown = sum(int(self.events_per_class[s][c]) for s in splits)
            hidden = sum(int(self.not_shown_per_class[s][c]) for s in splits)
            lines.append(f"{name:<{width}} {counts}  {100 * hidden / max(shown, 1):8.0f}%")
        totals = " ".join(f"{int(self.events_per_class[s].sum()):>9}" for s in splits)
        lines.append(f"{'total':<{width}} {totals}")
        lines.append(f"disk: {self.total_bytes / 1e6:.1f} MB")
        return "\n".join(lines)


def simulate(
    out_dir: str | Path, config: SimulatorConfig, progress: bool = True, overwrite: bool = False
) -> SimulationSummary:
    """Write a complete synthetic dataset under ``out_dir``, which must be empty or absent
    unless ``overwrite`` (then our files replace theirs and other files stay).

    Layout: ``<out>/<league>/<season>/<game>/`` with ``Labels-v2.json`` (not for
    challenge games: theirs go to ``<out>/challenge_labels/<game>/``),
    ``{1,2}_baidu_soccer_embeddings.npy`` ``[seconds, sum(dims)]`` float32 and
    ``audio{1,2}.npy`` ``[128, frames]`` float32 mel power; ``<out>/splits.json``
    is written last, so a dataset without it is incomplete.
    """
    from astra.progress import progress as show_progress

    out_dir = Path(out_dir)
    ensure_empty_output(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    bank = _signature_bank(config)
    games = _plan_games(config)
    total_bytes = 0
    for game in show_progress(games, desc="simulating games", unit="game", enabled=progress):
        total_bytes += _write_game(out_dir, game, bank, config)
    splits = {s: [g.name for g in games if g.split == s] for s in OFFICIAL_SPLITS}
    total_bytes += _write_json(out_dir / SPLITS_FILENAME, splits)
    events = {s: np.zeros(NUM_CLASSES, dtype=np.int64) for s in OFFICIAL_SPLITS}
    not_shown = {s: np.zeros(NUM_CLASSES, dtype=np.int64) for s in OFFICIAL_SPLITS}
    for game in games:
        for half in game.halves:
            for event in half.events:
                events[game.split][event.class_index] += 1
                not_shown[game.split][event.class_index] += not event.visible
    return SimulationSummary(splits, events, not_shown, total_bytes)


def ensure_empty_output(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``: simulating must not mix with other data."""
    out_dir = Path(out_dir)
    try:
        check_output_folder(out_dir, "OUT")  # a file, under a file, or where nothing can be written
    except OutputPathError as error:
        raise SimulatorError(str(error)) from None
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise SimulatorError(f"{out_dir}: folder is not empty; choose another or pass --overwrite")


def class_rates_per_minute(config: SimulatorConfig) -> np.ndarray:
    """``[17]`` target labels per minute of play for each class.

    Table 1 of the paper tempered by ``class_tempering``: rate_c ~ count_c ** t,
    scaled so that the classes together make ``events_per_minute``. At t = 1
    Yellow->red cards come once per ~17 hours of play; our default dataset has
    ~1.7 hours in its test split, so a faithful tail would leave the rarest
    classes out of it and cap the Average-mAP (an absent class scores 0). The
    default t = 0.5 keeps the order of Table 1 and a 26:1 head-to-tail ratio
    (690:1 in Table 1); ``min_events_per_split`` then guarantees presence.
    Kick-offs are 0 here: they follow from half starts and goals.
    """
    counts = np.asarray(PAPER_CLASS_COUNTS, dtype=np.float64)
    weights = counts**config.class_tempering
    weights[_KICK_OFF] = 0.0
    return config.events_per_minute * weights / weights.sum()


def split_sizes(num_games: int, fractions: Sequence[float]) -> list[int]:
    """Games per split: at least one for each non-zero fraction, the rest by largest remainder."""
    wanted = [f * num_games for f in fractions]
    sizes = [max(1, math.floor(w)) if f > 0 else 0 for f, w in zip(fractions, wanted, strict=True)]
    while sum(sizes) > num_games:
        sizes[int(np.argmax(sizes))] -= 1
    while sum(sizes) < num_games:
        remainders = [w - s if f > 0 else -math.inf for f, w, s in zip(fractions, wanted, sizes, strict=True)]
        sizes[int(np.argmax(remainders))] += 1
    return sizes


def not_shown_shares(config: SimulatorConfig) -> np.ndarray:
    """``[17]`` probability that a label of each class is "not shown".

    Approximately Figure 3 of the paper (kick-offs, clearances and indirect free-kicks are
    often not shown; goals and cards rarely), times ``not_shown_scale``, capped at 0.95.
    """
    shares = np.array([_TRAITS[name].not_shown_share for name in CLASSES])
    return np.minimum(shares * config.not_shown_scale, 0.95)


def label_jitter_seconds(config: SimulatorConfig) -> np.ndarray:
    """``[17]`` spread (std, seconds) of label time - true time for visible events; twice that
    for not-shown ones, whose instant the annotator must guess. Cut at 3 std."""
    return np.array([_TRAITS[name].jitter_seconds for name in CLASSES]) * config.label_jitter_scale


# --- Per-class facts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClassTraits:
    """How one class looks, sounds and is labelled. Seconds are relative to the true event time."""

    not_shown_share: float  # Figure 3 of the paper (read approximately: kick-offs, clearances, IFKs high)
    jitter_seconds: float  # std of label - true time; larger where the instant is a judgement call (Fig. 5)
    visual_strength: float  # how distinct the class is on screen (goals and cards more than clearances)
    family: str  # classes of one family share part of their signature direction, so they confuse
    onset: tuple[float, float]  # lag and width (s) of the signature at the action itself
    aftermath: tuple[float, float, float]  # lag, width (s) and height of the reaction that follows
    replay_probability: float  # broadcasters replay goals, chances and incidents, not throw-ins
    whistle: tuple[float, float, float]  # probability, delay range (s) of the referee's whistle
    crowd: tuple[float, float, float]  # probability, rise (dB), decay time (s) of the crowd's reaction


_TRAITS: dict[str, _ClassTraits] = {
    # name: (not shown, jitter s, visual, family, onset, aftermath,
    #        replay, whistle (p, from s, to s), crowd (p, dB, decay s))
    "Penalty": _ClassTraits(
        0.05, 0.3, 1.3, "attempt", (-0.5, 1.2), (3.0, 2.0, 1.0),
        0.8, (0.95, -3.0, -1.0), (0.9, 12.0, 4.0),
    ),
    "Kick-off": _ClassTraits(
        0.45, 0.8, 0.9, "restart", (0.0, 1.0), (2.0, 1.5, 0.4),
        0.0, (0.9, -1.2, -0.2), (0.2, 3.0, 2.0),
    ),
    "Goal": _ClassTraits(
        0.03, 0.3, 1.4, "attempt", (0.0, 1.0), (5.0, 3.0, 1.2),
        0.95, (0.3, 1.0, 4.0), (0.95, 18.0, 10.0),
    ),
    "Substitution": _ClassTraits(
        0.25, 1.2, 1.2, "discipline", (0.0, 2.0), (4.0, 3.0, 0.6),
        0.1, (0.2, -3.0, 0.0), (0.3, 3.0, 5.0),
    ),
    "Offside": _ClassTraits(
        0.2, 0.8, 0.9, "stoppage", (0.0, 1.0), (2.0, 1.5, 0.5),
        0.4, (0.85, 0.5, 2.0), (0.2, 3.0, 2.0),
    ),
    "Shots on target": _ClassTraits(
        0.08, 0.4, 1.0, "attempt", (0.0, 0.8), (2.0, 1.5, 0.5),
        0.5, (0.02, 0.0, 1.0), (0.8, 9.0, 2.5),
    ),
    "Shots off target": _ClassTraits(
        0.1, 0.4, 1.0, "attempt", (0.0, 0.8), (2.0, 1.5, 0.4),
        0.45, (0.02, 0.0, 1.0), (0.7, 7.0, 2.0),
    ),
    "Clearance": _ClassTraits(
        0.45, 0.7, 0.7, "play", (0.0, 0.7), (1.5, 1.0, 0.3),
        0.05, (0.02, 0.0, 1.0), (0.15, 3.0, 1.5),
    ),
    "Ball out of play": _ClassTraits(
        0.15, 0.6, 0.9, "play", (0.0, 0.8), (2.0, 1.5, 0.4),
        0.05, (0.1, 0.5, 2.0), (0.1, 2.0, 1.5),
    ),
    "Throw-in": _ClassTraits(
        0.3, 0.6, 0.9, "restart", (-1.0, 1.2), (1.0, 1.0, 0.3),
        0.0, (0.02, 0.0, 1.0), (0.05, 2.0, 1.5),
    ),
    "Foul": _ClassTraits(
        0.2, 0.6, 0.9, "stoppage", (0.0, 0.8), (2.0, 2.0, 0.6),
        0.3, (0.85, 0.3, 1.2), (0.35, 5.0, 2.0),
    ),
    "Indirect free-kick": _ClassTraits(
        0.45, 0.8, 0.8, "restart", (-1.5, 1.5), (1.5, 1.0, 0.4),
        0.05, (0.25, -2.0, -0.3), (0.05, 2.0, 1.5),
    ),
    "Direct free-kick": _ClassTraits(
        0.1, 0.5, 1.1, "restart", (-1.5, 1.5), (1.5, 1.0, 0.5),
        0.2, (0.6, -2.5, -0.5), (0.6, 6.0, 2.0),
    ),
    "Corner": _ClassTraits(
        0.1, 0.5, 1.0, "restart", (-2.0, 1.5), (1.0, 1.0, 0.4),
        0.05, (0.05, -1.0, 0.0), (0.4, 4.0, 2.0),
    ),
    "Yellow card": _ClassTraits(
        0.1, 0.8, 1.1, "discipline", (0.0, 1.0), (2.5, 2.0, 0.7),
        0.6, (0.2, -2.0, 0.0), (0.4, 4.0, 3.0),
    ),
    "Red card": _ClassTraits(
        0.1, 0.8, 1.2, "discipline", (0.0, 1.0), (2.5, 2.0, 0.8),
        0.8, (0.5, -2.0, 0.0), (0.7, 8.0, 5.0),
    ),
    "Yellow->red card": _ClassTraits(
        0.1, 0.8, 1.2, "discipline", (0.0, 1.0), (2.5, 2.0, 0.8),
        0.8, (0.5, -2.0, 0.0), (0.7, 8.0, 5.0),
    ),
}  # fmt: skip
_FAMILIES: tuple[str, ...] = ("attempt", "restart", "discipline", "stoppage", "play")

_PENALTY, _KICK_OFF, _GOAL, _SUBSTITUTION = (
    CLASS_INDEX[n] for n in ("Penalty", "Kick-off", "Goal", "Substitution")
)
_OUT, _THROW_IN, _FOUL, _CORNER = (CLASS_INDEX[n] for n in ("Ball out of play", "Throw-in", "Foul", "Corner"))
_CARDS = tuple(CLASS_INDEX[n] for n in ("Yellow card", "Red card", "Yellow->red card"))


@dataclass(frozen=True)
class _FollowUp:
    """One possible consequence of an event: ``child`` after a delay drawn in ``delay_seconds``."""

    child: int
    probability: float  # as observed in Table 1 (e.g. 18,918 throw-ins / 31,810 balls out = 0.59)
    delay_seconds: tuple[float, float]
    team: str  # "same", "other" (the opponent), "random" or "none" (the event has no team)


def _f(child: str, probability: float, low: float, high: float, team: str) -> _FollowUp:
    return _FollowUp(CLASS_INDEX[child], probability, (low, high), team)


# Parent -> outcome groups. Each group is one categorical draw (at most one follow-up); groups are
# sequential: a foul's free kick comes after its card, if any.
_FOLLOW_UPS: dict[int, tuple[tuple[_FollowUp, ...], ...]] = {
    _OUT: ((_f("Throw-in", 0.59, 5, 15, "random"), _f("Corner", 0.15, 12, 30, "random")),),
    CLASS_INDEX["Shots off target"]: ((_f("Ball out of play", 0.8, 0.5, 2.5, "none"),),),
    CLASS_INDEX["Shots on target"]: (
        (_f("Goal", 0.25, 0.3, 1.5, "same"), _f("Ball out of play", 0.15, 1.0, 3.0, "none")),
    ),
    CLASS_INDEX["Clearance"]: ((_f("Ball out of play", 0.3, 1.0, 4.0, "none"),),),
    _CORNER: (
        (
            _f("Clearance", 0.35, 1.5, 5.0, "other"),
            _f("Shots on target", 0.05, 1.5, 4.0, "same"),
            _f("Shots off target", 0.1, 1.5, 4.0, "same"),
        ),
    ),
    _FOUL: (
        (
            _f("Yellow card", 0.175, 15, 45, "same"),
            _f("Red card", 0.005, 20, 60, "same"),
            _f("Yellow->red card", 0.004, 20, 60, "same"),
        ),
        (
            _f("Penalty", 0.015, 50, 110, "other"),
            _f("Direct free-kick", 0.19, 15, 40, "other"),
            _f("Indirect free-kick", 0.72, 8, 30, "other"),
        ),
    ),
    CLASS_INDEX["Offside"]: ((_f("Indirect free-kick", 0.95, 10, 30, "other"),),),
    CLASS_INDEX["Direct free-kick"]: (
        (_f("Shots on target", 0.12, 0.5, 2.0, "same"), _f("Shots off target", 0.2, 0.5, 2.0, "same")),
    ),
    _PENALTY: (
        (
            _f("Goal", 0.75, 0.3, 1.2, "same"),
            _f("Shots on target", 0.15, 0.2, 1.0, "same"),
            _f("Shots off target", 0.1, 0.2, 1.0, "same"),
        ),
    ),
    # The conceding team restarts, after the celebration.
    _GOAL: ((_f("Kick-off", 1.0, 45, 90, "other"),),),
}

# Children that only ever follow this parent (no throw-in without the ball going out first, no card
# without a foul): their whole rate comes through the parent, whatever the tempering. A split that
# lacks one gets it injected in this context. A penalty's goal is the one other way to score.
_ONLY_AFTER: dict[int, int] = {
    **dict.fromkeys(_CARDS, _FOUL),
    _PENALTY: _FOUL,
    _THROW_IN: _OUT,
    _CORNER: _OUT,
    _GOAL: CLASS_INDEX["Shots on target"],
}
# Most of one outcome group that a parent may use: some balls out end in a goal kick (no label).
_MAX_FOLLOW_UP_SHARE = 0.9

_SUBSTITUTIONS_PER_EPISODE = 1.3  # a second change follows the first in 30% of the stoppages
_SECOND_HALF_SUBSTITUTION_SHARE = 0.8  # most changes come after half-time
_LEAGUES: dict[str, tuple[str, ...]] = {
    "england_epl": ("Arsenal", "Chelsea", "Liverpool", "Manchester City", "Manchester United", "Tottenham",
                    "Everton", "Southampton", "West Ham", "Leicester", "Swansea", "Stoke City", "Burnley"),
    "spain_laliga": ("Barcelona", "Real Madrid", "Atl. Madrid", "Sevilla", "Valencia", "Villarreal",
                     "Ath Bilbao", "Celta Vigo", "Real Sociedad", "Malaga", "Espanyol", "Eibar"),
    "italy_serie-a": ("Juventus", "AS Roma", "Napoli", "Inter", "AC Milan", "Lazio", "Fiorentina",
                      "Atalanta", "Torino", "Sampdoria", "Genoa", "Sassuolo"),
    "germany_bundesliga": ("Bayern Munich", "Dortmund", "Bayer Leverkusen", "Schalke", "Wolfsburg",
                           "M'gladbach", "Hoffenheim", "Hertha Berlin", "Mainz", "Augsburg", "Werder Bremen"),
    "france_ligue-1": ("Paris SG", "Marseille", "Lyon", "Monaco", "Lille", "Nice", "Bordeaux",
                       "St Etienne", "Rennes", "Nantes", "Montpellier", "Guingamp"),
}  # fmt: skip
_SEASONS: tuple[str, ...] = ("2014-2015", "2015-2016", "2016-2017")
_KICK_OFF_TIMES: tuple[str, ...] = ("13-30", "15-00", "16-00", "17-30", "18-00", "19-45", "20-45", "21-45")


# --- Planning: what happens when -----------------------------------------------------------------


@dataclass(slots=True)
class _Event:
    """One labelled event. ``time_seconds`` is the truth the features show; the label is jittered."""

    time_seconds: float
    class_index: int
    team: str
    visible: bool = True
    label_ms: int = 0


@dataclass(slots=True)
class _HalfPlan:
    number: int  # 1 or 2
    seconds: int  # feature rows
    audio_frames: int
    events: list[_Event] = field(default_factory=list)
    # Signatures to draw: (true time s, class, strength factor) of events, replays and near misses.
    marks: list[tuple[float, int, float]] = field(default_factory=list)
    replay_spans: list[tuple[float, float]] = field(default_factory=list)  # (start s, end s)
    whistles: list[tuple[float, float, float, float]] = field(default_factory=list)  # time, s, bin, dB
    swells: list[tuple[float, float, float]] = field(default_factory=list)  # time s, rise dB, decay s


@dataclass(slots=True)
class _GamePlan:
    index: int
    split: str
    halves: tuple[_HalfPlan, _HalfPlan]
    name: str = ""  # league/season/title, set once the goals are known
    home: str = ""
    away: str = ""
    date: str = ""  # "DD/MM/YYYY - HH:MM", as Labels-v2.json has it

    @property
    def score(self) -> tuple[int, int]:
        """Goals of the home and away teams."""
        goals = [e.team for h in self.halves for e in h.events if e.class_index == _GOAL]
        return goals.count("home"), goals.count("away")


def _plan_games(config: SimulatorConfig) -> list[_GamePlan]:
    """Timelines of every game, then the per-split floor, then labels, evidence and names."""
    standalone, follow_ups = _standalone_rates_and_follow_ups(config)
    sizes = split_sizes(config.num_games, config.split_shares)
    splits = [s for s, n in zip(OFFICIAL_SPLITS, sizes, strict=True) for _ in range(n)]
    games = []
    for index, split in enumerate(splits):
        rng = np.random.default_rng([config.seed, 1, index])
        halves = tuple(_half_lengths(rng, number, config) for number in (1, 2))
        for half in halves:
            _sample_half_events(rng, half, standalone, follow_ups)
        _sample_substitutions(rng, halves, standalone[_SUBSTITUTION])
        games.append(_GamePlan(index, split, halves))  # type: ignore[arg-type]
    _enforce_split_floor(games, config, follow_ups)
    for game in games:
        for half in game.halves:
            half.events.sort(key=lambda e: (e.time_seconds, e.class_index))
            _annotate_half(np.random.default_rng([config.seed, 4, game.index, half.number]), half, config)
    _name_games(games, config.seed)
    return games


def _standalone_rates_and_follow_ups(
    config: SimulatorConfig,
) -> tuple[np.ndarray, dict[int, tuple[tuple[_FollowUp, ...], ...]]]:
    """Rates of events that start an episode, and follow-up probabilities, so that each class's
    marginal rate matches :func:`class_rates_per_minute`.

    A class's rate is r_c = s_c + sum over parents r_p * p(p -> c), with s_c its standalone rate.
    Follow-up probabilities start as the game's rules observed in Table 1. Tempering changes the
    class ratios, so: a child in ``_ONLY_AFTER`` gets s_c = 0 and its parent's probability is
    solved for; where a parent's outcome group would then exceed ``_MAX_FOLLOW_UP_SHARE``, the
    parent's own rate is raised (more balls out of play, so that every throw-in has one);
    other children whose parents already make too many are scaled down; the rest of each rate
    starts on its own.
    """
    rates = class_rates_per_minute(config)
    if not config.game_flow:
        # Independent classes; kick-offs still open each half, and one follows each goal on average.
        standalone = rates.copy()
        standalone[_KICK_OFF] = rates[_GOAL]
        return standalone, {}
    table = {
        (parent, g, i): f
        for parent, groups in _FOLLOW_UPS.items()
        for g, group in enumerate(groups)
        for i, f in enumerate(group)
    }
    tied = {key for key, f in table.items() if _ONLY_AFTER.get(f.child) == key[0]}
    # A second round settles it: raising a parent changes no other parent's needs.
    for _ in range(3):
        probability = {key: f.probability for key, f in table.items()}
        for key in tied:
            child, parent = table[key].child, key[0]
            from_others = sum(
                rates[k[0]] * f.probability for k, f in table.items() if f.child == child and k not in tied
            )
            probability[key] = max(rates[child] - from_others, 0.0) / max(rates[parent], 1e-12)
        caps = {
            (parent, g): max(_MAX_FOLLOW_UP_SHARE, sum(f.probability for f in group))
            for parent, groups in _FOLLOW_UPS.items()
            for g, group in enumerate(groups)
        }
        needed = {
            group: sum(p for k, p in probability.items() if k[:2] == group and k in tied) for group in caps
        }
        factors = {
            parent: max(needed[group] / cap for group, cap in caps.items() if group[0] == parent)
            for parent in _FOLLOW_UPS
        }
        if all(factor <= 1 + 1e-9 for factor in factors.values()):
            break
        for parent, factor in factors.items():
            # The parent must happen more often than its target for its tied children to fit.
            rates[parent] *= max(factor, 1.0)
    for group, cap in caps.items():
        # Untied children share what the tied ones leave of the group.
        untied = [k for k in probability if k[:2] == group and k not in tied]
        wanted = sum(probability[k] for k in untied)
        free = max(cap - needed[group], 0.0)
        if wanted > free:
            for k in untied:
                probability[k] *= free / wanted
    derived = np.zeros(NUM_CLASSES)
    for key, p in probability.items():
        derived[table[key].child] += rates[key[0]] * p
    scale = np.ones(NUM_CLASSES)
    too_many = derived > rates * (1 + 1e-9)
    too_many[_KICK_OFF] = False  # kick-offs are not a target: every goal has one
    scale[too_many] = rates[too_many] / derived[too_many]
    follow_ups = {
        parent: tuple(
            tuple(
                _FollowUp(
                    f.child, probability[(parent, g, i)] * float(scale[f.child]), f.delay_seconds, f.team
                )
                for i, f in enumerate(group)
            )
            for g, group in enumerate(groups)
        )
        for parent, groups in _FOLLOW_UPS.items()
    }
    standalone = np.maximum(rates - derived * scale, 0.0)
    standalone[_KICK_OFF] = 0.0
    for child in _ONLY_AFTER:
        standalone[child] = 0.0
    return standalone, follow_ups


def _half_lengths(rng: np.random.Generator, number: int, config: SimulatorConfig) -> _HalfPlan:
    seconds = round(60 * config.half_minutes + rng.uniform(0, config.half_spread_seconds))
    # Real audio and visual files of a half disagree by a few seconds (docs/data.md).
    offset = rng.uniform(1.0, max(1.0, config.audio_offset_seconds)) * rng.choice((-1.0, 1.0))
    audio_frames = max(AUDIO_FRAMES_PER_SECOND, round((seconds + offset) * AUDIO_FRAMES_PER_SECOND))
    return _HalfPlan(number, seconds, audio_frames)


def _sample_half_events(
    rng: np.random.Generator,
    half: _HalfPlan,
    standalone: np.ndarray,
    follow_ups: dict[int, tuple[tuple[_FollowUp, ...], ...]],
) -> None:
    # The broadcast starts a few seconds before the kick-off of each half.
    _expand(rng, _Event(rng.uniform(1.0, 6.0), _KICK_OFF, _random_team(rng)), half, follow_ups, 0)
    minutes = half.seconds / 60
    for class_index in range(NUM_CLASSES):
        if class_index == _SUBSTITUTION:
            continue
        count = rng.poisson(standalone[class_index] * minutes)
        for time in np.sort(rng.uniform(5.0, half.seconds - 2.0, count)):
            team = "not applicable" if class_index == _OUT else _random_team(rng)
            _expand(rng, _Event(float(time), class_index, team), half, follow_ups, 0)


def _expand(
    rng: np.random.Generator,
    event: _Event,
    half: _HalfPlan,
    follow_ups: dict[int, tuple[tuple[_FollowUp, ...], ...]],
    depth: int,
    forced_child: int | None = None,
) -> None:
    """Add ``event`` and, recursively, the follow-ups it draws (``forced_child`` is always drawn)."""
    half.events.append(event)
    if depth > 8:  # chains are short (loop gain ~0.02); this only bounds pathological settings
        return
    time = event.time_seconds
    for group in follow_ups.get(event.class_index, ()):
        chosen = _draw_follow_up(rng, group, forced_child)
        if chosen is None:
            continue
        child_time = time + rng.uniform(*chosen.delay_seconds)
        if child_time >= half.seconds - 1.0:
            return  # the half ends first, and with it the episode
        child = _Event(child_time, chosen.child, _child_team(rng, event.team, chosen.team))
        _expand(rng, child, half, follow_ups, depth + 1)
        time = child_time


def _draw_follow_up(
    rng: np.random.Generator, group: tuple[_FollowUp, ...], forced_child: int | None
) -> _FollowUp | None:
    draw = rng.random()
    for follow_up in group:
        if follow_up.child == forced_child:
            return follow_up
    for follow_up in group:
        if draw < follow_up.probability:
            return follow_up
        draw -= follow_up.probability
    return None


def _sample_substitutions(
    rng: np.random.Generator, halves: tuple[_HalfPlan, ...], rate_per_minute: float
) -> None:
    """Substitutions cluster after half-time: some at the restart, most in the last third."""
    minutes = sum(h.seconds for h in halves) / 60
    for _ in range(rng.poisson(rate_per_minute * minutes / _SUBSTITUTIONS_PER_EPISODE)):
        team = _random_team(rng)
        if rng.random() < _SECOND_HALF_SUBSTITUTION_SHARE:
            half = halves[1]
            # A quarter are made during the break and labelled as play restarts.
            time = rng.uniform(0.0, 20.0) if rng.random() < 0.25 else half.seconds * rng.beta(3.0, 1.5)
        else:
            half = halves[0]
            time = rng.uniform(0.0, half.seconds)
        times = [time]
        if rng.random() < _SUBSTITUTIONS_PER_EPISODE - 1:
            times.append(time + rng.uniform(5.0, 15.0))
        for t in times:
            if t < half.seconds - 1.0:
                half.events.append(_Event(float(t), _SUBSTITUTION, team))


def _enforce_split_floor(
    games: list[_GamePlan], config: SimulatorConfig, follow_ups: dict[int, tuple[tuple[_FollowUp, ...], ...]]
) -> None:
    """Inject episodes until every split has ``min_events_per_split`` labels of every class."""
    for split_number, split in enumerate(OFFICIAL_SPLITS):
        members = [g for g in games if g.split == split]
        if not members:
            continue
        rng = np.random.default_rng([config.seed, 3, split_number])
        for class_index in range(NUM_CLASSES):
            for _ in range(1000):
                count = sum(e.class_index == class_index for g in members for h in g.halves for e in h.events)
                if count >= config.min_events_per_split:
                    break
                game = members[rng.integers(len(members))]
                _inject(rng, game.halves[rng.integers(2)], class_index, follow_ups)
            else:
                raise SimulatorError(
                    f"cannot place {config.min_events_per_split} {CLASSES[class_index]!r} events in the "
                    f"{split} split: halves of {config.half_minutes} minutes are too short"
                )


def _inject(
    rng: np.random.Generator,
    half: _HalfPlan,
    class_index: int,
    follow_ups: dict[int, tuple[tuple[_FollowUp, ...], ...]],
) -> None:
    parent = _ONLY_AFTER.get(class_index) if follow_ups else None
    if parent is None:
        event = _Event(rng.uniform(5.0, half.seconds - 2.0), class_index, _random_team(rng))
        _expand(rng, event, half, follow_ups, 0)
        return
    # Leave room for the forced follow-up's longest delay (a penalty comes up to 110 s after its foul).
    longest_delay = max(
        f.delay_seconds[1] for group in _FOLLOW_UPS[parent] for f in group if f.child == class_index
    )
    latest = max(5.5, half.seconds - 2.0 - longest_delay)
    team = "not applicable" if parent == _OUT else _random_team(rng)
    _expand(
        rng, _Event(rng.uniform(5.0, latest), parent, team), half, follow_ups, 0, forced_child=class_index
    )


def _annotate_half(rng: np.random.Generator, half: _HalfPlan, config: SimulatorConfig) -> None:
    """Visibility, label jitter, replays, near misses and audio cues of one half."""
    rates = class_rates_per_minute(config)
    not_shown = not_shown_shares(config)
    jitter_seconds = label_jitter_seconds(config)
    for event in half.events:
        traits = _TRAITS[CLASSES[event.class_index]]
        event.visible = rng.random() >= not_shown[event.class_index]
        spread = jitter_seconds[event.class_index] * (1.0 if event.visible else 2.0)
        # Drawn even at zero spread, so that the jitter knob changes nothing else.
        jitter = spread * float(np.clip(rng.standard_normal(), -3.0, 3.0))
        label_seconds = min(max(event.time_seconds + jitter, 0.0), half.seconds - 0.001)
        event.label_ms = round(1000 * label_seconds)
        strength = 1.0 if event.visible else rng.uniform(0.0, config.not_shown_visual_strength)
        half.marks.append((event.time_seconds, event.class_index, strength))
        _add_replays(rng, half, event, traits, config.replay_scale)
        _add_audio_cues(rng, half, event.time_seconds, traits, config.audio_strength)
    minutes = half.seconds / 60
    class_share = rates / rates.sum()
    for _ in range(rng.poisson(config.near_misses_per_minute * minutes)):
        class_index = int(rng.choice(NUM_CLASSES, p=class_share))
        half.marks.append((rng.uniform(0.0, half.seconds), class_index, rng.uniform(0.3, 0.6)))
    for _ in range(rng.poisson(config.audio_distractors_per_minute * minutes / 2)):
        _add_whistle(rng, half, rng.uniform(0.0, half.seconds), config.audio_strength)
    for _ in range(rng.poisson(config.audio_distractors_per_minute * minutes / 2)):
        half.swells.append(
            (rng.uniform(0.0, half.seconds), rng.uniform(3.0, 8.0) * config.audio_strength, 2.0)
        )
    # The final whistle, unlabelled.
    _add_whistle(rng, half, half.seconds - rng.uniform(1.0, 5.0), config.audio_strength, duration=1.5)


def _add_replays(
    rng: np.random.Generator, half: _HalfPlan, event: _Event, traits: _ClassTraits, replay_scale: float
) -> None:
    # What was not shown live is often what the replay shows.
    probability = traits.replay_probability * replay_scale * (1.0 if event.visible else 1.5)
    start = event.time_seconds
    for _ in range(2):  # a second angle, less often
        if rng.random() >= probability:
            break
        start += rng.uniform(10.0, 40.0)
        duration = rng.uniform(4.0, 10.0)
        if start + duration >= half.seconds:
            break
        half.replay_spans.append((start, start + duration))
        half.marks.append(
            (start + rng.uniform(1.0, duration - 2.0), event.class_index, rng.uniform(0.5, 0.9))
        )
        start += duration
        probability *= 0.5


def _add_audio_cues(
    rng: np.random.Generator, half: _HalfPlan, time: float, traits: _ClassTraits, audio_strength: float
) -> None:
    whistle_probability, early, late = traits.whistle
    if rng.random() < whistle_probability:
        _add_whistle(rng, half, time + rng.uniform(early, late), audio_strength)
    crowd_probability, rise_db, decay_seconds = traits.crowd
    if rng.random() < crowd_probability:
        rise = max(0.0, rise_db + rng.normal(0.0, 2.0)) * audio_strength
        half.swells.append((time + rng.uniform(0.2, 0.8), rise, decay_seconds * rng.uniform(0.7, 1.3)))


def _add_whistle(
    rng: np.random.Generator,
    half: _HalfPlan,
    time: float,
    audio_strength: float,
    duration: float | None = None,
) -> None:
    # A referee's whistle: ~3.5 kHz, mel bins 86-94 of 128 (0-8 kHz), 40-50 dB over the floor there.
    length = rng.uniform(0.3, 0.9) if duration is None else duration
    rise_db = rng.uniform(40.0, 50.0) * audio_strength
    half.whistles.append((time, length, rng.uniform(86.0, 94.0), rise_db))


def _name_games(games: list[_GamePlan], seed: int) -> None:
    """``league/season/YYYY-MM-DD - HH-MM Home S - S Away``, the score counted from the goals."""
    taken: set[str] = set()
    for game in games:
        rng = np.random.default_rng([seed, 6, game.index])
        home_goals, away_goals = game.score
        while True:
            league = str(rng.choice(list(_LEAGUES)))
            home, away = (str(t) for t in rng.choice(_LEAGUES[league], size=2, replace=False))
            season = str(rng.choice(_SEASONS))
            day = str(np.datetime64(f"{season[:4]}-08-10") + rng.integers(0, 290))
            time = str(rng.choice(_KICK_OFF_TIMES))
            name = f"{league}/{season}/{day} - {time} {home} {home_goals} - {away_goals} {away}"
            if name not in taken:
                break
        taken.add(name)
        game.name, game.home, game.away = name, home, away
        game.date = f"{day[8:10]}/{day[5:7]}/{day[:4]} - {time.replace('-', ':')}"


def _random_team(rng: np.random.Generator) -> str:
    return "home" if rng.random() < 0.5 else "away"


def _child_team(rng: np.random.Generator, parent_team: str, relation: str) -> str:
    if relation == "none":
        return "not applicable"
    if relation == "random" or parent_team not in ("home", "away"):
        return _random_team(rng)
    if relation == "same":
        return parent_team
    return "away" if parent_team == "home" else "home"


# --- Rendering: features and audio ----------------------------------------------------------------


@dataclass(frozen=True)
class _SignatureBank:
    """The dataset-wide look of every class and of the background.

    Attributes:
        onset: ``[17, D]`` signature at the action; per backbone, a unit direction times the
            class's strength in that backbone.
        aftermath: ``[17, D]`` signature of the reaction that follows, likewise.
        latent_projection: ``[K, D]`` block-diagonal map of the slow background factors.
        scene_vectors: ``[5, D]`` mean shift of each camera shot type; the last is the replay look.
    """

    onset: np.ndarray
    aftermath: np.ndarray
    latent_projection: np.ndarray
    scene_vectors: np.ndarray


_LATENT_FACTORS_PER_BACKBONE = 8
_SCENE_SHARES = (0.65, 0.2, 0.1, 0.05)  # main camera, close-up, crowd, graphics; replays are forced
_WHITE_NOISE_STD = 1.0  # the unit of signal_strength
_LATENT_STD = 0.6  # per dimension: the slowly varying part of the background
_SCENE_STD = 0.5  # per dimension: how far a camera cut moves the features
_GAME_OFFSET_STD = 0.3  # per dimension: stadium, broadcaster and weather differ between games
_SIGNATURE_WINDOW_SECONDS = (-8, 14)  # rows around an event that its signature can reach


def _signature_bank(config: SimulatorConfig) -> _SignatureBank:
    rng = np.random.default_rng([config.seed, 0])
    onsets, aftermaths, projections, scenes = [], [], [], []
    for dim in config.feature_dims:
        # Directions mix an all-events part, a family part and a class part (weights 0.4, 0.5, 0.77):
        # cosine ~0.41 within a family, ~0.16 across, so related classes are confused, as in real data.
        directions = []
        for _phase in range(2):
            common = rng.standard_normal(dim)
            family = {name: rng.standard_normal(dim) for name in _FAMILIES}
            own = rng.standard_normal((NUM_CLASSES, dim))
            mixed = np.stack(
                [
                    0.4 * common + 0.5 * family[_TRAITS[name].family] + 0.77 * own[c]
                    for c, name in enumerate(CLASSES)
                ]
            )
            directions.append(mixed / np.linalg.norm(mixed, axis=1, keepdims=True))
        onsets.append(directions[0])
        aftermaths.append(directions[1])
        projections.append(rng.standard_normal((_LATENT_FACTORS_PER_BACKBONE, dim)) * _LATENT_STD)
        scenes.append(rng.standard_normal((len(_SCENE_SHARES) + 1, dim)) * _SCENE_STD)
    # Some backbones see a class better than others: log-normal strengths with mean 1 per class.
    per_backbone = np.exp(rng.normal(0.0, config.backbone_spread, (NUM_CLASSES, len(config.feature_dims))))
    per_backbone /= per_backbone.mean(axis=1, keepdims=True)
    class_strength = np.array([_TRAITS[name].visual_strength for name in CLASSES])
    after_height = np.array([_TRAITS[name].aftermath[2] for name in CLASSES])
    weights = class_strength[:, None] * per_backbone  # [17, 5]
    onset = np.concatenate([d * weights[:, [b]] for b, d in enumerate(onsets)], axis=1)
    aftermath = np.concatenate(
        [d * (weights[:, [b]] * after_height[:, None]) for b, d in enumerate(aftermaths)], axis=1
    )
    factors = _LATENT_FACTORS_PER_BACKBONE * len(config.feature_dims)
    projection = np.zeros((factors, config.feature_dim))
    column = 0
    for b, block in enumerate(projections):
        rows = slice(b * _LATENT_FACTORS_PER_BACKBONE, (b + 1) * _LATENT_FACTORS_PER_BACKBONE)
        projection[rows, column : column + block.shape[1]] = block
        column += block.shape[1]
    return _SignatureBank(
        onset=onset.astype(np.float32),
        aftermath=aftermath.astype(np.float32),
        latent_projection=projection.astype(np.float32),
        scene_vectors=np.concatenate(scenes, axis=1).astype(np.float32),
    )


def _write_game(out_dir: Path, game: _GamePlan, bank: _SignatureBank, config: SimulatorConfig) -> int:
    """Write one game's files; returns their size in bytes."""
    game_dir = out_dir / game.name
    game_dir.mkdir(parents=True, exist_ok=True)
    if game.split == "challenge":
        labels_path = out_dir / CHALLENGE_LABELS_DIRNAME / game.name / LABELS_FILENAME
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        # The layout must never leak a challenge game's labels, even one left by an earlier run.
        (game_dir / LABELS_FILENAME).unlink(missing_ok=True)
    else:
        labels_path = game_dir / LABELS_FILENAME
    written = _write_json(labels_path, _labels_document(game))
    offset_rng = np.random.default_rng([config.seed, 7, game.index])
    game_offset = (offset_rng.standard_normal(config.feature_dim) * _GAME_OFFSET_STD).astype(np.float32)
    for half in game.halves:
        rng = np.random.default_rng([config.seed, 5, game.index, half.number])
        path = game_dir / FEATURES_PATTERN.format(half=half.number)
        written += _write_features(path, half, bank, game_offset, rng, config)
        if config.write_audio:
            rng = np.random.default_rng([config.seed, 8, game.index, half.number])
            written += _write_audio(game_dir / AUDIO_PATTERN.format(half=half.number), half, rng)
    return written


def _labels_document(game: _GamePlan) -> dict[str, object]:
    """The ``Labels-v2.json`` document of a game, with the fields of the real files."""
    annotations = [
        {
            "gameTime": game_time(half.number, event.label_ms),
            "label": CLASSES[event.class_index],
            "position": str(event.label_ms),
            "team": event.team,
            "visibility": "visible" if event.visible else "not shown",
        }
        for half in game.halves
        for event in sorted(half.events, key=lambda e: (e.label_ms, e.class_index))
    ]
    home_goals, away_goals = game.score
    return {
        "UrlLocal": f"{game.name}/",
        "UrlYoutube": "",
        "gameAwayTeam": game.away,
        "gameDate": game.date,
        "gameHomeTeam": game.home,
        "gameScore": f"{home_goals} - {away_goals}",
        "annotations": annotations,
    }


def _write_features(
    path: Path,
    half: _HalfPlan,
    bank: _SignatureBank,
    game_offset: np.ndarray,
    rng: np.random.Generator,
    config: SimulatorConfig,
) -> int:
    """``[seconds, D]`` float32: background + scene shifts + signatures, written in chunks."""
    rows = half.seconds
    decay = math.exp(-1.0 / config.background_correlation_seconds)
    latent = _ar1(rng, rows, bank.latent_projection.shape[0], decay)  # [rows, K]
    scene = _scene_types(rng, half)  # [rows]
    onset_lag = np.array([_TRAITS[n].onset[0] for n in CLASSES])
    onset_width = np.array([_TRAITS[n].onset[1] for n in CLASSES])
    after_lag = np.array([_TRAITS[n].aftermath[0] for n in CLASSES])
    after_width = np.array([_TRAITS[n].aftermath[1] for n in CLASSES])
    marks = sorted(half.marks)
    with atomic_write(path, "w+b") as file:
        array = _open_npy(file, (rows, config.feature_dim))
        for start in range(0, rows, CHUNK_SECONDS):
            stop = min(rows, start + CHUNK_SECONDS)
            block = rng.standard_normal((stop - start, config.feature_dim), dtype=np.float32)
            block *= _WHITE_NOISE_STD
            block += latent[start:stop] @ bank.latent_projection
            block += bank.scene_vectors[scene[start:stop]]
            block += game_offset
            seconds = np.arange(start, stop, dtype=np.float64)
            for time, c, strength in marks:
                if time + _SIGNATURE_WINDOW_SECONDS[1] < start or time + _SIGNATURE_WINDOW_SECONDS[0] >= stop:
                    continue
                # Feature row i describes second i; the Gaussian profiles put sub-second timing
                # into the relative heights of neighbouring rows.
                delta = seconds - time
                onset = np.exp(-0.5 * ((delta - onset_lag[c]) / onset_width[c]) ** 2)
                after = np.exp(-0.5 * ((delta - after_lag[c]) / after_width[c]) ** 2)
                amplitude = config.signal_strength * strength
                block += (amplitude * onset).astype(np.float32)[:, None] * bank.onset[c]
                block += (amplitude * after).astype(np.float32)[:, None] * bank.aftermath[c]
            array[start:stop] = block
        array.flush()
        del array
    return path.stat().st_size


def _ar1(rng: np.random.Generator, length: int, width: int, decay: float) -> np.ndarray:
    """``[length, width]`` float32 AR(1) process with unit stationary variance."""
    innovations = rng.standard_normal((length, width)) * math.sqrt(1.0 - decay**2)
    state = rng.standard_normal(width)
    out = np.empty((length, width), dtype=np.float32)
    for t in range(length):
        state = decay * state + innovations[t]
        out[t] = state
    return out


def _scene_types(rng: np.random.Generator, half: _HalfPlan) -> np.ndarray:
    """``[seconds]`` camera-shot type per second: shots of ~6 s; the replay type during replays."""
    types = np.empty(half.seconds, dtype=np.int64)
    start = 0
    while start < half.seconds:
        length = 2 + int(rng.exponential(4.0))
        types[start : start + length] = rng.choice(len(_SCENE_SHARES), p=_SCENE_SHARES)
        start += length
    replay = len(_SCENE_SHARES)
    for begin, end in half.replay_spans:
        types[int(begin) : math.ceil(end)] = replay
    return types


# Audio levels in dB relative to AUDIO_REFERENCE_POWER (the model's 0 dB).
_FLOOR_DB_LOW, _FLOOR_DB_HIGH = -50.0, -65.0  # electronic and ambient floor, tilted down with frequency
_MURMUR_DB = -32.0  # the crowd's constant murmur, at the peak of its spectrum
_MURMUR_STD_DB = 3.0  # how much it drifts over a half
_MURMUR_CORRELATION_SECONDS = 30.0
_CROWD_CENTRE_BIN, _CROWD_WIDTH_BINS = 40.0, 28.0  # crowd noise is broad, mostly below 2 kHz
_WHISTLE_WIDTH_BINS = 1.2
_WHISTLE_HARMONIC_BINS, _WHISTLE_HARMONIC_DB = 32.0, -10.0  # the octave above, 10 dB weaker
_CROWD_RISE_SECONDS = 0.25


def _write_audio(path: Path, half: _HalfPlan, rng: np.random.Generator) -> int:
    """``[128, frames]`` float32 mel power at 100 frames per second, written in chunks."""
    frames = half.audio_frames
    bins = np.arange(MEL_BINS, dtype=np.float64)
    floor_db = _FLOOR_DB_LOW + (_FLOOR_DB_HIGH - _FLOOR_DB_LOW) * bins / (MEL_BINS - 1)
    floor = 10 ** (floor_db / 10)
    crowd_shape = np.exp(-0.5 * ((bins - _CROWD_CENTRE_BIN) / _CROWD_WIDTH_BINS) ** 2) + 0.05
    # Each mel band averages more FFT bins as frequency grows: its power fluctuates less.
    speckle_shape = (2.0 + bins / 16.0).astype(np.float32)[:, None]
    murmur_seconds = frames // AUDIO_FRAMES_PER_SECOND + 2
    murmur_db = _MURMUR_DB + _MURMUR_STD_DB * _ar1(
        rng, murmur_seconds, 1, math.exp(-1.0 / _MURMUR_CORRELATION_SECONDS)
    )[:, 0].astype(np.float64)
    chunk = CHUNK_SECONDS * AUDIO_FRAMES_PER_SECOND
    with atomic_write(path, "w+b") as file:
        array = _open_npy(file, (MEL_BINS, frames))
        for start in range(0, frames, chunk):
            stop = min(frames, start + chunk)
            times = (np.arange(start, stop) + 0.5) / AUDIO_FRAMES_PER_SECOND
            crowd = 10 ** (np.interp(times, np.arange(murmur_seconds), murmur_db) / 10)
            gain = np.ones_like(times)
            for onset, rise_db, decay_seconds in half.swells:
                since = times - onset
                near = (since >= 0) & (since < 8 * decay_seconds)
                if near.any():
                    s = since[near]
                    envelope = (1 - np.exp(-s / _CROWD_RISE_SECONDS)) * np.exp(-s / decay_seconds)
                    gain[near] += (10 ** (rise_db / 10) - 1) * envelope
            power = floor[:, None] + crowd_shape[:, None] * (crowd * gain)[None, :]
            for onset, length, centre, rise_db in half.whistles:
                near = (times > onset - 0.1) & (times < onset + length + 0.1)
                if not near.any():
                    continue
                # Smooth 20-ms edges; the level is set relative to the floor at the whistle's band.
                t = times[near]
                envelope = 1 / (1 + np.exp(-(t - onset) / 0.02)) / (1 + np.exp((t - onset - length) / 0.02))
                band = np.exp(-0.5 * ((bins - centre) / _WHISTLE_WIDTH_BINS) ** 2)
                harmonic = np.exp(
                    -0.5 * ((bins - centre - _WHISTLE_HARMONIC_BINS) / _WHISTLE_WIDTH_BINS) ** 2
                )
                spectrum = band + 10 ** (_WHISTLE_HARMONIC_DB / 10) * harmonic
                level = floor[round(centre)] * 10 ** (rise_db / 10)
                power[:, near] += level * spectrum[:, None] * envelope[None, :]
            power = (power * AUDIO_REFERENCE_POWER).astype(np.float32)
            power *= rng.standard_gamma(speckle_shape, size=power.shape, dtype=np.float32)
            power /= speckle_shape
            array[:, start:stop] = power
        array.flush()
        del array
    return path.stat().st_size


# --- Files ----------------------------------------------------------------------------------------


def _open_npy(file: BinaryIO, shape: tuple[int, int]) -> np.memmap:
    """A float32 ``.npy`` of ``shape`` in the open ``file`` (read-write), mapped for writing in chunks.

    The same bytes as ``np.lib.format.open_memmap``, which needs a file name where
    ``astra.files.atomic_write`` gives an open file.
    """
    dtype = np.dtype(np.float32)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(file, header)
    offset = file.tell()
    file.truncate(offset + dtype.itemsize * math.prod(shape))
    file.flush()
    return np.memmap(file, dtype=dtype, mode="r+", offset=offset, shape=shape)


def _write_json(path: Path, document: object) -> int:
    with atomic_write(path) as file:
        file.write((json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return path.stat().st_size
