"""Pointwise feed-forward network projecting one visual embedding to the model width (paper, 3.1)."""

from __future__ import annotations

import torch
from torch import nn


class PointwiseFeedForward(nn.Module):
    """Dropout, Linear(d_j, d_j), ReLU, Dropout, Linear(d_j, d), ReLU, applied to every time step.

    The final ReLU is the authors': the projected tokens are non-negative before
    the learnable encodings are added. ``hidden_relu=False`` and ``output_relu=False``
    leave out the first and the last ReLU: without both the PFFN is linear.
    ``context=k`` gives the first Linear the step's ``k`` neighbours on each side too
    (``(2k + 1) d_j`` inputs, zeros past the clip's ends): a temporal convolution of
    width ``2k + 1``. The authors' PFFN is ``context=0``.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        dropout: float,
        *,
        hidden_relu: bool = True,
        output_relu: bool = True,
        context: int = 0,
    ) -> None:
        super().__init__()
        self.context = context
        self.layers = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear((2 * context + 1) * input_dim, input_dim),
            *([nn.ReLU()] if hidden_relu else []),
            nn.Dropout(dropout),
            nn.Linear(input_dim, output_dim),
            *([nn.ReLU()] if output_relu else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, d_j]`` -> ``[B, T, d]``."""
        if self.context:
            # Each step joined with its `context` neighbours on each side (zeros past the clip's ends).
            padded = nn.functional.pad(x, (0, 0, self.context, self.context))
            windows = padded.unfold(1, 2 * self.context + 1, 1)  # [B, T, d_j, 2k + 1]
            x = windows.transpose(-1, -2).flatten(2)  # [B, T, (2k + 1) * d_j]: seconds t-k .. t+k
        return self.layers(x)
