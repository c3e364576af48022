"""Next-word prediction after Hard et al. 2018, "Federated Learning for Mobile Keyboard
Prediction": a word embedding tied to the output layer and a CIFG-LSTM projected back to
the embedding size. The full model has a 10k-word vocabulary, 96-d embedding and 670
units: about 1.4M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import CIFGLSTM

PAD = 0


class KeyboardCIFG(nn.Module):
    """tokens int64 [B, T] (0 = padding) -> next-word logits [B, T, vocab_size]."""

    def __init__(self, vocab_size: int = 10000, embed_dim: int = 96, hidden_size: int = 670):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.rnn = CIFGLSTM(embed_dim, hidden_size, proj_size=embed_dim)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.rnn(self.embedding(tokens))
        return F.linear(hidden, self.embedding.weight, self.output_bias)


def full(vocab_size: int = 10000) -> KeyboardCIFG:
    return KeyboardCIFG(vocab_size, 96, 670)


def tiny(vocab_size: int = 500) -> KeyboardCIFG:
    """A small variant for fast tests and quick demos."""
    return KeyboardCIFG(vocab_size, 16, 32)
