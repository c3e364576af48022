"""Robust aggregation stages: outlier rejection by norm, coordinate-wise trimmed mean and
median (Yin et al. 2018, "Byzantine-Robust Distributed Learning") over bounded buffers.

Trimmed mean and median need the updates side by side, so they hold at most `buffer`
updates: each full buffer is reduced to its statistic and the statistics are averaged,
weighted by how many updates each summarizes. Memory is `buffer` models, whatever the
number of updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .numerics import Delta, dense_delta, global_norm
from .stages import Accumulator, Stage


@dataclass(frozen=True)
class RejectOutliers:
    """Drop an update whose L2 norm exceeds `factor` x the median norm of the updates seen
    so far this round (after `warmup` updates have set the median)."""

    factor: float
    inner: Stage
    warmup: int = 5

    def __post_init__(self):
        if self.factor <= 1:
            raise ValueError(f"factor must be > 1 (e.g. 3), got {self.factor}")

    def start(self) -> Accumulator:
        return _RejectAccumulator(self.factor, self.warmup, self.inner.start())


class _RejectAccumulator:
    def __init__(self, factor, warmup, inner):
        self.factor, self.warmup, self.inner = factor, warmup, inner
        self.norms: list[float] = []
        self.rejected = 0

    def add(self, delta: Delta, weight: float) -> dict:
        norm = global_norm(delta)
        self.norms.append(norm)
        if len(self.norms) > self.warmup and norm > self.factor * float(np.median(self.norms)):
            self.rejected += 1
            return {"norm": norm, "rejected_outlier": True}
        return {"norm": norm, "rejected_outlier": False} | self.inner.add(delta, weight)

    def result(self) -> tuple[Delta, dict]:
        mean, inner = self.inner.result()
        return mean, inner | {"outliers": {"rejected": self.rejected, "seen": len(self.norms)}}


@dataclass(frozen=True)
class TrimmedMean:
    """Per coordinate, drop the `trim` fraction of largest and of smallest values, then
    average (unweighted: a weight could let one device buy its way past the trim)."""

    trim: float = 0.1
    buffer: int = 50

    def __post_init__(self):
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {self.trim}")
        if self.buffer < 3:
            raise ValueError("buffer must hold at least 3 updates")

    def start(self) -> Accumulator:
        return _BufferedAccumulator(
            self.buffer, lambda stack: _trimmed(stack, self.trim), "trimmed_mean"
        )


@dataclass(frozen=True)
class CoordinateMedian:
    buffer: int = 50

    def __post_init__(self):
        if self.buffer < 1:
            raise ValueError("buffer must be >= 1")

    def start(self) -> Accumulator:
        return _BufferedAccumulator(self.buffer, lambda stack: np.median(stack, axis=0), "median")


ROBUST_STAGES = {"trimmed_mean": TrimmedMean, "median": CoordinateMedian}
"""The registry: a task's `robust.kind` names one of these; the other keys of its robust
settings are the stage's own fields."""


def _trimmed(stack: np.ndarray, trim: float) -> np.ndarray:
    n = stack.shape[0]
    k = int(np.floor(trim * n))
    if k == 0:
        return stack.mean(axis=0)
    ordered = np.sort(stack, axis=0)
    return ordered[k : n - k].mean(axis=0)


class _BufferedAccumulator:
    def __init__(self, buffer: int, statistic, name: str):
        self.buffer, self.statistic, self.name = buffer, statistic, name
        self.pending: list[Delta] = []
        self.blocks: list[tuple[Delta, int]] = []

    def add(self, delta: Delta, weight: float) -> dict:
        self.pending.append(dense_delta(delta))
        if len(self.pending) == self.buffer:
            self._reduce()
        return {}

    def _reduce(self) -> None:
        names = self.pending[0].keys()
        block = {
            k: self.statistic(np.stack([d[k] for d in self.pending])).astype(np.float32)
            for k in names
        }
        self.blocks.append((block, len(self.pending)))
        self.pending = []

    def result(self) -> tuple[Delta, dict]:
        if self.pending:
            self._reduce()
        if not self.blocks:
            raise ValueError("no updates to aggregate")
        total = sum(n for _, n in self.blocks)
        mean = {
            k: sum(b[k] * (n / total) for b, n in self.blocks).astype(np.float32)
            for k in self.blocks[0][0]
        }
        return mean, {"updates": total, self.name: {"blocks": len(self.blocks)}}
