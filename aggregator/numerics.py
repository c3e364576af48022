"""Pure numpy maths of aggregation. Deltas are dict[str, float32 ndarray]; nothing here
knows HTTP, storage or the wire format."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from . import kernels

Delta = dict[str, np.ndarray]  # values may also be DecodedTensor parts (see below)


# -- tensors as decoded: dense arrays, or DecodedTensor parts (levels, sparse indices) ------
# The service hands the stages DecodedTensor parts so the plain mean can add quantized,
# sparse updates without building a dense float32 copy; stages that need every
# coordinate (robust statistics, DP) call `dense`.
def dense(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.to_dense()


def dense_delta(delta: Delta) -> Delta:
    return {k: dense(v) for k, v in delta.items()}


def squared_norm(x) -> float:
    if isinstance(x, np.ndarray):
        return float(np.vdot(x, x))
    if x.levels is None:
        return float(np.vdot(x.values, x.values)) * x.multiplier ** 2
    return kernels.levels_squared_norm(x.levels, x.a, x.b, x.chunk) * x.multiplier ** 2


def global_norm(delta: Delta) -> float:
    return float(math.sqrt(sum(squared_norm(v) for v in delta.values())))


def scaled(x, factor: float):
    """x * factor; DecodedTensor parts stay parts (the factor joins their multiplier)."""
    if isinstance(x, np.ndarray):
        return x * np.float32(factor)
    return replace(x, multiplier=x.multiplier * factor)


def add_scaled(acc: np.ndarray, x, weight: float) -> None:
    """acc (float32, x's shape; mutated) += weight * x."""
    flat = acc.reshape(-1)
    if isinstance(x, np.ndarray):
        flat += x.reshape(-1) * np.float32(weight) if weight != 1.0 else x.reshape(-1)
        return
    w = weight * x.multiplier
    if x.levels is None:
        if not x.sparse:
            flat += x.values * np.float32(w)
        else:
            flat[x.positions()] += x.values * np.float32(w)
    elif not x.sparse:
        kernels.add_dense_levels(flat, x.levels, x.a, x.b, x.chunk, w)
    elif x.block_counts is not None:
        add_block_sparse_batch(flat, [(x, w)])
    else:
        kernels.add_sparse_levels(flat, x.indices, x.levels, x.a, x.b, x.chunk, w)


def clip_scale(norm: float, max_norm: float) -> float:
    """The factor that brings an L2 norm down to max_norm (1 when already below)."""
    return 1.0 if norm <= max_norm or norm == 0 else max_norm / norm


class RunningSum:
    """sum_i w_i * delta_i and sum_i w_i, one update at a time: memory is one model's
    worth whatever the number of updates. The sums are float32: their rounding
    (~1e-7 relative per addition) is far below any codec's quantization error, and a
    float32 sum halves the memory traffic of the server's hottest loop.

    Block-coded sparse tensors (the default codec's) are held back, at most BATCH
    updates' worth (their compact parts: ~0.1 MB each for keyboard_cifg), and added as
    one batch a tile of the sum at a time, so the sum streams through cache once per
    batch rather than once per update. `sums` and `mean()` include them."""

    BATCH = 16

    def __init__(self):
        self._sums: dict[str, np.ndarray] = {}
        self._held: dict[str, list] = {}  # name -> [(DecodedTensor, weight)]
        self._held_updates = 0
        self.total_weight = 0.0
        self.count = 0

    def add(self, delta: Delta, weight: float) -> None:
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        held = False
        for name, value in delta.items():
            acc = self._sums.get(name)
            if acc is None:
                acc = self._sums[name] = np.zeros(value.shape, np.float32)
            if _batchable(value):
                self._held.setdefault(name, []).append((value, weight * value.multiplier))
                held = True
            else:
                add_scaled(acc, value, weight)
        self.total_weight += weight
        self.count += 1
        self._held_updates += held
        if self._held_updates >= self.BATCH:
            self._add_held()

    @property
    def sums(self) -> dict[str, np.ndarray]:
        self._add_held()
        return self._sums

    def mean(self) -> Delta:
        if self.total_weight <= 0:
            raise ValueError("no weight accumulated")
        return {k: (v / np.float32(self.total_weight)).astype(np.float32)
                for k, v in self.sums.items()}

    def _add_held(self) -> None:
        for name, held in self._held.items():
            for chunk in {x.chunk for x, _ in held}:  # one codec per task: one group
                group = [(x, w) for x, w in held if x.chunk == chunk]
                add_block_sparse_batch(self._sums[name].reshape(-1), group)
        self._held.clear()
        self._held_updates = 0


def _batchable(x) -> bool:
    return not isinstance(x, np.ndarray) and x.levels is not None and x.block_counts is not None


TILE_BLOCKS = 256  # 256 x 256 float32 coordinates: a 256 KB tile of the sum, well inside L2


def add_block_sparse_batch(flat: np.ndarray, group: list, tile_blocks: int = TILE_BLOCKS) -> None:
    """flat (float [n]; mutated) += sum of w * x over group [(DecodedTensor, w)], all
    block-coded quantized tensors of flat's size with the same chunk."""
    def joined(field):  # one update's arrays as they are, several concatenated
        arrays = [getattr(x, field) for x, _ in group]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    kernels.add_block_sparse_levels_batch(
        flat, np.stack([x.block_counts for x, _ in group]), joined("block_offsets"),
        joined("levels"), joined("a"), joined("b"),
        np.cumsum([0] + [len(x.levels) for x, _ in group]),
        np.cumsum([0] + [len(x.a) for x, _ in group]), group[0][0].chunk,
        np.array([w for _, w in group], np.float64), tile_blocks)


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
