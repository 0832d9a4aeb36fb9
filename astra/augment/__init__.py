"""Training-time augmentations applied outside the network: mixup of clips and targets.

Temporal dropout and temporal switch act on the raw inputs inside the model
(they hold a learnt vector), so they live with the model, not here.
"""

from astra.augment.mixup import (
    BalancedMixup,
    MixedBatch,
    Mixup,
    MixupError,
    NoMixup,
    PlainMixup,
    build_mixup,
    mix_displacement_targets,
)

__all__ = [
    "BalancedMixup",
    "MixedBatch",
    "Mixup",
    "MixupError",
    "NoMixup",
    "PlainMixup",
    "build_mixup",
    "mix_displacement_targets",
]
