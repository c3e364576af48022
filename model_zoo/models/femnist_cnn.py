"""The LEAF FEMNIST CNN (Caldas et al. 2018) for 28x28 grey images: conv 5x5x32, max-pool,
conv 5x5x64, max-pool, dense 2048, output. We train it on Fashion-MNIST (10 classes)."""

from __future__ import annotations

import torch
from torch import nn


class FemnistCNN(nn.Module):
    """x float32 [B, 1, 28, 28] -> logits [B, num_classes]."""

    def __init__(
        self, num_classes: int = 10, channels: tuple[int, int] = (32, 64), dense: int = 2048
    ):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 7 * 7, dense), nn.ReLU(), nn.Linear(dense, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def full(num_classes: int = 10) -> FemnistCNN:
    return FemnistCNN(num_classes)


def tiny(num_classes: int = 10) -> FemnistCNN:
    return FemnistCNN(num_classes, (4, 8), 32)
