"""Delta transforms applied before encoding: L2 clipping of the whole delta, and local
differential privacy (clip, then Gaussian noise of std noise_multiplier * clip_norm;
the Gaussian mechanism, Dwork & Roth 2014)."""

from __future__ import annotations

import numpy as np


def global_norm(delta: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.vdot(v, v)) for v in delta.values())))


def clip_by_global_norm(delta: dict[str, np.ndarray], max_norm: float) -> tuple[dict, float]:
    """(delta scaled to norm <= max_norm, the norm before). New arrays; input not mutated."""
    norm = global_norm(delta)
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {k: (v * scale).astype(np.float32) for k, v in delta.items()}, norm


def add_gaussian_noise(
    delta: dict[str, np.ndarray], std: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    return {k: (v + rng.normal(0.0, std, v.shape)).astype(np.float32) for k, v in delta.items()}
