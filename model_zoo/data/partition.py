"""Synthetic client splits for data sets that have no natural users (Fashion-MNIST, the
scikit-learn tables). Results on such splits are about the split as much as the method:
say which one was used (IID, or Dirichlet with its alpha) wherever a figure is reported.

Each function returns one sorted int64 index array per client; together they cover every
example exactly once. Randomness comes only from the `rng` passed in.
"""
from __future__ import annotations

import numpy as np

__all__ = ["partition_iid", "partition_dirichlet"]


def partition_iid(n_examples: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A synthetic IID split: the indices 0..n_examples-1 shuffled and dealt into
    `n_clients` parts whose sizes differ by at most one."""
    _check_clients(n_clients)
    if n_examples < 0:
        raise ValueError(f"n_examples is >= 0, got {n_examples}")
    return [np.sort(part).astype(np.int64)
            for part in np.array_split(rng.permutation(n_examples), n_clients)]


def partition_dirichlet(labels: np.ndarray, n_clients: int, alpha: float,
                        rng: np.random.Generator) -> list[np.ndarray]:
    """A synthetic label-skewed split (Hsu et al. 2019, "Measuring the effects of non-identical
    data distribution"): each class's examples are shuffled and dealt to the clients in
    proportions drawn from Dirichlet(alpha * 1). Small alpha (0.1) gives clients dominated
    by few classes; large alpha (100) approaches IID. Client sizes vary and a client may
    get no example at all when alpha is small or clients outnumber examples.

    labels: int [n] class of each example (not mutated)."""
    _check_clients(n_clients)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels is a 1-D integer array, got {labels.dtype} {labels.shape}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet(np.full(n_clients, alpha))) * len(idx)).astype(int)[:-1]
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def _check_clients(n_clients: int) -> None:
    if n_clients < 1:
        raise ValueError(f"n_clients is >= 1, got {n_clients}")
