"""Pointwise feed-forward network projecting one visual embedding to the model width (paper, 3.1)."""

from __future__ import annotations

import torch
from torch import nn


class PointwiseFeedForward(nn.Module):
    """Dropout, Linear(d_j, d_j), ReLU, Dropout, Linear(d_j, d), ReLU, applied to every time step.

    The final ReLU is the authors': the projected tokens are non-negative before
    the learnable encodings are added. ``hidden_relu=False`` and ``output_relu=False``
    leave out the first and the last ReLU: without both the PFFN is linear.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        dropout: float,
        *,
        hidden_relu: bool = True,
        output_relu: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(input_dim, input_dim),
            *([nn.ReLU()] if hidden_relu else []),
            nn.Dropout(dropout),
            nn.Linear(input_dim, output_dim),
            *([nn.ReLU()] if output_relu else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_j]`` -> ``[..., d]``."""
        return self.layers(x)
