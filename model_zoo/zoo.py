"""The model zoo by name: how to build each model, a sample batch, its loss and optimizer.

`build_bundle(name, out)` compiles one; the CLI's `edge-fl zoo export NAME` calls it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .compiler import compile_bundle
from .models import femnist_cnn, keyboard_cifg, logreg, mlp, shakespeare_char


@dataclass(frozen=True)
class ZooEntry:
    """How to make one zoo model. `batch` makes a sample batch of a given size (values
    matter only for benchmarks; shapes fix the static dimensions)."""

    build: Callable[..., nn.Module]
    batch: Callable[[int, torch.Generator], dict[str, torch.Tensor]]
    task: str
    optimizer: Callable[[object], torch.optim.Optimizer]
    ignore_index: int = -100
    vocabulary: Callable[[], object] | None = None  # built from real training text
    clip_grad_norm: float | None = None

    def loss(self) -> nn.CrossEntropyLoss:
        return nn.CrossEntropyLoss(ignore_index=self.ignore_index)


def _tokens(vocab: int, seq: int, name: str):
    def make(batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        tokens = torch.randint(1, vocab, (batch, seq + 1), generator=gen)
        return {name: tokens[:, :-1], "targets": tokens[:, 1:].clone()}
    return make


def _images(batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"x": torch.rand(batch, 1, 28, 28, generator=gen),
            "targets": torch.randint(0, 10, (batch,), generator=gen)}


def _tabular(batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(batch, 30, generator=gen),
            "targets": torch.randint(0, 2, (batch,), generator=gen)}


def _shakespeare_train_lines() -> list[str]:
    from .data.shakespeare import load_users
    return [line for user in load_users() for line in user.split()[0]]


def _word_vocabulary(size: int):
    def make():
        from .vocabulary_builder import build_word_vocabulary
        return build_word_vocabulary(_shakespeare_train_lines(), size)
    return make


def _char_vocabulary():
    from .vocabulary_builder import build_char_vocabulary
    return build_char_vocabulary(_shakespeare_train_lines())


def _adam(lr):
    return lambda params: torch.optim.Adam(params, lr=lr)


def _sgd(lr, momentum=0.0):
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


ZOO: dict[str, ZooEntry] = {
    "keyboard_cifg": ZooEntry(keyboard_cifg.full, _tokens(10000, 20, "tokens"), "next_word",
                              _sgd(1.0), ignore_index=keyboard_cifg.PAD,
                              vocabulary=_word_vocabulary(10000), clip_grad_norm=1.0),
    "keyboard_cifg_tiny": ZooEntry(keyboard_cifg.tiny, _tokens(500, 12, "tokens"), "next_word",
                                   _sgd(1.0), ignore_index=keyboard_cifg.PAD,
                                   vocabulary=_word_vocabulary(500), clip_grad_norm=1.0),
    "shakespeare_char": ZooEntry(shakespeare_char.full, _tokens(76, 80, "chars"), "next_char",
                                 _sgd(1.0), ignore_index=0, vocabulary=_char_vocabulary,
                                 clip_grad_norm=5.0),
    "shakespeare_char_tiny": ZooEntry(shakespeare_char.tiny, _tokens(76, 20, "chars"),
                                      "next_char", _sgd(1.0), ignore_index=0,
                                      vocabulary=_char_vocabulary, clip_grad_norm=5.0),
    "femnist_cnn": ZooEntry(femnist_cnn.full, _images, "classification", _sgd(0.05)),
    "femnist_cnn_tiny": ZooEntry(femnist_cnn.tiny, _images, "classification", _sgd(0.05)),
    "logreg": ZooEntry(logreg.LogReg, _tabular, "classification", _sgd(0.1)),
    "mlp": ZooEntry(mlp.MLP, _tabular, "classification", _adam(1e-2)),
}


def build_bundle(name: str, out: str | Path, *, batch_size: int = 8, seed: int = 0,
                 model: nn.Module | None = None, optimizer=None,
                 vocabulary=None, with_vocabulary: bool = False) -> Path:
    """Compile zoo model `name` (freshly initialised from `seed` unless `model` is given).

    with_vocabulary: build the model's vocabulary from the real training text (Shakespeare
    train split) and size the model to it; otherwise a given `vocabulary` (an
    edge_sdk.vocabulary object) is stored, or none.
    """
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(sorted(ZOO))}")
    entry = ZOO[name]
    if with_vocabulary and vocabulary is None and entry.vocabulary is not None:
        vocabulary = entry.vocabulary()
    gen = torch.Generator().manual_seed(seed)
    if model is None:
        torch.manual_seed(seed)
        model = entry.build(len(vocabulary)) if vocabulary is not None else entry.build()
    opt = optimizer or entry.optimizer(model.parameters())
    return compile_bundle(model, entry.batch(batch_size, gen), loss=entry.loss(), optimizer=opt,
                          out=out, model_name=name, task=entry.task,
                          clip_grad_norm=entry.clip_grad_norm,
                          vocabulary=vocabulary.to_json() if vocabulary is not None else None)
