"""Federated datasets: users with examples, split into training and held-out parts per
user (base.py), the built-in readers (text, tabular, arrays, the bundled sets), and a
dataset from its config description (registry.py)."""

from .base import SPLITS, TASK_KINDS, DatasetError, FederatedDataset, InputSpec, Task
from .registry import READERS, check_spec, load_dataset, spec_from_argument

__all__ = [
    "SPLITS",
    "TASK_KINDS",
    "DatasetError",
    "FederatedDataset",
    "InputSpec",
    "Task",
    "READERS",
    "check_spec",
    "load_dataset",
    "spec_from_argument",
]
