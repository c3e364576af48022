"""A one-hidden-layer perceptron for tabular data."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """x float32 [B, features] -> logits [B, num_classes]."""

    def __init__(self, features: int = 30, hidden: int = 64, num_classes: int = 2):
        super().__init__()
        self.hidden = nn.Linear(features, hidden)
        self.output = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.hidden(x)))
