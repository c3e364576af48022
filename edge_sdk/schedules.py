"""Learning-rate schedules: step number (0-based) -> learning rate. The rate is a graph
input of the train step, so any schedule works without recompiling the bundle."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    lr: float

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")

    def __call__(self, step: int) -> float:
        return self.lr


@dataclass(frozen=True)
class InverseSqrt:
    """lr * min(1, sqrt(warmup / (step + 1))): flat for `warmup` steps, then 1/sqrt decay."""

    lr: float
    warmup: int = 100

    def __post_init__(self):
        if not self.lr > 0 or self.warmup < 1:
            raise ValueError("InverseSqrt needs lr > 0 and warmup >= 1")

    def __call__(self, step: int) -> float:
        return self.lr * min(1.0, math.sqrt(self.warmup / (step + 1)))


@dataclass(frozen=True)
class Cosine:
    """Cosine decay from lr to lr * floor over `total` steps (Loshchilov & Hutter 2017)."""

    lr: float
    total: int
    floor: float = 0.0

    def __post_init__(self):
        if not self.lr > 0 or self.total < 1 or not 0 <= self.floor <= 1:
            raise ValueError("Cosine needs lr > 0, total >= 1 and 0 <= floor <= 1")

    def __call__(self, step: int) -> float:
        t = min(step, self.total) / self.total
        return self.lr * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t)))


Schedule = Constant | InverseSqrt | Cosine
