"""Mixup of clips and their targets: balanced (ASTRA), plain (the M3 ablation), or none.

Balanced mixup (paper Section 3.4; docs/model.md, "Balanced mixup"): each clip
of a batch is mixed with a clip drawn from a queue that holds ``queue_size``
recent clips per class index 0..C (background included), so that the second
element of each pair comes from a class-balanced distribution::

    x' = lambda * x + (1 - lambda) * x_q        lambda ~ Beta(alpha_m, beta_m), one per batch

for the visual features, the log-mel audio and the classification targets.
Displacement targets (NaN for "no target") are mixed the same way where both
clips have one; where only one has, it is kept; where neither has, NaN stays.

All three share one call: ``mixup(features, audio_or_None, class_targets,
displacement_targets) -> MixedBatch`` of the same four, and balanced mixup
updates its queue with the unmixed batch afterwards. The trainer calls it after
the audio is turned into log-mel and before temporal dropout and switch
(docs/model.md, "Order in a training forward pass").

Every random draw comes from the CPU ``torch.Generator`` passed in, so that one
seed fixes the augmentation whatever the device.
"""

from __future__ import annotations

import random
from typing import NamedTuple, Protocol

import torch

from astra.config import AugmentConfig

_QUEUE_KEYS = ("features", "audio", "class_targets", "displacement_targets")


class MixupError(ValueError):
    """A batch or a saved state that does not fit the mixup; the message says which tensor."""


class MixedBatch(NamedTuple):
    """The four tensors a mixup returns, in the order it takes them."""

    features: torch.Tensor  # [B, T, D]
    audio: torch.Tensor | None  # [B, mels, frames] log-mel, or None without audio
    class_targets: torch.Tensor  # [B, L, C+1], in [0, 1]
    displacement_targets: torch.Tensor  # [B, L, C+1], NaN for "no target"


class Mixup(Protocol):
    """What the trainer relies on: one call per training batch, and a checkpointable state."""

    def __call__(
        self,
        features: torch.Tensor,
        audio: torch.Tensor | None,
        class_targets: torch.Tensor,
        displacement_targets: torch.Tensor,
    ) -> MixedBatch: ...

    def state_dict(self) -> dict[str, torch.Tensor | None]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None: ...


def build_mixup(config: AugmentConfig, num_classes: int, *, generator: torch.Generator) -> Mixup:
    """The mixup that ``config.mixup`` names: ``"balanced"`` (M4 onwards), ``"plain"`` (M3) or ``"none"``."""
    if config.mixup == "balanced":
        return BalancedMixup(
            num_classes,
            queue_size=config.queue_size,
            alpha=config.mixup_alpha,
            beta=config.mixup_beta,
            generator=generator,
        )
    elif config.mixup == "plain":
        return PlainMixup(alpha=config.mixup_alpha, beta=config.mixup_beta, generator=generator)
    elif config.mixup == "none":
        return NoMixup()
    else:
        raise MixupError(f"augment.mixup must be 'balanced', 'plain' or 'none', got {config.mixup!r}")


class BalancedMixup:
    """Mixup with a per-class queue of recent clips (ASTRA's balanced mixup).

    The queue holds, for each class index c in 0..C (0 is the background), up to
    ``queue_size`` clips: features ``[T, D]``, audio ``[mels, frames]`` (when
    the batches have audio), classification and displacement targets
    ``[L, C+1]``. Its tensors are created at the first batch, on that batch's
    device and with its dtypes, and follow later batches' device and dtype.

    Partner draw: for each clip, a class index uniformly among those whose queue
    holds at least one clip, then a slot uniformly among that class's filled
    slots. Once every queue is full this is the authors' draw (uniform over
    class indices and slots). Before any clip has entered the queue (the first
    batch), clips are left unmixed. The authors instead start from a queue of
    zero features and pure-background targets and mix with it until real
    clips replace them, which mixes early batches, and tail classes for long,
    with empty clips; we mix only with clips that were seen.

    Queue update, after mixing and with the unmixed batch: class c's queue takes
    the clips whose classification target has a 1 in channel c at some position
    (for the background, channel 0: any clip with a background position). With
    at least ``queue_size`` such clips, the first ``queue_size`` in batch order
    replace the whole queue; with fewer, each goes into a distinct random slot.
    (The authors draw each slot independently, so two clips may land in the same
    slot; distinct slots keep both.)
    """

    def __init__(
        self,
        num_classes: int,
        *,
        queue_size: int = 2,
        alpha: float = 1.0,
        beta: float = 0.6,
        generator: torch.Generator,
    ) -> None:
        if num_classes < 1:
            raise MixupError(f"num_classes must be >= 1, got {num_classes}")
        if queue_size < 1:
            raise MixupError(f"queue_size must be >= 1, got {queue_size}")
        _check_beta_parameters(alpha, beta)
        _check_generator(generator)
        self.num_queues = num_classes + 1
        self.queue_size = queue_size
        self.alpha = alpha
        self.beta = beta
        self.generator = generator
        # [C+1, queue_size] on the CPU: which slots hold a clip.
        self._filled = torch.zeros(self.num_queues, queue_size, dtype=torch.bool)
        # Each [C+1, queue_size, ...per-clip shape], or None before the first batch
        # (and "audio" stays None when the batches have none).
        self._queue: dict[str, torch.Tensor | None] = dict.fromkeys(_QUEUE_KEYS)

    def __call__(
        self,
        features: torch.Tensor,
        audio: torch.Tensor | None,
        class_targets: torch.Tensor,
        displacement_targets: torch.Tensor,
    ) -> MixedBatch:
        """Mix each clip with a queue entry, then update the queue with the unmixed batch.

        Args:
            features: ``[B, T, D]`` visual features.
            audio: ``[B, mels, frames]`` log-mel audio, or None.
            class_targets: ``[B, L, C+1]`` in [0, 1], channel 0 the background.
            displacement_targets: ``[B, L, C+1]``, NaN for "no target".

        Returns:
            The same four, mixed; the inputs are left untouched.
        """
        batch = MixedBatch(features, audio, class_targets, displacement_targets)
        _check_batch(batch, num_channels=self.num_queues)
        self._match_queue_to(batch)
        lam = _sample_beta(self.alpha, self.beta, self.generator)
        mixed = batch
        if bool(self._filled.any()):
            classes, slots = self._draw_partners(features.shape[0])
            device = features.device
            classes, slots = classes.to(device), slots.to(device)
            partner = MixedBatch(
                *(None if q is None else q[classes, slots] for q in (self._queue[k] for k in _QUEUE_KEYS))
            )
            mixed = _mix(batch, partner, lam)
        self._update_queue(batch)
        return mixed

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """A copy of the queue and of which slots are filled, for a checkpoint."""
        state: dict[str, torch.Tensor | None] = {"filled": self._filled.clone()}
        for key in _QUEUE_KEYS:
            tensor = self._queue[key]
            state[key] = None if tensor is None else tensor.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        """Restore a queue saved by :meth:`state_dict` (any device; it moves to the next batch's)."""
        expected = {"filled", *_QUEUE_KEYS}
        if set(state) != expected:
            raise MixupError(f"mixup state has keys {sorted(state)}, expected {sorted(expected)}")
        filled = state["filled"]
        if filled is None or tuple(filled.shape) != (self.num_queues, self.queue_size):
            shape = None if filled is None else tuple(filled.shape)
            raise MixupError(
                f"mixup state 'filled' has shape {shape}, expected {(self.num_queues, self.queue_size)} "
                "(num_classes + 1, queue_size)"
            )
        queue: dict[str, torch.Tensor | None] = {}
        for key in _QUEUE_KEYS:
            tensor = state[key]
            if tensor is not None and tuple(tensor.shape[:2]) != (self.num_queues, self.queue_size):
                raise MixupError(
                    f"mixup state {key!r} has shape {tuple(tensor.shape)}, expected "
                    f"({self.num_queues}, {self.queue_size}, ...)"
                )
            queue[key] = None if tensor is None else tensor.detach().clone()
        if bool(filled.any()) and any(queue[k] is None for k in _QUEUE_KEYS if k != "audio"):
            raise MixupError("mixup state marks filled slots but lacks the queue tensors")
        self._filled = filled.to(device="cpu", dtype=torch.bool).clone()
        self._queue = queue

    def _match_queue_to(self, batch: MixedBatch) -> None:
        """Create the queue at the first batch; afterwards check shapes and follow device and dtype."""
        if self._queue["features"] is None:
            for key, tensor in zip(_QUEUE_KEYS, batch, strict=True):
                if tensor is not None:
                    self._queue[key] = tensor.new_zeros((self.num_queues, self.queue_size, *tensor.shape[1:]))
            return
        for key, tensor in zip(_QUEUE_KEYS, batch, strict=True):
            queued = self._queue[key]
            if (tensor is None) != (queued is None):
                have = "no audio" if tensor is None else "audio"
                raise MixupError(
                    f"the batch has {have} but the mixup queue was filled "
                    f"{'with' if queued is not None else 'without'} it"
                )
            if tensor is None or queued is None:
                continue
            if queued.shape[2:] != tensor.shape[1:]:
                raise MixupError(
                    f"{key} of the batch is [B, {', '.join(map(str, tensor.shape[1:]))}] per clip, "
                    f"but the mixup queue holds [{', '.join(map(str, queued.shape[2:]))}]"
                )
            if queued.device != tensor.device or queued.dtype != tensor.dtype:
                self._queue[key] = queued.to(device=tensor.device, dtype=tensor.dtype)

    def _draw_partners(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B]`` class indices and ``[B]`` slots of filled queue entries, on the CPU."""
        counts = self._filled.sum(dim=1)  # [C+1]
        candidate_classes = torch.nonzero(counts > 0).flatten()
        picks = torch.randint(len(candidate_classes), (batch_size,), generator=self.generator)
        classes = candidate_classes[picks]
        # Rank among the filled slots of the class, then the slot of that rank
        # (filled slots first, in slot order).
        ranks = (torch.rand(batch_size, generator=self.generator) * counts[classes]).long()
        ranks = torch.minimum(ranks, counts[classes] - 1)
        filled_first = torch.argsort((~self._filled).to(torch.int8), dim=1, stable=True)
        slots = filled_first[classes, ranks]
        return classes, slots

    @torch.no_grad()
    def _update_queue(self, batch: MixedBatch) -> None:
        contains = (batch.class_targets == 1).any(dim=1).cpu()  # [B, C+1]
        queue_ids: list[int] = []
        slot_ids: list[int] = []
        clip_ids: list[int] = []
        for class_index in range(self.num_queues):
            clips = torch.nonzero(contains[:, class_index]).flatten()
            if len(clips) >= self.queue_size:
                slots = torch.arange(self.queue_size)
                clips = clips[: self.queue_size]
            elif len(clips) > 0:
                slots = torch.randperm(self.queue_size, generator=self.generator)[: len(clips)]
            else:
                continue
            queue_ids += [class_index] * len(clips)
            slot_ids += slots.tolist()
            clip_ids += clips.tolist()
        if not clip_ids:
            return
        device = batch.features.device
        queue_index = torch.tensor(queue_ids, device=device)
        slot_index = torch.tensor(slot_ids, device=device)
        clip_index = torch.tensor(clip_ids, device=device)
        for key, tensor in zip(_QUEUE_KEYS, batch, strict=True):
            queued = self._queue[key]
            if tensor is not None and queued is not None:
                queued[queue_index, slot_index] = tensor.detach()[clip_index]
        self._filled[torch.tensor(queue_ids), torch.tensor(slot_ids)] = True


class PlainMixup:
    """Mixup with a shuffled copy of the batch (Zhang et al.; the M3 ablation).

    One lambda per batch, as balanced mixup, and the same target rules. The
    authors' plain variant draws partners from a queue refilled with random
    recent clips; a permutation of the current batch is the standard mixup and
    needs no state. A batch of one clip is mixed with itself, which leaves it
    unchanged.
    """

    def __init__(self, *, alpha: float = 0.6, beta: float = 0.6, generator: torch.Generator) -> None:
        _check_beta_parameters(alpha, beta)
        _check_generator(generator)
        self.alpha = alpha
        self.beta = beta
        self.generator = generator

    def __call__(
        self,
        features: torch.Tensor,
        audio: torch.Tensor | None,
        class_targets: torch.Tensor,
        displacement_targets: torch.Tensor,
    ) -> MixedBatch:
        """Mix clip i with clip ``perm[i]`` of the same batch; shapes as :class:`BalancedMixup`."""
        batch = MixedBatch(features, audio, class_targets, displacement_targets)
        _check_batch(batch, num_channels=None)
        lam = _sample_beta(self.alpha, self.beta, self.generator)
        permutation = torch.randperm(features.shape[0], generator=self.generator).to(features.device)
        partner = MixedBatch(*(None if t is None else t[permutation] for t in batch))
        return _mix(batch, partner, lam)

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """No state: the generator belongs to the caller."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        if state:
            raise MixupError(f"plain mixup has no state, got keys {sorted(state)}")


class NoMixup:
    """No mixup (M0..M2): returns the batch as it is."""

    def __call__(
        self,
        features: torch.Tensor,
        audio: torch.Tensor | None,
        class_targets: torch.Tensor,
        displacement_targets: torch.Tensor,
    ) -> MixedBatch:
        return MixedBatch(features, audio, class_targets, displacement_targets)

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        if state:
            raise MixupError(f"no mixup has no state, got keys {sorted(state)}")


def mix_displacement_targets(own: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """Mix displacement targets, NaN meaning "no target" (docs/model.md, Balanced mixup).

    Both present: ``lam * own + (1 - lam) * partner``; one present: that one;
    none: NaN. Shapes ``[B, L, C+1]``.
    """
    own_present = ~torch.isnan(own)
    partner_present = ~torch.isnan(partner)
    both = lam * own + (1 - lam) * partner
    return torch.where(own_present & partner_present, both, torch.where(own_present, own, partner))


def _mix(batch: MixedBatch, partner: MixedBatch, lam: float) -> MixedBatch:
    audio = None
    if batch.audio is not None and partner.audio is not None:
        audio = lam * batch.audio + (1 - lam) * partner.audio
    return MixedBatch(
        features=lam * batch.features + (1 - lam) * partner.features,
        audio=audio,
        class_targets=lam * batch.class_targets + (1 - lam) * partner.class_targets,
        displacement_targets=mix_displacement_targets(
            batch.displacement_targets, partner.displacement_targets, lam
        ),
    )


def _sample_beta(alpha: float, beta: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, beta), seeded from ``generator`` (torch has no seeded Beta sampler)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return random.Random(seed).betavariate(alpha, beta)


def _check_beta_parameters(alpha: float, beta: float) -> None:
    if not (alpha > 0 and beta > 0):
        raise MixupError(f"mixup_alpha and mixup_beta must be > 0, got {alpha} and {beta}")


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise MixupError(f"mixup needs a CPU torch.Generator, got {generator!r}")


def _check_batch(batch: MixedBatch, *, num_channels: int | None) -> None:
    features, audio, class_targets, displacement_targets = batch
    if features.dim() != 3:
        raise MixupError(f"features must be [B, T, D], got shape {tuple(features.shape)}")
    batch_size = features.shape[0]
    if batch_size == 0:
        raise MixupError("the batch is empty")
    if class_targets.dim() != 3:
        raise MixupError(f"class_targets must be [B, L, C+1], got shape {tuple(class_targets.shape)}")
    if displacement_targets.shape != class_targets.shape:
        raise MixupError(
            f"displacement_targets has shape {tuple(displacement_targets.shape)} but class_targets "
            f"has {tuple(class_targets.shape)}"
        )
    if num_channels is not None and class_targets.shape[2] != num_channels:
        raise MixupError(
            f"class_targets has {class_targets.shape[2]} channels, expected {num_channels} "
            "(num_classes + 1, background first)"
        )
    for name, tensor in (("audio", audio), ("class_targets", class_targets)):
        if tensor is not None and tensor.shape[0] != batch_size:
            raise MixupError(f"{name} holds {tensor.shape[0]} clips but features hold {batch_size}")
