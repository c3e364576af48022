"""Aggregation stages after TFF's aggregator factories: each wraps an inner stage, and
every accumulator reports (result, measurements) so telemetry never mixes with results.

A stage is a factory: `start()` opens an accumulator for one round (or one async
buffer); the accumulator takes whole updates one at a time (`add`) and holds one running
sum, so memory does not grow with the number of updates. This module holds the
interfaces and the plain stages; the robust (robust.py) and private (privacy.py) ones
build on them, and `aggregator.aggregation.build_aggregation` is the one place the stack
is assembled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .numerics import Delta, RunningSum, clip_scale, global_norm, scaled_delta


class Accumulator(Protocol):
    def add(self, delta: Delta, weight: float) -> dict: ...
    def result(self) -> tuple[Delta, dict]: ...


class Stage(Protocol):
    def start(self) -> Accumulator: ...


@dataclass(frozen=True)
class WeightedMean:
    """sum w_i d_i / sum w_i, w_i = examples x staleness weight."""

    def start(self) -> Accumulator:
        return _MeanAccumulator()


class _MeanAccumulator:
    def __init__(self):
        self.sum = RunningSum()

    def add(self, delta: Delta, weight: float) -> dict:
        self.sum.add(delta, weight)
        return {}

    def result(self) -> tuple[Delta, dict]:
        return self.sum.mean(), {"updates": self.sum.count, "total_weight": self.sum.total_weight}


@dataclass(frozen=True)
class Clip:
    """Bound each update's L2 norm at the server before the inner stage sees it."""

    norm: float
    inner: Stage

    def __post_init__(self):
        if not self.norm > 0:
            raise ValueError(f"clip norm must be > 0, got {self.norm}")

    def start(self) -> Accumulator:
        return _ClipAccumulator(self.norm, self.inner.start())


class _ClipAccumulator:
    def __init__(self, norm: float, inner: Accumulator):
        self.norm, self.inner, self.clipped, self.seen = norm, inner, 0, 0

    def add(self, delta: Delta, weight: float) -> dict:
        norm = global_norm(delta)
        scale = clip_scale(norm, self.norm)
        self.seen += 1
        if scale < 1.0:
            self.clipped += 1
            delta = scaled_delta(delta, scale)
        return {"norm": norm, "clipped": scale < 1.0} | self.inner.add(delta, weight)

    def result(self) -> tuple[Delta, dict]:
        mean, inner = self.inner.result()
        return mean, inner | {
            "clip": {"clipped": self.clipped, "seen": self.seen, "norm": self.norm}
        }


def stateful_stages(stage) -> list:
    """Stages in a stack that carry state across rounds (adaptive clipping), outermost first."""
    found = []
    while stage is not None:
        if hasattr(stage, "state") and hasattr(stage, "load_state"):
            found.append(stage)
        stage = getattr(stage, "inner", None)
    return found
