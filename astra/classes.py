"""The 17 SoccerNet-v2 action classes and the facts attached to them.

The order is the official one (``SoccerNet.Evaluation.utils.EVENT_DICTIONARY_V2``):
class index ``i`` here is class ``i`` everywhere (labels, model channels 1..17,
per-position outputs, Soft-NMS windows).
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "Penalty",
    "Kick-off",
    "Goal",
    "Substitution",
    "Offside",
    "Shots on target",
    "Shots off target",
    "Clearance",
    "Ball out of play",
    "Throw-in",
    "Foul",
    "Indirect free-kick",
    "Direct free-kick",
    "Corner",
    "Yellow card",
    "Red card",
    "Yellow->red card",
)
NUM_CLASSES: int = len(CLASSES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

# The official evaluator works on 2 frames per second; so do our per-position outputs.
FRAMES_PER_SECOND: int = 2

# Soft-NMS windows (seconds) hand-tuned by the ASTRA authors, in class order.
PAPER_SOFT_NMS_WINDOWS_SECONDS: tuple[float, ...] = (
    5,
    7,
    9,
    12,
    10,
    14,
    14,
    5,
    8,
    8,
    8,
    8,
    13,
    5,
    6,
    6,
    6,
)

# Annotation counts over the 500 labelled games (Table 1 of the paper): the
# simulator's default long tail.
PAPER_CLASS_COUNTS: tuple[int, ...] = (
    173,
    2566,
    1703,
    2839,
    2098,
    5820,
    5256,
    7896,
    31810,
    18918,
    11674,
    10521,
    2200,
    4836,
    2047,
    55,
    46,
)
