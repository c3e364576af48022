"""The model zoo by name: how to build each model, a sample batch, its loss and optimizer.

`build_bundle(name, out)` compiles one; the CLI's `edge-fl zoo export NAME` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .compiler import compile_bundle
from .models import (
    femnist_cnn,
    keyboard_cifg,
    keyboard_transformer,
    logreg,
    mlp,
    mobilenet_cnn,
    shakespeare_char,
)


@dataclass(frozen=True)
class Tokens:
    """The sizes of a token model's sample batch: ids in [1, vocabulary_size) under input
    `name`, `sequence_length` positions, the targets shifted by one. `positional`: the model
    holds a table of `sequence_length` positions (built with max_len), so a model for longer
    sequences is a different model."""

    name: str
    vocabulary_size: int
    sequence_length: int
    positional: bool = False


@dataclass(frozen=True)
class ZooEntry:
    """How to make one zoo model.

    build: the model's constructor; a token model's takes vocab_size (and max_len when its
    `tokens` are positional). sample: a sample batch of a given size for models that read
    no tokens; token models draw theirs from `tokens`. Sample values matter only for
    benchmarks; shapes fix the static dimensions.
    """

    build: Callable[..., nn.Module]
    task: str
    optimizer: Callable[[object], torch.optim.Optimizer]
    tokens: Tokens | None = None
    sample: Callable[[int, torch.Generator], dict[str, torch.Tensor]] | None = None
    ignore_index: int = -100
    vocabulary: Callable[[], object] | None = None  # built from real training text
    clip_grad_norm: float | None = None

    def __post_init__(self):
        if (self.tokens is None) == (self.sample is None):
            raise ValueError("a zoo entry has either token sizes or a sample function")

    def loss(self) -> nn.CrossEntropyLoss:
        return nn.CrossEntropyLoss(ignore_index=self.ignore_index)

    def sizes(
        self, vocabulary_size: int | None = None, sequence_length: int | None = None
    ) -> tuple[int, int] | None:
        """(vocabulary size, sequence length): the given ones, else the entry's defaults;
        None for a model that reads no tokens. Raises ValueError for sizes out of range or
        given to a model that reads no tokens."""
        if self.tokens is None:
            if vocabulary_size is not None or sequence_length is not None:
                raise ValueError(
                    "this model reads no tokens: it takes no vocabulary size or sequence length"
                )
            return None
        vocab = self.tokens.vocabulary_size if vocabulary_size is None else vocabulary_size
        seq = self.tokens.sequence_length if sequence_length is None else sequence_length
        if not isinstance(vocab, int) or vocab < 2:
            raise ValueError(
                f"vocabulary_size must be an int >= 2 (padding and one token), got {vocab!r}"
            )
        if not isinstance(seq, int) or seq < 1:
            raise ValueError(f"sequence_length must be an int >= 1, got {seq!r}")
        return vocab, seq

    def model(
        self, vocabulary_size: int | None = None, sequence_length: int | None = None
    ) -> nn.Module:
        """A freshly initialised model (from torch's global generator) of the given sizes."""
        sizes = self.sizes(vocabulary_size, sequence_length)
        if sizes is None:
            return self.build()
        vocab, seq = sizes
        return self.build(vocab, seq) if self.tokens.positional else self.build(vocab)

    def batch(
        self,
        batch_size: int,
        gen: torch.Generator,
        vocabulary_size: int | None = None,
        sequence_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """A sample batch for the model of the given sizes: int64 ids [batch, seq] (never
        the padding id 0) and targets [batch, seq], or the model's features and targets."""
        sizes = self.sizes(vocabulary_size, sequence_length)
        if sizes is None:
            return self.sample(batch_size, gen)
        vocab, seq = sizes
        ids = torch.randint(1, vocab, (batch_size, seq + 1), generator=gen)
        # contiguous copies: a view's strides tie its size to its base's, which torch.export
        # turns into a guard on the sequence length
        return {self.tokens.name: ids[:, :-1].clone(), "targets": ids[:, 1:].clone()}


def _images(batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "x": torch.rand(batch, 1, 28, 28, generator=gen),
        "targets": torch.randint(0, 10, (batch,), generator=gen),
    }


def _tabular(batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "x": torch.randn(batch, 30, generator=gen),
        "targets": torch.randint(0, 2, (batch,), generator=gen),
    }


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


def _with_tiny(name: str, full: ZooEntry, **tiny: object) -> dict[str, ZooEntry]:
    """`name` and `name_tiny`: the tiny model's entry is the full one's but for `tiny`."""
    return {name: full, f"{name}_tiny": replace(full, **tiny)}


def _keyboard(name: str, module, *, positional: bool = False) -> dict[str, ZooEntry]:
    """A next-word model over a vocabulary from the real training text: 10,000 words and
    20 positions, its tiny model 500 words and 12 positions."""

    def words(vocab: int, seq: int) -> dict[str, object]:
        return {
            "tokens": Tokens("tokens", vocab, seq, positional=positional),
            "vocabulary": _word_vocabulary(vocab),
        }

    full = ZooEntry(
        module.full,
        "next_word",
        _sgd(1.0),
        ignore_index=module.PAD,
        clip_grad_norm=1.0,
        **words(10000, 20),
    )
    return _with_tiny(name, full, build=module.tiny, **words(500, 12))


def _classifier(name: str, module, lr: float) -> dict[str, ZooEntry]:
    """An image classifier trained with plain SGD at `lr`, and its tiny model."""
    full = ZooEntry(module.full, "classification", _sgd(lr), sample=_images)
    return _with_tiny(name, full, build=module.tiny)


ZOO: dict[str, ZooEntry] = {
    **_keyboard("keyboard_cifg", keyboard_cifg),
    **_keyboard("keyboard_transformer", keyboard_transformer, positional=True),
    **_with_tiny(
        "shakespeare_char",
        ZooEntry(
            shakespeare_char.full,
            "next_char",
            _sgd(1.0),
            tokens=Tokens("chars", 80, 80),
            ignore_index=0,
            vocabulary=_char_vocabulary,
            clip_grad_norm=5.0,
        ),
        build=shakespeare_char.tiny,
        tokens=Tokens("chars", 80, 20),
    ),
    **_classifier("femnist_cnn", femnist_cnn, 0.05),
    **_classifier("mobilenet_cnn", mobilenet_cnn, 0.1),
    "logreg": ZooEntry(logreg.LogReg, "classification", _sgd(0.1), sample=_tabular),
    "mlp": ZooEntry(mlp.MLP, "classification", _adam(1e-2), sample=_tabular),
}


def build_bundle(
    name: str,
    out: str | Path,
    *,
    batch_size: int = 8,
    seed: int = 0,
    model: nn.Module | None = None,
    optimizer=None,
    vocabulary=None,
    with_vocabulary: bool = False,
    vocabulary_size: int | None = None,
    sequence_length: int | None = None,
) -> Path:
    """Compile zoo model `name` (freshly initialised from `seed` unless `model` is given).

    with_vocabulary: build the model's vocabulary from the real training text (Shakespeare
    train split) and size the model to it; otherwise a given `vocabulary` (an
    edge_sdk.vocabulary object) is stored and sizes the model, or none.
    vocabulary_size, sequence_length: a token model's sizes when no vocabulary sizes it
    (default: the entry's). A given `model` must have been built for the same sizes.
    """
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(sorted(ZOO))}")
    entry = ZOO[name]
    if with_vocabulary and vocabulary is None and entry.vocabulary is not None:
        vocabulary = entry.vocabulary()
    if vocabulary is not None:
        if vocabulary_size is not None and vocabulary_size != len(vocabulary):
            raise ValueError(
                f"vocabulary_size {vocabulary_size} differs from the given "
                f"vocabulary's {len(vocabulary)} entries; pass one of them"
            )
        vocabulary_size = len(vocabulary)
    gen = torch.Generator().manual_seed(seed)
    if model is None:
        torch.manual_seed(seed)
        model = entry.model(vocabulary_size, sequence_length)
    opt = optimizer or entry.optimizer(model.parameters())
    sample = entry.batch(batch_size, gen, vocabulary_size, sequence_length)
    return compile_bundle(
        model,
        sample,
        loss=entry.loss(),
        optimizer=opt,
        out=out,
        model_name=name,
        task=entry.task,
        clip_grad_norm=entry.clip_grad_norm,
        vocabulary=vocabulary.to_json() if vocabulary is not None else None,
    )
