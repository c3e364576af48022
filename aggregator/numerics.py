"""Pure numpy maths of aggregation. A delta maps tensor names to float32 arrays or to
their decoded parts (below); nothing here knows HTTP, storage or the wire format."""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from edge_sdk.protocol import INDEX_BLOCK, JoinedParts

from . import kernels

Delta = Mapping[str, np.ndarray]  # values may also be DecodedTensor parts (see below)


# -- tensors as decoded: dense arrays, or DecodedTensor parts (levels, sparse indices) ------
# The service hands the stages DecodedTensor parts so the plain mean can add quantized,
# sparse updates without building a dense float32 copy; a block-coded update comes as one
# JoinedParts (a Mapping of such parts whose arrays are joined), which the mean adds whole.
# Stages that need every coordinate (robust statistics, DP) call `dense`.
def dense(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.to_dense()


def dense_delta(delta: Delta) -> Delta:
    return {k: dense(v) for k, v in delta.items()}


def squared_norm(x) -> float:
    """The squared L2 norm, float64 (a float32 sum that overflows is redone in float64)."""
    if isinstance(x, np.ndarray):
        return _squared(x)
    if x.levels is None:
        return _squared(x.values) * x.multiplier ** 2
    return kernels.levels_squared_norm(x.levels, x.a, x.b, x.chunk) * x.multiplier ** 2


def _squared(v: np.ndarray) -> float:
    total = float(np.vdot(v, v))
    if not math.isfinite(total):
        flat = v.reshape(-1).astype(np.float64)
        total = float(np.dot(flat, flat))
    return total


def global_norm(delta: Delta) -> float:
    if isinstance(delta, JoinedParts):
        return math.sqrt(_joined_squared_norm(delta))
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
    if isinstance(delta, JoinedParts):
        return _joined_over(delta, max_norm)
    exact, upper, quantized = 0.0, 0.0, []
    for x in delta.values():
        if isinstance(x, np.ndarray) or x.levels is None:
            sq = squared_norm(x)
            exact, upper = exact + sq, upper + sq
            continue
        m = abs(x.multiplier)
        scale, bound = kernels.chunk_scale_bound(x.b, _chunk_sizes((len(x.levels),), x.chunk))
        if scale * m > max_norm:
            return scale * m
        upper += bound * _REACH_SQUARED * m * m
        quantized.append(x)
    if upper <= max_norm * max_norm:
        return None
    norm = math.sqrt(exact + sum(squared_norm(x) for x in quantized))
    return norm if norm > max_norm else None


# a chunk of scale s decodes level l to l a - s with a = 2s / (levels - 1): at most
# s (256 / 254) in magnitude (8 bits, level 255, which no encoder sends; fewer bits are
# checked below their level count), the margin covers float32 rounding of a
_REACH_SQUARED = (256 / 254) ** 2 * (1 + 1e-5)


def _joined_over(x: JoinedParts, max_norm: float) -> float | None:
    m = abs(x.multiplier)
    # x.b is -scale of each chunk: one pass over them, no level read
    scale, bound = kernels.chunk_scale_bound(x.b, _chunk_sizes(x.plan.kept, x.chunk))
    if scale * m > max_norm:
        return scale * m
    if bound * _REACH_SQUARED * m * m <= max_norm * max_norm:
        return None
    norm = math.sqrt(_joined_squared_norm(x))
    return norm if norm > max_norm else None


def _joined_squared_norm(x: JoinedParts) -> float:
    """sum of (l a_c + b_c)^2 over every kept value, float64, in one pass over the joined
    levels, times the multiplier squared."""
    sizes = _chunk_sizes(x.plan.kept, x.chunk)
    return kernels.chunked_levels_squared_norm(x.levels, x.a, x.b, sizes) * x.multiplier ** 2


@functools.lru_cache(maxsize=64)
def _chunk_sizes(kept: tuple, chunk: int) -> np.ndarray:
    """int64 [sum of chunks]: values in each chunk of joined tensors that keep `kept`
    (each tensor's values are chunked on their own, so its last chunk may be short).
    Cached: do not mutate."""
    sizes = []
    for k in kept:
        full, rest = divmod(k, chunk)
        sizes += [chunk] * full + ([rest] if rest else [])
    return np.array(sizes, np.int64)


def all_finite(arrays: Mapping[str, np.ndarray]) -> bool:
    """Every value of every (dense) array finite."""
    return all(np.isfinite(v).all() for v in arrays.values())


def scaled(x, factor: float):
    """x * factor; DecodedTensor parts stay parts (the factor joins their multiplier)."""
    if isinstance(x, np.ndarray):
        return x * np.float32(factor)
    return replace(x, multiplier=x.multiplier * factor)


def scaled_delta(delta: Delta, factor: float) -> Delta:
    """delta * factor; a JoinedParts stays joined (the factor joins its multiplier)."""
    if isinstance(delta, JoinedParts):
        return replace(delta, multiplier=delta.multiplier * factor)
    return {k: scaled(v, factor) for k, v in delta.items()}


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
    elif x.block_counts is not None:  # a batch of one update of one tensor
        base, restart = _block_map((len(x.block_counts),), (len(x.a),), (0,))
        kernels.add_joined_levels_batch(flat, x.block_counts[None], x.block_offsets, x.levels,
                                        x.a, x.b, base, restart, x.chunk, np.array([w]),
                                        TILE_BLOCKS)
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

    All tensors' sums live in one array (`sums` are views of it), so a JoinedParts update
    (the default codec's) is added in one pass over all its tensors. Those are held back
    in a JoinedBatch, at most BATCH of them and BATCH_BYTES of their parts (~155 KB each
    for keyboard_cifg), and added together, a tile of the sum at a time, so the sum
    streams through cache once per batch rather than once per update. `sums` and
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
                self._held = JoinedBatch(delta, max(1, min(
                    self.BATCH, self.BATCH_BYTES // JoinedBatch.bytes_per_update(delta))))
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
        return {k: (v / np.float32(self.total_weight)).astype(np.float32)
                for k, v in self.sums.items()}

    def _allocate(self, delta: Delta) -> None:
        shapes = {name: tuple(value.shape) for name, value in delta.items()}
        sizes = {name: math.prod(shape) for name, shape in shapes.items()}
        self._flat = np.zeros(sum(sizes.values()), np.float32)
        at = 0
        for name, shape in shapes.items():
            self._at[name] = at
            self._sums[name] = self._flat[at:at + sizes[name]].reshape(shape)
            at += sizes[name]

    def _check_tensors(self, names: tuple, shapes: tuple) -> None:
        sums = self._sums
        if len(names) != len(sums) or any(sums.get(n) is None or sums[n].shape != s
                                          for n, s in zip(names, shapes)):
            raise ValueError(f"an update's tensors {list(zip(names, shapes))} differ from the "
                             f"first update's {[(n, v.shape) for n, v in self._sums.items()]}")

    def _add_held(self) -> None:
        if self._held is not None:
            self._held.add_to(self._flat, self._at)


TILE_BLOCKS = 256  # 256 x 256 float32 coordinates: a 256 KB tile of the sum, well inside L2


class JoinedBatch:
    """Up to `capacity` JoinedParts updates of one layout, copied as they arrive (while
    they are still in cache) into arrays laid out for kernels.add_joined_levels_batch, so
    adding the batch copies nothing more. ~155 KB per update for keyboard_cifg."""

    def __init__(self, first: JoinedParts, capacity: int):
        self.layout, self.names, self.chunk = first.layout, first.names, first.chunk
        self.blocks, self.chunks = first.blocks, first.chunks
        # one row per update; rows [:size] read as one array are what the kernel takes
        self.counts = np.empty((capacity, len(first.counts)), np.uint16)
        self.offsets = np.empty((capacity, len(first.offsets)), np.uint8)
        self.levels = np.empty((capacity, len(first.levels)), np.uint8)
        self.a = np.empty((capacity, len(first.a)), np.float32)
        self.b = np.empty((capacity, len(first.b)), np.float32)
        self.weights = np.empty(capacity, np.float64)
        self.size = 0

    @staticmethod
    def bytes_per_update(x: JoinedParts) -> int:
        return x.counts.nbytes + x.offsets.nbytes + x.levels.nbytes + x.a.nbytes + x.b.nbytes

    @property
    def full(self) -> bool:
        return self.size == len(self.weights)

    def put(self, x: JoinedParts, weight: float) -> None:
        """Hold w * x, weight = w x.multiplier."""
        if x.layout != self.layout:  # the kernel trusts the layout
            raise ValueError("a batch of joined updates must share one layout")
        i = self.size
        self.counts[i], self.offsets[i], self.levels[i] = x.counts, x.offsets, x.levels
        self.a[i], self.b[i], self.weights[i] = x.a, x.b, weight
        self.size += 1

    def add_to(self, flat: np.ndarray, at: dict[str, int], tile_blocks: int = TILE_BLOCKS) -> None:
        """flat (float [n]; mutated) += the held updates, tensor `name`'s sum starting at
        flat[at[name]]; the batch is empty afterwards."""
        n = self.size
        if n:
            base, restart = _block_map(self.blocks, self.chunks,
                                       tuple(at[name] for name in self.names))
            kernels.add_joined_levels_batch(
                flat, self.counts[:n], self.offsets[:n].reshape(-1), self.levels[:n].reshape(-1),
                self.a[:n].reshape(-1), self.b[:n].reshape(-1), base, restart, self.chunk,
                self.weights[:n], tile_blocks)
        self.size = 0


@functools.lru_cache(maxsize=64)
def _block_map(blocks: tuple, chunks: tuple, at: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Where each index block of joined tensors starts in the flat sum (tensor t's sum
    starts at at[t]), and at each tensor's first block its first chunk (else -1): int64
    [sum of blocks] each, what kernels.add_joined_levels_batch walks."""
    base = np.concatenate([start + INDEX_BLOCK * np.arange(n, dtype=np.int64)
                           for start, n in zip(at, blocks)])
    restart = np.full(len(base), -1, np.int64)
    restart[np.cumsum((0,) + blocks[:-1])] = np.cumsum((0,) + chunks[:-1])
    return base, restart


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
