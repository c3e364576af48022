"""Small data and models for the dataset tests: a user's own loader class and model
factories, named in configs as `tests.fleet.toy_data:...`."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fleet.datasets import InputSpec, Task


class Linear(nn.Module):
    """x float32 [B, features] -> logits [B, num_classes]."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def linear(features: int, num_classes: int) -> nn.Module:
    return Linear(features, num_classes)


class FlatLinear(nn.Module):
    """x float32 [B, *input_shape] -> logits [B, num_classes]."""

    def __init__(self, input_shape: tuple, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(int(np.prod(input_shape)), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1))


def flat_linear(input_shape: tuple, num_classes: int) -> nn.Module:
    return FlatLinear(input_shape, num_classes)


class Bigram(nn.Module):
    """tokens int64 [B, T] -> next-token logits [B, T, vocab_size]."""

    def __init__(self, vocab_size: int, dim: int = 16):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.output = nn.Linear(dim, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.output(self.embedding(tokens))


def bigram(vocab_size: int) -> nn.Module:
    return Bigram(vocab_size)


def separable_rows(users: int, per_user: int, features: int, seed: int = 0):
    """x [n, features], a binary label y = [w . x > 0] with ~65% positives, user ids."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(users * per_user, features))
    w = rng.normal(size=features)
    y = (x @ w > -0.4 * np.linalg.norm(w)).astype(np.int64)
    ids = np.repeat([f"u{i}" for i in range(users)], per_user)
    return x, y, ids


def write_separable_npz(path, users: int, per_user: int, features: int):
    """`separable_rows` saved as an npz reader's file (x float32, y, users) at `path`;
    returns `path`."""
    x, y, ids = separable_rows(users, per_user, features)
    np.savez(path, x=x.astype(np.float32), y=y, users=ids)
    return path


class Sensors:
    """A researcher's own reader: `users` users, each with `per_user` windows of 3
    channels x 4 steps, labelled by whether the first channel rises; the first 75% of
    each user's windows train."""

    name = "toy sensors"

    def __init__(self, users: int = 12, per_user: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self._data = {}
        for u in range(users):
            x = rng.normal(size=(per_user, 3, 4)).astype(np.float32)
            slope = rng.choice([-1.0, 1.0], size=per_user)
            x[:, 0, :] += slope[:, None] * np.arange(4, dtype=np.float32)
            y = (slope > 0).astype(np.int64)
            self._data[f"s{u}"] = [{"x": x[i], "targets": y[i]} for i in range(per_user)]

    def task(self) -> Task:
        return Task("classification", {"x": InputSpec((3, 4))}, 2)

    def users(self) -> list[str]:
        return list(self._data)

    def examples(self, user: str, split: str) -> list[dict]:
        rows = self._data[user]
        cut = len(rows) * 3 // 4
        return rows[:cut] if split == "train" else rows[cut:]


WORDS = "the cat sat on mat dog ran to park bird flew over tree sun shone".split()


def chatty_users(users: int = 15, messages: int = 12, seed: int = 0) -> list[dict]:
    """JSON-lines documents: each user repeats a few fixed phrases (learnable bigrams)."""
    rng = np.random.default_rng(seed)
    phrases = [" ".join(WORDS[i : i + 4]) for i in range(0, len(WORDS) - 3, 3)]
    rows = []
    for u in range(users):
        mine = rng.choice(len(phrases), size=2, replace=False)
        for t in range(messages):
            rows.append({"user": f"person{u}", "time": t, "text": phrases[mine[t % 2]] + "."})
    return rows


class Regressor(nn.Module):
    """x float32 [B, features] -> one value per example, float32 [B]."""

    def __init__(self, features: int):
        super().__init__()
        self.linear = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


def regressor(features: int) -> nn.Module:
    return Regressor(features)
