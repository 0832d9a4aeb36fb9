"""Prediction heads on the decoded queries (paper, 3.3).

Every head maps ``[B, L, d]`` to ``[B, L, C+1]`` (channel 0 is background).
"""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Dropout, Linear(d, d), ReLU, Dropout, Linear(d, C+1), then sigmoid when ``sigmoid`` is set.

    Without sigmoid it is the plain displacement head of the ablations M0..M7
    (a regression trained with squared error).
    """

    def __init__(self, d_model: int, num_outputs: int, dropout: float, sigmoid: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(d_model, d_model),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d_model, num_outputs),
        )
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, d]`` -> ``[B, L, C+1]`` (probabilities when ``sigmoid``, else raw values)."""
        out = self.layers(x)
        return torch.sigmoid(out) if self.sigmoid else out


class UncertaintyDisplacementHead(nn.Module):
    """Displacement as a Gaussian: a shared trunk, then parallel mean and log-variance layers.

    Shared: Dropout, Linear(d, d), ReLU, Dropout, Linear(d, d), ReLU. Then two
    Dropout + Linear(d, C+1). The paper applies an exponential to get the
    variance; we return its log, which the loss uses as is (no overflow).
    """

    def __init__(self, d_model: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.shared = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(d_model, d_model),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d_model, d_model),
            nn.ReLU(),
        )
        self.mean = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, num_outputs))
        self.log_variance = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, num_outputs))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, d]`` -> (mean ``[B, L, C+1]``, log-variance ``[B, L, C+1]``), in output frames."""
        shared = self.shared(x)
        return self.mean(shared), self.log_variance(shared)
