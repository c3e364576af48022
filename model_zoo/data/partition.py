"""Synthetic client splits for data sets that have no natural users."""

from __future__ import annotations

import numpy as np


def partition_iid(n_examples: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and deal the indices into n_clients near-equal parts."""
    return np.array_split(rng.permutation(n_examples), n_clients)


def partition_dirichlet(
    labels: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label-skewed split (Hsu et al. 2019): each class is dealt to the clients in
    proportions drawn from Dirichlet(alpha); small alpha = strongly non-IID."""
    if alpha <= 0:
        raise ValueError("alpha must be > 0")
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet([alpha] * n_clients)) * len(idx)).astype(int)[:-1]
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client] += chunk.tolist()
    return [np.array(sorted(p), dtype=np.int64) for p in parts]
