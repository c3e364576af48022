"""Next-character prediction on Shakespeare, the LEAF benchmark model (Caldas et al. 2018,
after McMahan et al. 2017): 8-d character embedding, two LSTM layers of 256 units, read
over 80-character windows."""

from __future__ import annotations

import torch
from torch import nn


class ShakespeareChar(nn.Module):
    """chars int64 [B, T] -> next-character logits [B, T, vocab_size]."""

    def __init__(
        self, vocab_size: int = 80, embed_dim: int = 8, hidden_size: int = 256, num_layers: int = 2
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.output = nn.Linear(hidden_size, vocab_size)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embedding(chars))
        return self.output(hidden)


def full(vocab_size: int = 80) -> ShakespeareChar:
    return ShakespeareChar(vocab_size)


def tiny(vocab_size: int = 80) -> ShakespeareChar:
    return ShakespeareChar(vocab_size, 8, 32, 2)
