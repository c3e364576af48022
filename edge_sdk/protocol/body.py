"""An update body's tensors, decoded together.

A body holds each tensor's payload in parameter order (codec.py has one payload's layout).
Block-coded top-k int8 bodies (the default codec's) are decoded as one `JoinedParts`:
every tensor's counts, offsets, levels and scales joined into four arrays, checked with a
fixed number of numpy calls per update (tensor by tensor costs about twenty per tensor),
and handed on as they are, so a consumer can add a whole update, or a batch of them, in one
pass (`JoinedBatch`). Other codecs are decoded tensor by tensor.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from . import quantization as q
from .codec import (
    INDEX_BLOCK,
    INDEX_CODINGS,
    LEVEL_REACH_SQUARED,
    CodecSpec,
    DecodedTensor,
    _layout,
    block_map,
    chunk_sizes,
    decode_tensor_parts,
    tensor_seed,
)
from .errors import BadPayload, NonFinite


@dataclass(frozen=True, eq=False)
class JoinedParts(Mapping):
    """The tensors of one block-coded int8 update, as a Mapping name -> DecodedTensor
    (views of the arrays below, made on access), with every tensor's parts joined in
    parameter order:

    counts  uint16 [sum of blocks]: kept coordinates per INDEX_BLOCK-coordinate block
    offsets uint8 [K]: each kept coordinate's offset in its block, rising within a block
    levels  uint8 [K]: its quantized level
    a, b    float32 [sum of chunks]: a level l of chunk c means l * a[c] + b[c]

    Each tensor's values are chunked on their own (`chunks` per tensor, `chunk` values
    each), and the dense update is `multiplier` times the decoded values. Arrays are
    owned by this object (the decompressed body is not kept) and must not be mutated.
    """

    names: tuple
    shapes: tuple
    counts: np.ndarray
    offsets: np.ndarray
    levels: np.ndarray
    a: np.ndarray
    b: np.ndarray
    chunk: int
    plan: _BodyPlan = field(repr=False)
    multiplier: float = 1.0

    @property
    def blocks(self) -> tuple:
        """Index blocks per tensor."""
        return self.plan.blocks

    @property
    def chunks(self) -> tuple:
        """Scale chunks per tensor."""
        return self.plan.chunks

    @property
    def layout(self) -> tuple:
        """Equal for updates whose arrays line up element for element."""
        return self.names, self.shapes, self.chunk, self.plan.kept

    def tensor(self, i: int) -> DecodedTensor:
        p = self.plan
        return DecodedTensor(
            self.shapes[i],
            levels=self.levels[p.value_lo[i] : p.value_hi[i]],
            a=self.a[p.chunk_lo[i] : p.chunk_hi[i]],
            b=self.b[p.chunk_lo[i] : p.chunk_hi[i]],
            chunk=self.chunk,
            multiplier=self.multiplier,
            block_counts=self.counts[p.block_lo[i] : p.block_hi[i]],
            block_offsets=self.offsets[p.value_lo[i] : p.value_hi[i]],
        )

    def __getitem__(self, name) -> DecodedTensor:
        try:
            return self.tensor(self.names.index(name))
        except ValueError:
            raise KeyError(name) from None

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    # -- what a consumer fuses into its own pass, over all tensors at once ---------------
    def scaled(self, factor: float) -> JoinedParts:
        """This update times `factor`, still joined (the factor joins the multiplier)."""
        return replace(self, multiplier=self.multiplier * factor)

    def squared_norm(self) -> float:
        """sum of (l a_c + b_c)^2 over every kept value, float64, in one pass over the
        joined levels, times the multiplier squared."""
        from . import kernels  # numba, on servers only: loaded at first use

        sizes = chunk_sizes(self.plan.kept, self.chunk)
        return (
            kernels.chunked_levels_squared_norm(self.levels, self.a, self.b, sizes)
            * self.multiplier**2
        )

    def norm_bound(self) -> tuple[float, float]:
        """(the largest magnitude a value may have, an upper bound of squared_norm()),
        from one pass over the chunk scales (b is -scale of each chunk), no level read."""
        from . import kernels

        m = abs(self.multiplier)
        scale, bound = kernels.chunk_scale_bound(self.b, chunk_sizes(self.plan.kept, self.chunk))
        return scale * m, bound * LEVEL_REACH_SQUARED * m * m


class JoinedBatch:
    """Up to `capacity` JoinedParts updates of one layout, copied as they arrive (while
    they are still in cache) into arrays laid out for kernels.add_joined_levels_batch, so
    adding the batch copies nothing more; `bytes_per_update` says what each holds."""

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

    def add_to(self, flat: np.ndarray, at: dict[str, int], tile_blocks: int | None = None) -> None:
        """flat (float32 [n]; mutated) += the held updates, tensor `name`'s sum starting
        at flat[at[name]]; the batch is empty afterwards."""
        from . import kernels

        n = self.size
        if n:
            base, restart = block_map(
                self.blocks, self.chunks, tuple(at[name] for name in self.names)
            )
            kernels.add_joined_levels_batch(
                flat,
                self.counts[:n],
                self.offsets[:n].reshape(-1),
                self.levels[:n].reshape(-1),
                self.a[:n].reshape(-1),
                self.b[:n].reshape(-1),
                base,
                restart,
                self.chunk,
                self.weights[:n],
                tile_blocks or kernels.TILE_BLOCKS,
            )
        self.size = 0


def decode_body(raw, spec: CodecSpec, specs: tuple, message_seed: int) -> Mapping:
    """The tensors of a decompressed body (payloads back to back, exactly their sizes), as
    name -> DecodedTensor; every tensor is validated (layout, scales, finiteness) before
    any is returned. `specs` are (name, shape) pairs in parameter order."""
    shapes = tuple(shape for _, shape in specs)
    plan = _body_plan(spec, shapes)
    if plan is None:
        out, offset = {}, 0
        for i, (name, shape) in enumerate(specs):
            size = _layout(spec, math.prod(shape)).payload
            out[name] = tensor = decode_tensor_parts(
                raw[offset : offset + size], spec, shape, tensor_seed(message_seed, i)
            )
            # quantized levels are finite once their scales are; plain values are checked
            if tensor.values is not None and not np.all(np.isfinite(tensor.values)):
                raise NonFinite(f"tensor {name!r} contains NaN or Inf")
            offset += size
        return out
    return _decode_joined(raw, spec, plan, tuple(name for name, _ in specs), shapes)


def _decode_joined(
    raw, spec: CodecSpec, plan: _BodyPlan, names: tuple, shapes: tuple
) -> JoinedParts:
    # one copy gathers every tensor's parts kind by kind (scales first, so each kind
    # starts aligned for its type), then each kind is a view of it
    u8 = np.frombuffer(raw, np.uint8)
    joined = np.concatenate([u8[part] for part in plan.gather])
    scales = joined[: plan.scales_end].view("<f4")
    counts = joined[plan.scales_end : plan.counts_end].view("<u2")
    offsets = joined[plan.counts_end : plan.offsets_end]
    levels = joined[plan.offsets_end :]
    ends = np.add.accumulate(counts, dtype=np.int64)
    tensor_ends = ends[plan.last_block]
    if (tensor_ends != plan.kept_ends).any():  # per tensor, its blocks' counts add up to k
        i = int(np.flatnonzero(tensor_ends != plan.kept_ends)[0])
        got = int(tensor_ends[i]) - (int(tensor_ends[i - 1]) if i else 0)
        raise BadPayload(f"top-k block counts add up to {got}, the codec keeps {plan.kept[i]}")
    # rising[j]: offset j exceeds offset j - 1, or j starts a block (which may start
    # lower); slots 0 and K are the ends, and absorb the starts of empty blocks. A count
    # over a block's coordinates fails here too: its offsets cannot all rise within it.
    total = len(offsets)
    rising = np.empty(total + 1, bool)
    rising[0] = rising[total] = True
    np.greater(offsets[1:], offsets[:-1], out=rising[1:total])
    rising[ends[:-1]] = True  # block (and so tensor) starts
    if not rising.all():
        raise BadPayload("top-k offsets must be strictly increasing within a block")
    # a tensor's last block may be partial: its last offset (when it holds any) must fit
    if any(
        counts[block] and offsets[end - 1] >= size
        for block, end, size in zip(plan.last_blocks, plan.kept_ends_list, plan.last_sizes)
    ):
        raise BadPayload("top-k index out of range")
    # finite and non-negative floats are exactly those whose bits, read as unsigned, are
    # below +inf's; -0.0 (sign bit set) is the one other valid scale, so only a failure
    # of the one-pass check pays for the exact one (NaN fails its first comparison)
    if scales.view("<u4").max() >= 0x7F800000:
        if not np.isfinite(scales).all():
            raise NonFinite("a chunk scale is NaN or Inf")
        if not scales.min() >= 0:
            raise BadPayload("chunk scales must be non-negative")
    a, b = q.chunk_affine(scales, 8, spec.stochastic)
    return JoinedParts(names, shapes, counts, offsets, levels, a, b, spec.chunk, plan)


@dataclass(frozen=True)
class _BodyPlan:
    """Where each tensor's parts sit in a block-coded int8 body, the bounds of its parts
    in the joined arrays, and the per-tensor sizes the joined checks compare against."""

    kept: tuple  # kept values per tensor
    blocks: tuple  # index blocks per tensor
    chunks: tuple  # scale chunks per tensor
    gather: tuple  # every part's slice of the body: all scales, counts, offsets, levels
    scales_end: int  # where each kind ends in the gathered bytes
    counts_end: int
    offsets_end: int
    block_lo: tuple
    block_hi: tuple
    value_lo: tuple
    value_hi: tuple
    chunk_lo: tuple
    chunk_hi: tuple
    kept_ends: np.ndarray  # int64: cumulative kept values at each tensor's end
    kept_ends_list: tuple  # the same as ints
    last_block: np.ndarray  # each tensor's last block, in the joined counts
    last_blocks: tuple  # the same as ints
    last_sizes: tuple  # coordinates in that block


@functools.lru_cache(maxsize=64)  # a few codecs x models per server
def _body_plan(spec: CodecSpec, shapes: tuple) -> _BodyPlan | None:
    # the index coding says whether its tensors can be joined; the kernels take 8-bit levels
    joined = (
        INDEX_CODINGS[spec.index_coding].joinable
        and spec.bits == 8
        and not spec.rotate
        and shapes
        and all(math.prod(s) >= 1 for s in shapes)
    )
    if not joined:
        return None
    kept, blocks, chunks = [], [], []
    scales, counts, offsets, levels = [], [], [], []  # each tensor's slice of the body
    at = 0
    for shape in shapes:  # a tensor's payload: counts | offsets | scales | levels
        n = math.prod(shape)
        layout = _layout(spec, n)
        b = -(-n // INDEX_BLOCK)
        starts = np.cumsum([at, 2 * b, layout.k, 4 * layout.chunks, layout.k]).tolist()
        for kind, lo, hi in zip((counts, offsets, scales, levels), starts, starts[1:]):
            kind.append(slice(lo, hi))
        kept.append(layout.k)
        blocks.append(b)
        chunks.append(layout.chunks)
        at += layout.payload

    def bounds(sizes):
        ends = np.cumsum([0] + sizes).tolist()
        return tuple(ends[:-1]), tuple(ends[1:])

    scales_end = 4 * sum(chunks)
    counts_end = scales_end + 2 * sum(blocks)
    kept_ends = np.cumsum(kept)
    last_blocks = np.cumsum(blocks) - 1
    last_sizes = [math.prod(s) - INDEX_BLOCK * (b - 1) for s, b in zip(shapes, blocks)]
    return _BodyPlan(
        tuple(kept),
        tuple(blocks),
        tuple(chunks),
        tuple(scales + counts + offsets + levels),
        scales_end,
        counts_end,
        counts_end + sum(kept),
        *bounds(blocks),
        *bounds(kept),
        *bounds(chunks),
        kept_ends,
        tuple(kept_ends.tolist()),
        last_blocks,
        tuple(last_blocks.tolist()),
        tuple(last_sizes),
    )
