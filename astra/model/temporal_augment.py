"""Temporal dropout and temporal switch (paper, 3.4), applied to raw inputs in training only.

A "step" is one time step of a modality: one second of visual features (a vector
of ``sum(visual_dims)``), or one 10-ms frame of the log-mel spectrogram (a
vector of ``mel_bins``). Both augmentations draw ONE mask per batch, shared by
all clips of the batch, as the authors do.

- Temporal dropout: each step, with probability ``p_td``, is replaced whole by
  a learnable vector of the step's size.
- Temporal switch: each adjacent pair of steps ``(i, i+1)`` is swapped with
  probability ``p_ts``. We apply the picked swaps from left to right, so the
  result is always a permutation of the steps (a run of picked pairs moves its
  first step to the run's end). The authors swap all picked pairs at once,
  which, where two picked pairs overlap, duplicates one step and loses another.
"""

from __future__ import annotations

import torch
from torch import nn


class TemporalAugment(nn.Module):
    """Temporal dropout then temporal switch over the steps of ``[B, S, D]``; identity in eval mode."""

    def __init__(self, step_dim: int, dropout_p: float, switch_p: float) -> None:
        super().__init__()
        for name, p in (("temporal_dropout_p", dropout_p), ("temporal_switch_p", switch_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {p}")
        self.dropout_p = dropout_p
        self.switch_p = switch_p
        # Only a model that drops steps owns the replacement vector: an unused
        # parameter would upset distributed data parallel training.
        # Uniform [0, 1) initialisation, as the authors.
        self.replacement = nn.Parameter(torch.rand(step_dim)) if dropout_p > 0 else None

    @property
    def enabled(self) -> bool:
        """Whether it ever changes its input: a dropout or switch probability above 0."""
        return self.dropout_p > 0 or self.switch_p > 0

    @property
    def active(self) -> bool:
        """Whether a call now can change its input: enabled, in training."""
        return self.training and self.enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, D]`` -> ``[B, S, D]``."""
        if not self.training:
            return x
        num_steps = x.shape[1]
        if self.replacement is not None:
            dropped = torch.rand(num_steps, device=x.device) < self.dropout_p  # [S], one mask per batch
            # torch.where keeps the vector in the graph even when no step is dropped.
            x = torch.where(dropped[None, :, None], self.replacement.to(x.dtype), x)
        if self.switch_p > 0 and num_steps > 1:
            x = x[:, adjacent_swap_permutation(num_steps, self.switch_p, x.device)]
        return x


def adjacent_swap_permutation(num_steps: int, p: float, device: torch.device | None = None) -> torch.Tensor:
    """``[S]`` source index of every step after swapping each pair ``(i, i+1)`` with probability ``p``.

    Swaps are applied from left to right. Within a run of picked pairs
    ``k..k+m-1`` the steps ``k+1..k+m`` move one place back and step ``k`` lands
    at ``k+m``; elsewhere nothing moves. Computed without a Python loop.
    """
    picked = torch.rand(num_steps - 1, device=device) < p  # [S-1], pair (i, i+1) picked
    steps = torch.arange(num_steps, device=device)
    no = torch.zeros(1, dtype=torch.bool, device=device)
    moves_back = torch.cat([picked, no])  # step j takes step j+1
    ends_run = torch.cat([no, picked]) & ~moves_back  # step j takes the first step of the run
    run_starts = torch.where(picked & ~torch.cat([no, picked[:-1]]), steps[:-1], 0)
    first_of_run = torch.cat([torch.zeros(1, dtype=steps.dtype, device=device), run_starts.cummax(0).values])
    return torch.where(moves_back, steps + 1, torch.where(ends_run, first_of_run, steps))
