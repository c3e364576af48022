"""Seeded randomized Hadamard rotation (Suresh et al. 2017, "Distributed Mean Estimation
with Limited Communication"): x -> H D x / sqrt(block) per block, D random signs from the
seed. It spreads a vector's energy evenly over coordinates, so per-chunk scales fit every
coordinate and quantization error shrinks; the decoder inverts it with the same seed."""

from __future__ import annotations

import numpy as np


def _fwht(a: np.ndarray) -> np.ndarray:
    """Fast Walsh-Hadamard transform along the last axis (length a power of two)."""
    a = a.copy()
    n = a.shape[-1]
    h = 1
    while h < n:
        a = a.reshape(*a.shape[:-1], -1, 2, h)
        x, y = a[..., 0, :].copy(), a[..., 1, :]
        a[..., 0, :] += y
        a[..., 1, :] = x - y
        a = a.reshape(*a.shape[:-3], n)
        h *= 2
    return a


def _signs(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.float32) * 2 - 1


def rotated_length(n: int, block: int) -> int:
    return -(-n // block) * block


def rotate(x: np.ndarray, seed: int, block: int) -> np.ndarray:
    """float32 [n] -> float32 [ceil(n / block) * block] (zero-padded, then rotated)."""
    out = np.zeros(rotated_length(len(x), block), np.float32)
    out[: len(x)] = x
    out *= _signs(seed, len(out))
    return (_fwht(out.reshape(-1, block)) / np.sqrt(block)).reshape(-1).astype(np.float32)


def unrotate(y: np.ndarray, seed: int, block: int, n: int) -> np.ndarray:
    """Inverse of rotate: float32 [n]."""
    back = (_fwht(y.reshape(-1, block)) / np.sqrt(block)).reshape(-1)
    return (back * _signs(seed, len(y)))[:n].astype(np.float32)
