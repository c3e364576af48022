"""Multinomial logistic regression for tabular data."""

from __future__ import annotations

import torch
from torch import nn


class LogReg(nn.Module):
    """x float32 [B, features] -> logits [B, num_classes]."""

    def __init__(self, features: int = 30, num_classes: int = 2):
        super().__init__()
        self.linear = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)
