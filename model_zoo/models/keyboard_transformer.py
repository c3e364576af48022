"""Next-word prediction with a small causal Transformer, what keyboards ship now in place
of the CIFG-LSTM (keyboard_cifg.py): token and learned position embeddings, pre-norm
blocks (Xiong et al. 2020) of causal self-attention (Vaswani et al. 2017) and a GELU
feed-forward layer, and an output layer tied to the token embedding (Press & Wolf 2017).
The full model (10k words, 96-d, 3 blocks of 4 heads) has about 1.3M parameters, like
keyboard_cifg's 1.4M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0


class CausalSelfAttention(nn.Module):
    """x float32 [B, T, dim] -> [B, T, dim]; position t attends to positions <= t."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class KeyboardTransformer(nn.Module):
    """tokens int64 [B, T] (0 = padding, right-padded; T <= max_len) -> next-word logits
    [B, T, vocab_size]. Padding sits after a sentence's words, so causal attention never
    lets a word see it and no padding mask is needed."""

    def __init__(
        self,
        vocab_size: int = 10000,
        max_len: int = 20,
        dim: int = 96,
        layers: int = 3,
        heads: int = 4,
        hidden: int = 384,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.position = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(_init_weights)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.embedding(tokens) + self.position(positions)
        for block in self.blocks:
            h = block(h)
        return F.linear(self.norm(h), self.embedding.weight, self.output_bias)


def _init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def full(vocab_size: int = 10000, max_len: int = 20) -> KeyboardTransformer:
    return KeyboardTransformer(vocab_size, max_len, dim=96, layers=3, heads=4, hidden=384)


def tiny(vocab_size: int = 500, max_len: int = 12) -> KeyboardTransformer:
    """A small variant for fast tests and quick demos."""
    return KeyboardTransformer(vocab_size, max_len, dim=16, layers=2, heads=2, hidden=32)
