"""Pure numpy maths of aggregation. Deltas are dict[str, float32 ndarray]; nothing here
knows HTTP, storage or the wire format."""
from __future__ import annotations

import math

import numpy as np

Delta = dict[str, np.ndarray]


def global_norm(delta: Delta) -> float:
    return float(math.sqrt(sum(float(np.vdot(v, v)) for v in delta.values())))


def clip_scale(norm: float, max_norm: float) -> float:
    """The factor that brings an L2 norm down to max_norm (1 when already below)."""
    return 1.0 if norm <= max_norm or norm == 0 else max_norm / norm


class RunningSum:
    """sum_i w_i * delta_i and sum_i w_i in float64, one update at a time: memory is one
    model's worth whatever the number of updates."""

    def __init__(self):
        self.sums: dict[str, np.ndarray] = {}
        self.total_weight = 0.0
        self.count = 0

    def add(self, delta: Delta, weight: float) -> None:
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        for name, value in delta.items():
            acc = self.sums.get(name)
            if acc is None:
                self.sums[name] = value.astype(np.float64) * weight
            elif weight == 1.0:
                acc += value  # in place: no second copy of the model
            else:
                acc += value * np.float32(weight)
        self.total_weight += weight
        self.count += 1

    def mean(self) -> Delta:
        if self.total_weight <= 0:
            raise ValueError("no weight accumulated")
        return {k: (v / self.total_weight).astype(np.float32) for k, v in self.sums.items()}


# -- staleness weighting (FedBuff, Nguyen et al. 2022; FedAsync, Xie et al. 2019) -------
def polynomial_staleness(staleness: int, exponent: float = 0.5) -> float:
    """(1 + s)^-a; a = 0.5 is FedBuff's 1/sqrt(1 + s)."""
    return (1.0 + staleness) ** -exponent


def constant_staleness(staleness: int) -> float:
    return 1.0


def hinge_staleness(staleness: int, a: float = 10.0, b: int = 4) -> float:
    """1 up to b versions behind, then 1 / (a (s - b) + 1)."""
    return 1.0 if staleness <= b else 1.0 / (a * (staleness - b) + 1.0)


STALENESS = {"polynomial": polynomial_staleness, "constant": constant_staleness,
             "hinge": hinge_staleness}
