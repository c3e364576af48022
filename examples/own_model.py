"""A model of one's own for `edge-fl simulate`: a factory returning a PyTorch module,
named in a config as "model": "examples.own_model:two_layer" (docs/own-data.md).

The factory is called with whichever of num_classes, vocab_size, vocabulary_size,
features and input_shape it takes, sized to the data; the config's loss and optimizer
compile with it into a training bundle. forward()'s parameter names are the data's
input names ("x" for tabular and array data, "tokens" / "chars" for text).
"""

from __future__ import annotations

import torch
from torch import nn


class TwoLayer(nn.Module):
    """x float32 [B, features] -> logits [B, num_classes]."""

    def __init__(self, features: int, num_classes: int, hidden: int = 32):
        super().__init__()
        self.hidden = nn.Linear(features, hidden)
        self.output = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.hidden(x)))


def two_layer(features: int, num_classes: int, hidden: int = 32) -> nn.Module:
    return TwoLayer(features, num_classes, hidden)
