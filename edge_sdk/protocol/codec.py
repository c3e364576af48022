"""Per-tensor codecs: optional sparsification, optional rotation, then quantization.

A `CodecSpec` travels in the update header, so the decoder needs no out-of-band config.
Encoding order: select k coordinates (top-k by magnitude, or random-k whose indices come
from a seed and cost nothing on the wire), rotate them (randomized Hadamard), quantize
per chunk, pack bits. Decoding undoes each step; random-k values are rescaled by n/k so
the estimate stays unbiased (Konecny et al. 2016, "Federated learning: strategies for
improving communication efficiency").

Top-k indices travel in one of two fixed-size layouts (`index_coding`):
- "gaps": uint32 LE gaps between sorted indices (the first from 0), 4k bytes;
- "blocks": the n coordinates in blocks of INDEX_BLOCK = 256; per block a uint16 LE count
  of kept coordinates, then per kept coordinate its uint8 offset inside its block,
  increasing within a block: 2 ceil(n / 256) + k bytes. Under a third of the raw bytes
  at the default codec's 1-in-20 density; after zstd, which packs the gaps' zero bytes
  too, a trained keyboard_cifg update is 4% smaller, and zstd has far less to decode.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np

from . import quantization as q
from .errors import BadPayload, MalformedHeader, NonFinite
from .rotation import rotate, rotated_length, unrotate

QUANTIZERS = ("float32", "float16", "int8", "int4", "int2", "int1")
SPARSIFIERS = ("none", "topk", "randk")
INDEX_CODINGS = ("gaps", "blocks")
INDEX_BLOCK = 256


@dataclass(frozen=True)
class CodecSpec:
    """How each tensor of a delta is encoded. Validated when built."""

    quantizer: str = "float32"
    stochastic: bool = True  # unbiased stochastic rounding (else nearest)
    chunk: int = 256  # values per scale
    sparsifier: str = "none"
    fraction: float = 1.0  # kept fraction for top-k / random-k
    rotate: bool = False
    rotation_block: int = 1024
    # how top-k indices are laid out (module docstring); "gaps" is what headers without
    # the field meant, so older devices' updates still decode
    index_coding: str = "gaps"

    def __post_init__(self):
        types = {"quantizer": str, "stochastic": bool, "chunk": int, "sparsifier": str,
                 "fraction": (int, float), "rotate": bool, "rotation_block": int,
                 "index_coding": str}
        for name, kind in types.items():
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{name} must be {kind}, got {value!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.sparsifier not in SPARSIFIERS:
            raise ValueError(f"sparsifier must be one of {SPARSIFIERS}, got {self.sparsifier!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.sparsifier == "none" and self.fraction != 1.0:
            raise ValueError("fraction < 1 needs a sparsifier ('topk' or 'randk')")
        if self.index_coding not in INDEX_CODINGS:
            raise ValueError(f"index_coding must be one of {INDEX_CODINGS}, got {self.index_coding!r}")
        if self.index_coding != "gaps" and self.sparsifier != "topk":
            raise ValueError("index_coding applies to top-k indices: use sparsifier='topk'")
        if not 8 <= self.chunk <= 65536:
            raise ValueError(f"chunk must be in 8..65536, got {self.chunk}")
        block = self.rotation_block
        if block < 2 or block > 65536 or block & (block - 1):
            raise ValueError(f"rotation_block must be a power of two in 2..65536, got {block}")

    @property
    def bits(self) -> int | None:
        return int(self.quantizer[3:]) if self.quantizer.startswith("int") else None

    @property
    def zstd_level(self) -> int:
        """The zstd level a body of this codec goes out at unless the pipeline sets one.
        A top-k int8 body is index bytes, which zstd's matches pack ~3x at any level, and
        8-bit levels, which only Huffman coding shrinks. On trained keyboard_cifg deltas
        that saves 8-10% of the bytes (level -1: 91 instead of 84 KB on average over four
        Shakespeare roles; 1/57 instead of 1/62 of float32 in bench/codec_bench.py) and
        costs half of zstd's decoding time (~120 -> ~60 us; noise deltas ~125 -> ~15 us),
        the largest piece of the server's ingest of an update. Negative levels skip it,
        so top-k int8 goes at -1. For the other codecs level 3 saves more for less:
        20-30% for dense int8 and float values, 18% for random-k levels, 8-14% for packed
        sub-byte levels, at a small decoding gain."""
        return -1 if self.sparsifier == "topk" and self.bits == 8 else 3

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc) -> CodecSpec:
        try:  # every update carries its codec: the few a server sees are built once
            return _codec_from_items(tuple((k, type(v), v) for k, v in doc.items()))
        except (AttributeError, TypeError, ValueError) as e:
            raise MalformedHeader(f"bad codec description: {e}") from None

    # -- sizes ---------------------------------------------------------------------------
    def kept(self, n: int) -> int:
        return n if self.sparsifier == "none" else max(1, int(round(n * self.fraction)))

    def index_size(self, n: int) -> int:
        """Bytes of a top-k tensor's indices."""
        if self.index_coding == "blocks":
            return 2 * -(-n // INDEX_BLOCK) + self.kept(n)
        return 4 * self.kept(n)

    def payload_size(self, n: int) -> int:
        """Exact encoded bytes for a tensor of n values: decoders check it before reading."""
        return _layout(self, n).payload


@functools.lru_cache(maxsize=256)
def _codec_from_items(items: tuple) -> CodecSpec:
    # keyed with each value's type, so True and 1 (equal, same hash) stay apart
    return CodecSpec(**{k: v for k, _, v in items})


@dataclass(frozen=True)
class _Layout:
    """Sizes of one tensor's payload under a codec: k kept values (m after rotation
    padding), index bytes, chunk scales, total bytes; bits for quantized codecs."""

    k: int
    m: int
    index_bytes: int
    chunks: int
    payload: int
    bits: int | None


@functools.lru_cache(maxsize=4096)  # a server sees a few codecs x a model's tensor sizes
def _layout(spec: CodecSpec, n: int) -> _Layout:
    k = spec.kept(n)
    index_bytes = spec.index_size(n) if spec.sparsifier == "topk" else 0
    m = rotated_length(k, spec.rotation_block) if spec.rotate else k
    bits = spec.bits
    if bits is None:
        chunks, values = 0, (4 if spec.quantizer == "float32" else 2) * m
    else:
        chunks = q.num_chunks(m, spec.chunk)
        values = 4 * chunks + q.packed_size(m, bits)
    return _Layout(k, m, index_bytes, chunks, index_bytes + values, bits)


def encode_tensor(x: np.ndarray, spec: CodecSpec, seed: int,
                  rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """x float32 (any shape; not mutated) -> (payload, what the decoder will reconstruct,
    float32 of x's shape). The reconstruction is what error feedback subtracts."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    n, k = flat.size, spec.kept(flat.size)
    parts = []
    if spec.sparsifier == "topk":
        idx = np.sort(np.argpartition(np.abs(flat), n - k)[n - k:])
        parts.append(_encode_indices(idx, n, spec.index_coding))
        values = flat[idx]
    elif spec.sparsifier == "randk":
        idx = _random_indices(seed, n, k)
        values = flat[idx]
    else:
        idx, values = None, flat
    body, decoded_values = _encode_values(values, spec, seed)
    parts.append(body)
    if idx is None:
        decoded = decoded_values
    else:
        decoded = np.zeros(n, np.float32)
        scale = n / k if spec.sparsifier == "randk" else 1.0
        decoded[idx] = decoded_values * scale
    return b"".join(parts), decoded.reshape(x.shape)


@dataclass(frozen=True)
class DecodedTensor:
    """One decoded tensor before it is made dense, so a consumer can fuse dequantization
    and scattering into its own work (the aggregator accumulates straight from levels).

    The dense float32 tensor of `shape` (n values) is zero except at k increasing
    positions (all n when dense), where it holds `multiplier * v`, with v float32 [k] either
    `values` or, for quantized codecs, `levels[j] * a[j // chunk] + b[j // chunk]`
    (levels uint8 [k], a and b float32 [ceil(k / chunk)]). The positions are `indices`
    (int64 [k]) or, as the "blocks" index coding sent them, `block_counts` (uint16, one
    per INDEX_BLOCK coordinates) and `block_offsets` (uint8 [k]); `positions()` gives
    them as int64 either way. Arrays are read-only views.
    """

    shape: tuple[int, ...]
    values: np.ndarray | None = None
    levels: np.ndarray | None = None
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    chunk: int = 0
    indices: np.ndarray | None = None
    multiplier: float = 1.0
    block_counts: np.ndarray | None = None
    block_offsets: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def sparse(self) -> bool:
        return self.indices is not None or self.block_counts is not None

    def positions(self) -> np.ndarray | None:
        """int64 [k] positions of the kept values, or None when dense."""
        if self.block_counts is None:
            return self.indices
        return block_positions(self.block_counts, self.block_offsets)

    def kept_values(self) -> np.ndarray:
        """float32 [k]: the values at `indices` (multiplier applied)."""
        if self.values is not None:
            v = self.values
        else:
            v = q.affine_chunks(self.levels, self.a, self.b, self.chunk)
        return v * np.float32(self.multiplier) if self.multiplier != 1.0 else v

    def to_dense(self) -> np.ndarray:
        v = self.kept_values()
        if not self.sparse:
            return v.reshape(self.shape)
        out = np.zeros(self.size, np.float32)
        out[self.positions()] = v
        return out.reshape(self.shape)


def decode_tensor_parts(payload: bytes, spec: CodecSpec, shape: tuple[int, ...],
                        seed: int) -> DecodedTensor:
    """Validate a tensor's payload and split it into its parts (see DecodedTensor)."""
    n = math.prod(shape)
    layout = _layout(spec, n)
    if len(payload) != layout.payload:
        raise BadPayload(f"tensor payload is {len(payload)} bytes, the codec implies "
                         f"{layout.payload}")
    k = layout.k
    where = {}
    if spec.sparsifier == "topk":
        where = _decode_indices(payload, n, k, spec.index_coding)
    elif spec.sparsifier == "randk":
        where = {"indices": _random_indices(seed, n, k)}
    parts = _decode_values(memoryview(payload)[layout.index_bytes:], spec, layout, seed)
    return DecodedTensor(tuple(shape), multiplier=n / k if spec.sparsifier == "randk" else 1.0,
                         **where, **parts)


def block_positions(counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The "blocks" layout's parts (uint16 count per block, uint8 offset per position) ->
    int64 [k] positions."""
    starts = np.arange(len(counts), dtype=np.int64) * INDEX_BLOCK
    return np.repeat(starts, counts) + offsets


def _encode_indices(idx: np.ndarray, n: int, coding: str) -> bytes:
    """Sorted distinct int indices < n -> their layout on the wire (module docstring)."""
    if coding == "blocks":
        counts = np.bincount(idx // INDEX_BLOCK, minlength=-(-n // INDEX_BLOCK))
        return counts.astype("<u2").tobytes() + (idx % INDEX_BLOCK).astype(np.uint8).tobytes()
    # gaps between sorted indices are small numbers, which zstd packs to ~1 byte each
    return np.diff(idx, prepend=0).astype("<u4").tobytes()


def _decode_indices(payload, n: int, k: int, coding: str) -> dict:
    """DecodedTensor's position fields from a top-k payload, checked: strictly increasing
    and in range, so a consumer can scatter them without further checks."""
    if coding == "gaps":
        gaps = np.frombuffer(payload, "<u4", k).astype(np.int64)
        if np.any(gaps[1:] == 0):
            raise BadPayload("top-k indices must be strictly increasing")
        idx = np.cumsum(gaps)
        if k and idx[-1] >= n:
            raise BadPayload("top-k index out of range")
        return {"indices": idx}
    blocks = -(-n // INDEX_BLOCK)
    counts = np.frombuffer(payload, "<u2", blocks)
    offsets = np.frombuffer(payload, np.uint8, k, 2 * blocks)
    ends = counts.cumsum(dtype=np.int64)
    if ends[-1] != k:
        raise BadPayload(f"top-k block counts add up to {ends[-1]}, the codec keeps {k}")
    # rising[j]: offset j exceeds offset j - 1, or j starts a block (which may start
    # lower); slots 0 and k are the ends, and absorb the starts of empty blocks. A count
    # over a block's coordinates fails here too: its offsets cannot all rise within it.
    rising = np.empty(k + 1, bool)
    rising[0] = rising[k] = True
    np.greater(offsets[1:], offsets[:-1], out=rising[1:k])
    rising[ends[:-1]] = True
    if not rising.all():
        raise BadPayload("top-k offsets must be strictly increasing within a block")
    if counts[-1] and offsets[-1] >= n - INDEX_BLOCK * (blocks - 1):  # the last block's size
        raise BadPayload("top-k index out of range")
    return {"block_counts": counts, "block_offsets": offsets}


def _encode_values(values, spec: CodecSpec, seed: int):
    n = len(values)
    v = rotate(values, seed, spec.rotation_block) if spec.rotate else values
    if spec.quantizer == "float32":
        out, deq = v.astype("<f4").tobytes(), v
    elif spec.quantizer == "float16":
        half = v.astype("<f2")
        out, deq = half.tobytes(), half.astype(np.float32)
    else:
        rng = np.random.default_rng([seed, 0x51])  # rounding draws, reproducible per seed
        idx, scales = q.quantize_chunks(v, spec.bits, spec.chunk, spec.stochastic, rng)
        out = scales.astype("<f4").tobytes() + q.pack_bits(idx, spec.bits)
        deq = q.dequantize_chunks(idx, scales, spec.bits, spec.chunk, spec.stochastic)
    if spec.rotate:
        deq = unrotate(deq, seed, spec.rotation_block, n)
    return out, deq.astype(np.float32)


def _decode_values(data, spec: CodecSpec, layout: _Layout, seed: int) -> dict:
    """The value parts of a DecodedTensor: {"values"} or {"levels", "a", "b", "chunk"}."""
    k, m, chunks, bits = layout.k, layout.m, layout.chunks, layout.bits
    if bits is None:
        v = np.frombuffer(data, "<f4" if spec.quantizer == "float32" else "<f2", m).astype(np.float32)
        return {"values": unrotate(v, seed, spec.rotation_block, k) if spec.rotate else v}
    scales = np.frombuffer(data, "<f4", chunks)
    if not scales.min() >= 0 or not np.isfinite(scales.max()):  # NaN fails the first
        if not np.isfinite(scales).all():
            raise NonFinite("a chunk scale is NaN or Inf")
        raise BadPayload("chunk scales must be non-negative")
    if bits == 8:
        levels = np.frombuffer(data, np.uint8, m, 4 * chunks)
    else:
        levels = q.unpack_bits(data[4 * chunks:], bits, m)
        if np.any(levels >= q.levels(bits)):
            raise BadPayload("quantized level out of range")
    a, b = q.chunk_affine(scales, bits, spec.stochastic)
    if spec.rotate:  # the rotation mixes chunks: only the dense values can be unrotated
        v = q.affine_chunks(levels, a, b, spec.chunk)
        return {"values": unrotate(v, seed, spec.rotation_block, k)}
    return {"levels": levels, "a": a, "b": b, "chunk": spec.chunk}


def _random_indices(seed: int, n: int, k: int) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, 0x7A]).choice(n, size=k, replace=False))


def tensor_seed(message_seed: int, index: int) -> int:
    """Each tensor's seed (random-k mask, rotation signs, rounding), from the message's."""
    return (message_seed * 1_000_003 + index) % 2**63
