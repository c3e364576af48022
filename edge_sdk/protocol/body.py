"""An update body's tensors, decoded together.

A body holds each tensor's payload in parameter order (codec.py has one payload's layout).
Block-coded top-k int8 bodies (the default codec's) are decoded as one `JoinedParts`:
every tensor's counts, offsets, levels and scales joined into four arrays, checked with a
fixed number of numpy calls per update (tensor by tensor costs about twenty per tensor),
and handed on as they are, so a consumer can add a whole update, or a batch of them, in one
pass. Other codecs are decoded tensor by tensor.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import quantization as q
from .codec import (INDEX_BLOCK, CodecSpec, DecodedTensor, _layout, decode_tensor_parts,
                    tensor_seed)
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
        return DecodedTensor(self.shapes[i], levels=self.levels[p.value_lo[i]:p.value_hi[i]],
                             a=self.a[p.chunk_lo[i]:p.chunk_hi[i]],
                             b=self.b[p.chunk_lo[i]:p.chunk_hi[i]], chunk=self.chunk,
                             multiplier=self.multiplier,
                             block_counts=self.counts[p.block_lo[i]:p.block_hi[i]],
                             block_offsets=self.offsets[p.value_lo[i]:p.value_hi[i]])

    def __getitem__(self, name) -> DecodedTensor:
        try:
            return self.tensor(self.names.index(name))
        except ValueError:
            raise KeyError(name) from None

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


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
            out[name] = tensor = decode_tensor_parts(raw[offset:offset + size], spec, shape,
                                                     tensor_seed(message_seed, i))
            # quantized levels are finite once their scales are; plain values are checked
            if tensor.values is not None and not np.all(np.isfinite(tensor.values)):
                raise NonFinite(f"tensor {name!r} contains NaN or Inf")
            offset += size
        return out
    return _decode_joined(raw, spec, plan, tuple(name for name, _ in specs), shapes)


def _decode_joined(raw, spec: CodecSpec, plan: _BodyPlan, names: tuple,
                   shapes: tuple) -> JoinedParts:
    u8 = np.frombuffer(raw, np.uint8)  # each part joined as bytes, then viewed as its type
    counts = np.concatenate([u8[at:at + 2 * b]
                             for b, at in zip(plan.blocks, plan.counts_at)]).view("<u2")
    offsets = np.concatenate([u8[at:at + k] for k, at in zip(plan.kept, plan.offsets_at)])
    scales = np.concatenate([u8[at:at + 4 * c]
                             for c, at in zip(plan.chunks, plan.scales_at)]).view("<f4")
    ends = counts.cumsum(dtype=np.int64)
    tensor_ends = ends[plan.last_block]
    kept = tensor_ends.copy()  # per tensor: its blocks' counts added up
    kept[1:] -= tensor_ends[:-1]
    if (kept != plan.k).any():
        i = int(np.flatnonzero(kept != plan.k)[0])
        raise BadPayload(f"top-k block counts add up to {kept[i]}, the codec keeps {plan.k[i]}")
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
    if any(counts[block] and offsets[end - 1] >= size for block, end, size
           in zip(plan.last_blocks, tensor_ends.tolist(), plan.last_sizes)):
        raise BadPayload("top-k index out of range")
    if not scales.min() >= 0 or not np.isfinite(scales.max()):  # NaN fails the first
        raise BadPayload("chunk scales must be finite and non-negative")
    levels = np.concatenate([u8[at:at + k] for k, at in zip(plan.kept, plan.levels_at)])
    a, b = q.chunk_affine(scales, 8, spec.stochastic)
    return JoinedParts(names, shapes, counts, offsets, levels, a, b, spec.chunk, plan)


@dataclass(frozen=True)
class _BodyPlan:
    """Where each tensor's parts sit in a block-coded int8 body (byte offsets), the bounds
    of its parts in the joined arrays, and the per-tensor sizes the joined checks compare
    against."""
    kept: tuple              # kept values per tensor
    blocks: tuple            # index blocks per tensor
    chunks: tuple            # scale chunks per tensor
    counts_at: tuple
    offsets_at: tuple
    scales_at: tuple
    levels_at: tuple
    block_lo: tuple
    block_hi: tuple
    value_lo: tuple
    value_hi: tuple
    chunk_lo: tuple
    chunk_hi: tuple
    k: np.ndarray            # `kept` as an array
    last_block: np.ndarray   # each tensor's last block, in the joined counts
    last_blocks: tuple       # the same as ints
    last_sizes: tuple        # coordinates in that block


@functools.lru_cache(maxsize=64)  # a few codecs x models per server
def _body_plan(spec: CodecSpec, shapes: tuple) -> _BodyPlan | None:
    joined = (spec.sparsifier == "topk" and spec.index_coding == "blocks" and spec.bits == 8
              and not spec.rotate and shapes and all(math.prod(s) >= 1 for s in shapes))
    if not joined:
        return None
    kept, blocks, chunks, at = [], [], [], [[], [], [], []]
    offset = 0
    for shape in shapes:
        n = math.prod(shape)
        layout = _layout(spec, n)
        b = -(-n // INDEX_BLOCK)
        for where, start in zip(at, (offset, offset + 2 * b, offset + 2 * b + layout.k,
                                     offset + 2 * b + layout.k + 4 * layout.chunks)):
            where.append(start)
        kept.append(layout.k)
        blocks.append(b)
        chunks.append(layout.chunks)
        offset += layout.payload

    def bounds(sizes):
        ends = np.cumsum([0] + sizes).tolist()
        return tuple(ends[:-1]), tuple(ends[1:])
    last_blocks = np.cumsum(blocks) - 1
    last_sizes = [math.prod(s) - INDEX_BLOCK * (b - 1) for s, b in zip(shapes, blocks)]
    return _BodyPlan(tuple(kept), tuple(blocks), tuple(chunks), *map(tuple, at),
                     *bounds(blocks), *bounds(kept), *bounds(chunks), np.array(kept, np.int64),
                     last_blocks, tuple(last_blocks.tolist()), tuple(last_sizes))

