"""scikit-learn's bundled tabular data sets (offline): breast cancer and digits."""

from __future__ import annotations

import numpy as np


def _split_standardize(x, y, test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(len(y) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8  # train statistics only
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return (scale(x[train]), y[train].astype(np.int64)), (scale(x[test]), y[test].astype(np.int64))


def load_breast_cancer(test_fraction: float = 0.2, seed: int = 0):
    """((x_train [n, 30], y_train), (x_test, y_test)), standardized with train statistics."""
    from sklearn.datasets import load_breast_cancer as sk_load

    data = sk_load()
    return _split_standardize(data.data, data.target, test_fraction, seed)


def load_digits(test_fraction: float = 0.2, seed: int = 0):
    """((x_train [n, 64], y_train), (x_test, y_test)), 10 classes."""
    from sklearn.datasets import load_digits as sk_load

    data = sk_load()
    return _split_standardize(data.data, data.target, test_fraction, seed)
