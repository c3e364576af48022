"""A MobileNet-style CNN (Howard et al. 2017) for 28x28 grey images (Fashion-MNIST,
FEMNIST): a 3x3 stem, then depthwise-separable blocks (a 3x3 depthwise convolution and a
1x1 pointwise one, each followed by BatchNorm and ReLU6), global average pooling and a
linear head. Strides, not pooling, halve the image: 28 -> 14 -> 7."""

from __future__ import annotations

import torch
from torch import nn

# (output channels, stride) per depthwise-separable block
FULL_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1))
TINY_BLOCKS = ((16, 2), (32, 2))


def separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (groups = channels) then pointwise 1x1, each with BatchNorm, ReLU6."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU6(),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(),
    )


class MobileNetCNN(nn.Module):
    """x float32 [B, 1, 28, 28] -> logits [B, num_classes]."""

    def __init__(
        self,
        num_classes: int = 10,
        stem: int = 32,
        blocks: tuple[tuple[int, int], ...] = FULL_BLOCKS,
    ):
        super().__init__()
        layers = [nn.Conv2d(1, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6()]
        channels = stem
        for out, stride in blocks:
            layers.append(separable(channels, out, stride))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def full(num_classes: int = 10) -> MobileNetCNN:
    return MobileNetCNN(num_classes, 32, FULL_BLOCKS)


def tiny(num_classes: int = 10) -> MobileNetCNN:
    return MobileNetCNN(num_classes, 8, TINY_BLOCKS)
