"""Pure numpy maths of aggregation. A delta maps tensor names to float32 arrays or to
their decoded parts (below); nothing here knows HTTP, storage or the wire format."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edge_sdk.protocol import JoinedBatch, JoinedParts
from edge_sdk.protocol.codec import squared_norm as _squared

Delta = Mapping[str, np.ndarray]  # values may also be DecodedTensor parts (see below)


# -- tensors as decoded: dense arrays, or DecodedTensor parts (levels, sparse indices) ------
# The service hands the stages DecodedTensor parts so the plain mean can add quantized,
# sparse updates without building a dense float32 copy; a block-coded update comes as one
# JoinedParts (a Mapping of such parts whose arrays are joined), which the mean adds whole.
# The parts add themselves into a sum and bound their own norms (their layout is the
# protocol's business). Stages that need every coordinate (robust statistics, DP) call
# `dense`.
def dense(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.to_dense()


def dense_delta(delta: Delta) -> Delta:
    return {k: dense(v) for k, v in delta.items()}


def squared_norm(x) -> float:
    """The squared L2 norm, float64 (a float32 sum that overflows is redone in float64)."""
    return _squared(x) if isinstance(x, np.ndarray) else x.squared_norm()


def global_norm(delta: Delta) -> float:
    if isinstance(delta, JoinedParts):
        return math.sqrt(delta.squared_norm())
    return float(math.sqrt(sum(squared_norm(v) for v in delta.values())))


# -- bounded contributions -----------------------------------------------------------------
def norm_over(delta: Delta, max_norm: float) -> float | None:
    """None when the delta's L2 norm (float64) is at most `max_norm`, else that norm.

    A quantized chunk's scale s (its levels span [-s, s]) is held to `max_norm` as well:
    an honest encoder's chunk holds a value of magnitude s, so its update's norm is at
    least s, while a crafted one could pair a huge scale with mid levels that decode to
    ~0 and then overflow float32 when weighted in the sum. The result is then s.

    Quantized parts are never made dense, and their levels are read only when needed:
    first an upper bound from the chunk scales alone (sum over chunks of count x largest
    |value|^2, a few hundred numbers), and only when the bound exceeds `max_norm` the
    exact sum over the levels. The default codec's JoinedParts is bounded in one pass."""
    parts = (delta,) if isinstance(delta, JoinedParts) else delta.values()
    exact, upper, deferred = 0.0, 0.0, []
    for x in parts:
        if isinstance(x, np.ndarray):
            sq = _squared(x)
            exact, upper = exact + sq, upper + sq
            continue
        scale, bound = x.norm_bound()
        if scale > max_norm:
            return scale
        upper += bound
        deferred.append(x)
    if upper <= max_norm * max_norm:
        return None
    norm = math.sqrt(exact + sum(x.squared_norm() for x in deferred))
    return norm if norm > max_norm else None


def all_finite(arrays: Mapping[str, np.ndarray]) -> bool:
    """Every value of every (dense) array finite."""
    return all(np.isfinite(v).all() for v in arrays.values())


def scaled(x, factor: float):
    """x * factor; DecodedTensor parts stay parts (the factor joins their multiplier)."""
    return x * np.float32(factor) if isinstance(x, np.ndarray) else x.scaled(factor)


def scaled_delta(delta: Delta, factor: float) -> Delta:
    """delta * factor; a JoinedParts stays joined (the factor joins its multiplier)."""
    if isinstance(delta, JoinedParts):
        return delta.scaled(factor)
    return {k: scaled(v, factor) for k, v in delta.items()}


def add_scaled(acc: np.ndarray, x, weight: float) -> None:
    """acc (float32, x's shape; mutated) += weight * x."""
    flat = acc.reshape(-1)
    if isinstance(x, np.ndarray):
        flat += x.reshape(-1) * np.float32(weight) if weight != 1.0 else x.reshape(-1)
        return
    x.add_into(flat, weight)


def clip_scale(norm: float, max_norm: float) -> float:
    """The factor that brings an L2 norm down to max_norm (1 when already below)."""
    return 1.0 if norm <= max_norm or norm == 0 else max_norm / norm


class RunningSum:
    """sum_i w_i * delta_i and sum_i w_i, one update at a time: memory is one model's
    worth whatever the number of updates. The sums are float32: their rounding
    (~1e-7 relative per addition) is far below any codec's quantization error, and a
    float32 sum halves the memory traffic of the server's hottest loop.

    All tensors' sums live in one array (`sums` are views of it), so a JoinedParts update
    (the default codec's) is added in one pass over all its tensors. Those are held back
    in a JoinedBatch, at most BATCH of them and BATCH_BYTES of their parts, and added
    together, a tile of the sum at a time, so the sum streams through cache once per
    batch rather than once per update. `sums` and
    `mean()` include them."""

    BATCH = 32
    BATCH_BYTES = 8 * 2**20  # fewer updates per batch for models whose updates are larger

    def __init__(self):
        self._flat: np.ndarray | None = None  # float32, every tensor's sum in turn
        self._sums: dict[str, np.ndarray] = {}  # name -> its view of _flat
        self._at: dict[str, int] = {}  # name -> where its view starts
        self._held: JoinedBatch | None = None
        self.total_weight = 0.0
        self.count = 0

    def add(self, delta: Delta, weight: float) -> None:
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        if self._flat is None:
            self._allocate(delta)
        if isinstance(delta, JoinedParts):
            if self._held is None or self._held.layout != delta.layout:
                self._check_tensors(delta.names, delta.shapes)  # once per layout
                self._add_held()
                self._held = JoinedBatch(
                    delta,
                    max(
                        1, min(self.BATCH, self.BATCH_BYTES // JoinedBatch.bytes_per_update(delta))
                    ),
                )
            self._held.put(delta, weight * delta.multiplier)
            if self._held.full:
                self._add_held()
        else:
            self._check_tensors(tuple(delta), tuple(tuple(v.shape) for v in delta.values()))
            for name, value in delta.items():
                add_scaled(self._sums[name], value, weight)
        self.total_weight += weight
        self.count += 1

    @property
    def sums(self) -> dict[str, np.ndarray]:
        self._add_held()
        return self._sums

    def mean(self) -> Delta:
        if self.total_weight <= 0:
            raise ValueError("no weight accumulated")
        return {
            k: (v / np.float32(self.total_weight)).astype(np.float32) for k, v in self.sums.items()
        }

    def _allocate(self, delta: Delta) -> None:
        shapes = {name: tuple(value.shape) for name, value in delta.items()}
        sizes = {name: math.prod(shape) for name, shape in shapes.items()}
        self._flat = np.zeros(sum(sizes.values()), np.float32)
        at = 0
        for name, shape in shapes.items():
            self._at[name] = at
            self._sums[name] = self._flat[at : at + sizes[name]].reshape(shape)
            at += sizes[name]

    def _check_tensors(self, names: tuple, shapes: tuple) -> None:
        sums = self._sums
        if len(names) != len(sums) or any(
            sums.get(n) is None or sums[n].shape != s for n, s in zip(names, shapes)
        ):
            raise ValueError(
                f"an update's tensors {list(zip(names, shapes))} differ from the "
                f"first update's {[(n, v.shape) for n, v in self._sums.items()]}"
            )

    def _add_held(self) -> None:
        if self._held is not None:
            self._held.add_to(self._flat, self._at)


# -- staleness weighting (FedBuff, Nguyen et al. 2022; FedAsync, Xie et al. 2019) -------
def polynomial_staleness(staleness: int, exponent: float = 0.5) -> float:
    """(1 + s)^-a; a = 0.5 is FedBuff's 1/sqrt(1 + s)."""
    return (1.0 + staleness) ** -exponent


def constant_staleness(staleness: int) -> float:
    return 1.0


def hinge_staleness(staleness: int, a: float = 10.0, b: int = 4) -> float:
    """1 up to b versions behind, then 1 / (a (s - b) + 1)."""
    return 1.0 if staleness <= b else 1.0 / (a * (staleness - b) + 1.0)


STALENESS = {
    "polynomial": polynomial_staleness,
    "constant": constant_staleness,
    "hinge": hinge_staleness,
}
