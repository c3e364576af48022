"""What a federated dataset is: users, each with examples, split into a training and a
held-out part per user; and the task those examples pose (its kind, its inputs' shapes,
its number of classes or vocabulary).

A reader is any object with `name`, `task()`, `users()` and `examples(user, split)`
(`FederatedDataset`): a researcher's own loader is one such class, named in a simulation
config as `"data": {"kind": "package.module:Class", "options": {...}}`. Examples are
dicts of numpy arrays holding the bundle's inputs by name and the target under
"targets", one sample each (edge_sdk/batching.py), e.g. {"x": float32 [30], "targets":
int64 []} for a tabular classifier or {"tokens": int64 [T], "targets": int64 [T]} for
next-word prediction.

Nothing here imports torch: readers run where the data is, the compiler elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

SPLITS = ("train", "heldout")
TASK_KINDS = ("next_word", "next_char", "classification", "regression")


class DatasetError(ValueError):
    """Data that cannot be read as a federated dataset; the message says where and why."""


@dataclass(frozen=True)
class InputSpec:
    """One model input of one example: its shape without the batch dimension ("seq" for a
    variable length) and dtype."""

    shape: tuple
    dtype: str = "float32"


@dataclass(frozen=True)
class Task:
    """What the examples ask a model to do.

    kind: one of TASK_KINDS. inputs: the model's inputs by name (the forward()'s
    parameter names). num_classes: classes, or the vocabulary's size for text (1 for
    regression). vocabulary: the edge_sdk vocabulary text is encoded with, or None.
    classes: the label each class id stands for (for reports), when known.
    """

    kind: str
    inputs: dict[str, InputSpec]
    num_classes: int
    vocabulary: object | None = None
    classes: tuple = field(default=())

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise DatasetError(f"task kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if self.num_classes < 1:
            raise DatasetError(f"num_classes must be >= 1, got {self.num_classes}")
        if "targets" in self.inputs:
            raise DatasetError("'targets' names the target; call the input something else")

    @property
    def is_text(self) -> bool:
        return self.kind in ("next_word", "next_char")

    @property
    def features(self) -> int | None:
        """The length of a single flat float input (tabular data), else None."""
        if len(self.inputs) == 1:
            spec = next(iter(self.inputs.values()))
            if len(spec.shape) == 1 and isinstance(spec.shape[0], int):
                return spec.shape[0]
        return None


@runtime_checkable
class FederatedDataset(Protocol):
    """The protocol every reader follows (module docstring)."""

    name: str

    def task(self) -> Task: ...

    def users(self) -> Sequence[str]: ...

    def examples(self, user: str, split: str) -> list[dict[str, np.ndarray]]: ...


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")


def split_point(n: int, train_fraction: float) -> int:
    """How many of a user's n examples (in time order) train: the first train_fraction,
    at least one, and one held out when there are two or more (as LEAF splits)."""
    return max(1, min(n - 1, round(n * train_fraction))) if n > 1 else n


def check_fraction(train_fraction: float) -> None:
    if not 0 < train_fraction < 1:
        raise DatasetError(f"train_fraction must be in (0, 1), got {train_fraction}")
