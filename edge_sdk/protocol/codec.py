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
  increasing within a block: 2 ceil(n / 256) + k bytes, fewer than the gaps' at the
  default codec's density; after zstd, which packs the gaps' zero bytes too, the update
  is still smaller, and zstd has far less to decode (docs/benchmarks.md).

Each field names an entry of one registry (QUANTIZERS, SPARSIFIERS, INDEX_CODINGS): a
new codec is one entry there; sizes, encoding and decoding all ask the entry.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import quantization as q
from .errors import BadPayload, MalformedHeader, NonFinite
from .rotation import rotate, rotated_length, unrotate

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
        types = {
            "quantizer": str,
            "stochastic": bool,
            "chunk": int,
            "sparsifier": str,
            "fraction": (int, float),
            "rotate": bool,
            "rotation_block": int,
            "index_coding": str,
        }
        for name, kind in types.items():
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{name} must be {kind}, got {value!r}")
        for name, registry in (
            ("quantizer", QUANTIZERS),
            ("sparsifier", SPARSIFIERS),
            ("index_coding", INDEX_CODINGS),
        ):
            if getattr(self, name) not in registry:
                raise ValueError(
                    f"{name} must be one of {tuple(registry)}, got {getattr(self, name)!r}"
                )
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.sparsifier == "none" and self.fraction != 1.0:
            raise ValueError("fraction < 1 needs a sparsifier ('topk' or 'randk')")
        if self.index_coding != "gaps" and self.sparsifier != "topk":
            raise ValueError("index_coding applies to top-k indices: use sparsifier='topk'")
        if not 8 <= self.chunk <= 65536:
            raise ValueError(f"chunk must be in 8..65536, got {self.chunk}")
        block = self.rotation_block
        if block < 2 or block > 65536 or block & (block - 1):
            raise ValueError(f"rotation_block must be a power of two in 2..65536, got {block}")

    @property
    def bits(self) -> int | None:
        """Bits per quantized level; None for float values."""
        return QUANTIZERS[self.quantizer].bits

    @property
    def zstd_level(self) -> int:
        """The zstd level a body of this codec goes out at unless the pipeline sets one.
        A top-k int8 body is index bytes, which zstd's matches pack at any level, and
        8-bit levels, which only Huffman coding shrinks: Huffman coding saves a few
        bytes there but costs much of zstd's decoding time, the largest piece of the
        server's ingest of an update. Negative levels skip it, so top-k int8 goes at -1.
        For the other codecs level 3 saves more for less. Figures: docs/benchmarks.md
        (bench/codec_bench.py, bench/aggregator_bench.py)."""
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
        return SPARSIFIERS[self.sparsifier].kept(n, self.fraction)

    def index_size(self, n: int) -> int:
        """Bytes of a top-k tensor's indices."""
        return INDEX_CODINGS[self.index_coding].size(n, self.kept(n))

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
    index_bytes = SPARSIFIERS[spec.sparsifier].index_bytes(spec, n, k)
    m = rotated_length(k, spec.rotation_block) if spec.rotate else k
    quantizer = QUANTIZERS[spec.quantizer]
    chunks, values = quantizer.sizes(m, spec.chunk)
    return _Layout(k, m, index_bytes, chunks, index_bytes + values, quantizer.bits)


def encode_tensor(
    x: np.ndarray, spec: CodecSpec, seed: int, rng: np.random.Generator
) -> tuple[bytes, np.ndarray]:
    """x float32 (any shape; not mutated) -> (payload, what the decoder will reconstruct,
    float32 of x's shape). The reconstruction is what error feedback subtracts."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    n, k = flat.size, spec.kept(flat.size)
    sparsifier = SPARSIFIERS[spec.sparsifier]
    idx = sparsifier.select(flat, k, seed)
    positions = sparsifier.encode_positions(idx, n, spec)
    body, decoded_values = _encode_values(flat if idx is None else flat[idx], spec, seed)
    if idx is None:
        decoded = decoded_values
    else:
        decoded = np.zeros(n, np.float32)
        decoded[idx] = decoded_values * sparsifier.multiplier(n, k)
    return positions + body, decoded.reshape(x.shape)


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

    # -- what a consumer fuses into its own pass (the aggregator's sum and norm checks) --
    def scaled(self, factor: float) -> DecodedTensor:
        """This tensor times `factor`, still as parts (the factor joins the multiplier)."""
        return replace(self, multiplier=self.multiplier * factor)

    def add_into(self, flat: np.ndarray, weight: float) -> None:
        """flat (float32 [n]; mutated) += weight * this tensor, straight from its parts."""
        from . import kernels  # numba, on servers only: loaded at the first add

        w = weight * self.multiplier
        if self.levels is None:
            if not self.sparse:
                flat += self.values * np.float32(w)
            else:
                flat[self.positions()] += self.values * np.float32(w)
        elif not self.sparse:
            kernels.add_dense_levels(flat, self.levels, self.a, self.b, self.chunk, w)
        elif self.block_counts is not None:  # a batch of one update of one tensor
            base, restart = block_map((len(self.block_counts),), (len(self.a),), (0,))
            kernels.add_joined_levels_batch(
                flat,
                self.block_counts[None],
                self.block_offsets,
                self.levels,
                self.a,
                self.b,
                base,
                restart,
                self.chunk,
                np.array([w]),
                kernels.TILE_BLOCKS,
            )
        else:
            kernels.add_sparse_levels(
                flat, self.indices, self.levels, self.a, self.b, self.chunk, w
            )

    def squared_norm(self) -> float:
        """The dense tensor's squared L2 norm, float64."""
        if self.levels is None:
            return squared_norm(self.values) * self.multiplier**2
        from . import kernels

        return (
            kernels.levels_squared_norm(self.levels, self.a, self.b, self.chunk)
            * self.multiplier**2
        )

    def norm_bound(self) -> tuple[float, float]:
        """(the largest magnitude a value may have, an upper bound of squared_norm()),
        read from the chunk scales alone for quantized parts (exact for plain values)."""
        if self.levels is None:
            return 0.0, self.squared_norm()
        from . import kernels

        m = abs(self.multiplier)
        scale, bound = kernels.chunk_scale_bound(
            self.b, chunk_sizes((len(self.levels),), self.chunk)
        )
        return scale * m, bound * LEVEL_REACH_SQUARED * m * m


# a chunk of scale s decodes level l to l a - s with a = 2s / (levels - 1): at most
# s (256 / 254) in magnitude (8 bits, level 255, which no encoder sends; fewer bits are
# checked below their level count), the margin covers float32 rounding of a
LEVEL_REACH_SQUARED = (256 / 254) ** 2 * (1 + 1e-5)


def squared_norm(v: np.ndarray) -> float:
    """The squared L2 norm, float64 (a float32 sum that overflows is redone in float64)."""
    total = float(np.vdot(v, v))
    if not math.isfinite(total):
        flat = v.reshape(-1).astype(np.float64)
        total = float(np.dot(flat, flat))
    return total


@functools.lru_cache(maxsize=64)
def chunk_sizes(kept: tuple, chunk: int) -> np.ndarray:
    """int64 [sum of chunks]: values in each chunk of tensors that keep `kept` values
    each (each tensor's values are chunked on their own, so its last chunk may be
    short). Cached: do not mutate."""
    sizes = []
    for k in kept:
        full, rest = divmod(k, chunk)
        sizes += [chunk] * full + ([rest] if rest else [])
    return np.array(sizes, np.int64)


@functools.lru_cache(maxsize=64)
def block_map(blocks: tuple, chunks: tuple, at: tuple) -> tuple[np.ndarray, np.ndarray]:
    """For block-coded tensors joined in turn (`blocks` index blocks and `chunks` scale
    chunks each): where each index block starts in a flat sum in which tensor t starts at
    at[t], and at each tensor's first block its first chunk (else -1): int64 [sum of
    blocks] each, what kernels.add_joined_levels_batch walks. Cached: do not mutate."""
    base = np.concatenate(
        [start + INDEX_BLOCK * np.arange(n, dtype=np.int64) for start, n in zip(at, blocks)]
    )
    restart = np.full(len(base), -1, np.int64)
    restart[np.cumsum((0,) + blocks[:-1])] = np.cumsum((0,) + chunks[:-1])
    return base, restart


def decode_tensor_parts(
    payload: bytes, spec: CodecSpec, shape: tuple[int, ...], seed: int
) -> DecodedTensor:
    """Validate a tensor's payload and split it into its parts (see DecodedTensor)."""
    n = math.prod(shape)
    layout = _layout(spec, n)
    if len(payload) != layout.payload:
        raise BadPayload(
            f"tensor payload is {len(payload)} bytes, the codec implies {layout.payload}"
        )
    sparsifier = SPARSIFIERS[spec.sparsifier]
    where = sparsifier.decode_positions(payload, n, layout.k, spec, seed)
    parts = _decode_values(memoryview(payload)[layout.index_bytes :], spec, layout, seed)
    return DecodedTensor(
        tuple(shape), multiplier=sparsifier.multiplier(n, layout.k), **where, **parts
    )


def block_positions(counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The "blocks" layout's parts (uint16 count per block, uint8 offset per position) ->
    int64 [k] positions."""
    starts = np.arange(len(counts), dtype=np.int64) * INDEX_BLOCK
    return np.repeat(starts, counts) + offsets


# -- the registries: one entry per way of choosing, laying out and quantizing values ------
# An index coding lays out sorted distinct positions < n (module docstring): `size` bytes,
# `encode` them, `decode` DecodedTensor's position fields, checked strictly increasing and
# in range so a consumer can scatter them without further checks. `joinable`: a body of
# such tensors can be decoded as one JoinedParts (body.py).
class _Gaps:
    joinable = False

    @staticmethod
    def size(n: int, k: int) -> int:
        return 4 * k

    @staticmethod
    def encode(idx: np.ndarray, n: int) -> bytes:
        # gaps between sorted indices are small numbers, which zstd packs to ~1 byte each
        return np.diff(idx, prepend=0).astype("<u4").tobytes()

    @staticmethod
    def decode(payload, n: int, k: int) -> dict:
        gaps = np.frombuffer(payload, "<u4", k).astype(np.int64)
        if np.any(gaps[1:] == 0):
            raise BadPayload("top-k indices must be strictly increasing")
        idx = np.cumsum(gaps)
        if k and idx[-1] >= n:
            raise BadPayload("top-k index out of range")
        return {"indices": idx}


class _Blocks:
    joinable = True

    @staticmethod
    def size(n: int, k: int) -> int:
        return 2 * -(-n // INDEX_BLOCK) + k

    @staticmethod
    def encode(idx: np.ndarray, n: int) -> bytes:
        counts = np.bincount(idx // INDEX_BLOCK, minlength=-(-n // INDEX_BLOCK))
        return counts.astype("<u2").tobytes() + (idx % INDEX_BLOCK).astype(np.uint8).tobytes()

    @staticmethod
    def decode(payload, n: int, k: int) -> dict:
        return _decode_blocks(payload, n, k)


INDEX_CODINGS = {"gaps": _Gaps(), "blocks": _Blocks()}


# A sparsifier chooses the k kept positions of n: `select` them (None: all, in order),
# lay them out (`encode_positions`, `index_bytes` of them), find them again
# (`decode_positions`: DecodedTensor's position fields), and scale the kept values by
# `multiplier` so the estimate stays unbiased.
class _Dense:
    @staticmethod
    def kept(n: int, fraction: float) -> int:
        return n

    def index_bytes(self, spec: CodecSpec, n: int, k: int) -> int:
        return 0

    def select(self, flat: np.ndarray, k: int, seed: int) -> np.ndarray | None:
        return None

    def encode_positions(self, idx, n: int, spec: CodecSpec) -> bytes:
        return b""

    def decode_positions(self, payload, n: int, k: int, spec: CodecSpec, seed: int) -> dict:
        return {}

    def multiplier(self, n: int, k: int) -> float:
        return 1.0


class _TopK(_Dense):
    """The k largest magnitudes; their positions travel in the spec's index coding."""

    @staticmethod
    def kept(n: int, fraction: float) -> int:
        return max(1, int(round(n * fraction)))

    def index_bytes(self, spec: CodecSpec, n: int, k: int) -> int:
        return INDEX_CODINGS[spec.index_coding].size(n, k)

    def select(self, flat: np.ndarray, k: int, seed: int) -> np.ndarray:
        n = flat.size
        return np.sort(np.argpartition(np.abs(flat), n - k)[n - k :])

    def encode_positions(self, idx, n: int, spec: CodecSpec) -> bytes:
        return INDEX_CODINGS[spec.index_coding].encode(idx, n)

    def decode_positions(self, payload, n: int, k: int, spec: CodecSpec, seed: int) -> dict:
        return INDEX_CODINGS[spec.index_coding].decode(payload, n, k)


class _RandomK(_Dense):
    """k positions drawn from the seed: nothing on the wire; values rescaled by n / k."""

    kept = staticmethod(_TopK.kept)

    def select(self, flat: np.ndarray, k: int, seed: int) -> np.ndarray:
        return _random_indices(seed, flat.size, k)

    def decode_positions(self, payload, n: int, k: int, spec: CodecSpec, seed: int) -> dict:
        return {"indices": _random_indices(seed, n, k)}

    def multiplier(self, n: int, k: int) -> float:
        return n / k


SPARSIFIERS = {"none": _Dense(), "topk": _TopK(), "randk": _RandomK()}


# A quantizer turns m (rotated) kept values into bytes: `sizes` -> (scale chunks, bytes),
# `encode` -> (bytes, what the decoder reconstructs), `decode` -> DecodedTensor's value
# fields, {"values"} or {"levels", "a", "b", "chunk"}.
@dataclass(frozen=True)
class _Floats:
    dtype: str
    bits = None

    def sizes(self, m: int, chunk: int) -> tuple[int, int]:
        return 0, np.dtype(self.dtype).itemsize * m

    def encode(self, v: np.ndarray, spec: CodecSpec, seed: int):
        wire = v.astype(self.dtype)
        return wire.tobytes(), wire.astype(np.float32, copy=False)

    def decode(self, data, spec: CodecSpec, layout: _Layout) -> dict:
        return {"values": np.frombuffer(data, self.dtype, layout.m).astype(np.float32)}


@dataclass(frozen=True)
class _Levels:
    """Per-chunk scales (float32 LE), then levels of `bits` bits (quantization.py)."""

    bits: int

    def sizes(self, m: int, chunk: int) -> tuple[int, int]:
        chunks = q.num_chunks(m, chunk)
        return chunks, 4 * chunks + q.packed_size(m, self.bits)

    def encode(self, v: np.ndarray, spec: CodecSpec, seed: int):
        rng = np.random.default_rng([seed, 0x51])  # rounding draws, reproducible per seed
        idx, scales = q.quantize_chunks(v, self.bits, spec.chunk, spec.stochastic, rng)
        out = scales.astype("<f4").tobytes() + q.pack_bits(idx, self.bits)
        return out, q.dequantize_chunks(idx, scales, self.bits, spec.chunk, spec.stochastic)

    def decode(self, data, spec: CodecSpec, layout: _Layout) -> dict:
        m, chunks, bits = layout.m, layout.chunks, self.bits
        scales = np.frombuffer(data, "<f4", chunks)
        if not scales.min() >= 0 or not np.isfinite(scales.max()):  # NaN fails the first
            if not np.isfinite(scales).all():
                raise NonFinite("a chunk scale is NaN or Inf")
            raise BadPayload("chunk scales must be non-negative")
        if bits == 8:
            levels = np.frombuffer(data, np.uint8, m, 4 * chunks)
        else:
            levels = q.unpack_bits(data[4 * chunks :], bits, m)
            if np.any(levels >= q.levels(bits)):
                raise BadPayload("quantized level out of range")
        a, b = q.chunk_affine(scales, bits, spec.stochastic)
        return {"levels": levels, "a": a, "b": b, "chunk": spec.chunk}


QUANTIZERS = {
    "float32": _Floats("<f4"),
    "float16": _Floats("<f2"),
    "int8": _Levels(8),
    "int4": _Levels(4),
    "int2": _Levels(2),
    "int1": _Levels(1),
}


def _decode_blocks(payload, n: int, k: int) -> dict:
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
    out, deq = QUANTIZERS[spec.quantizer].encode(v, spec, seed)
    if spec.rotate:
        deq = unrotate(deq, seed, spec.rotation_block, n)
    return out, deq.astype(np.float32)


def _decode_values(data, spec: CodecSpec, layout: _Layout, seed: int) -> dict:
    """The value parts of a DecodedTensor: {"values"} or {"levels", "a", "b", "chunk"}."""
    parts = QUANTIZERS[spec.quantizer].decode(data, spec, layout)
    if not spec.rotate:
        return parts
    # the rotation mixes chunks: only the dense values can be unrotated
    v = (
        parts["values"]
        if "values" in parts
        else q.affine_chunks(parts["levels"], parts["a"], parts["b"], spec.chunk)
    )
    return {"values": unrotate(v, seed, spec.rotation_block, layout.k)}


def _random_indices(seed: int, n: int, k: int) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, 0x7A]).choice(n, size=k, replace=False))


def tensor_seed(message_seed: int, index: int) -> int:
    """Each tensor's seed (random-k mask, rotation signs, rounding), from the message's."""
    return (message_seed * 1_000_003 + index) % 2**63
