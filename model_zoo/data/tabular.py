"""scikit-learn's bundled tabular data sets (no download): breast cancer (569 x 30, 2
classes) and digits (1,797 x 64, 10 classes).

Each loader returns ((x_train, y_train), (x_test, y_test)): x float32 [n, features]
standardized with the *training* rows' mean and standard deviation (features constant on
the training rows are only centred), y int64 [n]. The split is a seeded shuffle. Neither
set has natural users: split clients with model_zoo.data.partition (synthetic).
"""
from __future__ import annotations

import numpy as np

__all__ = ["load_breast_cancer", "load_digits", "split_and_standardize"]

Split = tuple[np.ndarray, np.ndarray]


def load_breast_cancer(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """Wisconsin diagnostic breast cancer: x [n, 30], y in {0 malignant, 1 benign}."""
    from sklearn.datasets import load_breast_cancer as sk_load
    data = sk_load()
    return split_and_standardize(data.data, data.target, test_fraction,
                                 np.random.default_rng(seed))


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """8x8 handwritten digits as x [n, 64], y in 0..9."""
    from sklearn.datasets import load_digits as sk_load
    data = sk_load()
    return split_and_standardize(data.data, data.target, test_fraction,
                                 np.random.default_rng(seed))


def split_and_standardize(x: np.ndarray, y: np.ndarray, test_fraction: float,
                          rng: np.random.Generator) -> tuple[Split, Split]:
    """Shuffle rows with `rng`, keep the last `test_fraction` for test, and standardize both
    parts with training statistics. x [n, f], y [n] are not mutated."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction is in (0, 1), got {test_fraction}")
    order = rng.permutation(len(y))
    cut = len(y) - max(1, round(len(y) * test_fraction))
    train, test = order[:cut], order[cut:]
    mean, std = x[train].mean(0), x[train].std(0)
    std = np.where(std > 0, std, 1.0)  # a constant training feature: centre, don't blow up

    def scale(rows: np.ndarray) -> np.ndarray:
        return ((x[rows] - mean) / std).astype(np.float32)

    return (scale(train), y[train].astype(np.int64)), (scale(test), y[test].astype(np.int64))
