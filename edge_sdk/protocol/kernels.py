"""Compiled inner loops that walk the codecs' layouts (codec.py, body.py) for the
aggregator's hot path: adding a quantized (and possibly sparse) tensor into a float32
running sum straight from its levels, with no dense float32 copy in between, and its
norms. DecodedTensor and JoinedParts call them; they import this module on first use, so
a device never loads numba.

numba compiles them when it is installed (it is, with the `server` extra); otherwise the
same maths runs as numpy expressions, slower but identical within float32 rounding.
Each loop is written so LLVM can vectorize it: one chunk at a time with its coefficients
hoisted, no division in the inner loop.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - exercised by the numpy twins' tests
    numba = None

__all__ = [
    "COMPILED",
    "TILE_BLOCKS",
    "add_dense_levels",
    "add_joined_levels_batch",
    "add_sparse_levels",
    "chunk_scale_bound",
    "chunked_levels_squared_norm",
    "levels_squared_norm",
]

COMPILED = numba is not None
TILE_BLOCKS = 256  # 256 x 256 float32 coordinates: a 256 KB tile of the sum, well inside L2


def _add_dense_levels_numpy(acc, levels, a, b, chunk, w):
    n = len(levels)
    c = np.arange(n) // chunk
    acc += (levels * a[c] + b[c]) * np.float32(w)


def _add_sparse_levels_numpy(acc, indices, levels, a, b, chunk, w):
    c = np.arange(len(levels)) // chunk
    acc[indices] += (levels * a[c] + b[c]) * np.float32(w)


def _add_joined_levels_batch_numpy(
    acc, counts, offsets, levels, a, b, block_base, chunk_restart, chunk, w, tile_blocks
):
    n_updates, n_blocks = counts.shape
    k_each, c_each = len(offsets) // n_updates, len(a) // n_updates
    firsts = np.flatnonzero(chunk_restart >= 0)  # each tensor's first block
    for u in range(n_updates):
        j = u * k_each
        for lo, hi in zip(firsts, np.append(firsts[1:], n_blocks)):
            kept = int(counts[u, lo:hi].sum())
            where = np.repeat(block_base[lo:hi], counts[u, lo:hi]) + offsets[j : j + kept]
            c = u * c_each + chunk_restart[lo] + np.arange(kept) // chunk
            acc[where] += (levels[j : j + kept] * a[c] + b[c]) * np.float32(w[u])
            j += kept


def _levels_squared_norm_numpy(levels, a, b, chunk):
    c = np.arange(len(levels)) // chunk
    v = (levels * a[c] + b[c]).astype(np.float64)
    return float(np.dot(v, v))


def _chunked_levels_squared_norm_numpy(levels, a, b, sizes):
    c = np.repeat(np.arange(len(sizes)), sizes)
    v = levels * a[c].astype(np.float64) + b[c].astype(np.float64)
    return float(np.dot(v, v))


def _chunk_scale_bound_numpy(b, sizes):
    s = np.abs(b.astype(np.float64))
    return (float(s.max()) if len(s) else 0.0), float(np.dot(sizes, s * s))


if COMPILED:
    _jit = numba.njit(cache=True, fastmath=True, boundscheck=False, nogil=True)

    @_jit
    def _axpb_into(acc, levels, s, o):  # acc += s * levels + o over one chunk
        for j in range(levels.shape[0]):
            acc[j] += s * np.float32(levels[j]) + o

    @_jit
    def _add_dense_levels(acc, levels, a, b, chunk, w):
        n = levels.shape[0]
        for c in range(a.shape[0]):
            lo = c * chunk
            hi = min(n, lo + chunk)
            _axpb_into(acc[lo:hi], levels[lo:hi], np.float32(w * a[c]), np.float32(w * b[c]))

    @_jit
    def _add_sparse_levels(acc, indices, levels, a, b, chunk, w):
        n = levels.shape[0]
        for c in range(a.shape[0]):
            s = np.float32(w * a[c])
            o = np.float32(w * b[c])
            for j in range(c * chunk, min(n, (c + 1) * chunk)):
                # unsigned: no negative-index wraparound check (indices are validated)
                acc[np.uint64(indices[j])] += s * np.float32(levels[j]) + o

    @_jit
    def _add_joined_levels_batch(
        acc, counts, offsets, levels, a, b, block_base, chunk_restart, chunk, w, tile_blocks
    ):
        # U updates of one layout at once, one tile of blocks at a time: each tile of the
        # sum is read and written once per batch instead of once per update, which is what
        # a sparse add costs when the sum does not fit in cache (at 5% density most cache
        # lines hold a kept value). Block i's coordinates start at acc[block_base[i]]; at a
        # tensor's first block chunk_restart gives its first chunk (each tensor's values
        # are chunked on their own), elsewhere -1. Chunks advance with a counter, and the
        # innermost loop runs over values of one block and one chunk with no branch.
        # Indices into acc, offsets and levels are unsigned: numba then skips its
        # negative-index wraparound, a large share of this loop's time.
        n_updates, n_blocks = counts.shape
        k_each = offsets.shape[0] // n_updates
        c_each = a.shape[0] // n_updates
        j = np.arange(n_updates).astype(np.uint64) * np.uint64(k_each)  # each update's next value
        c = np.arange(n_updates) * c_each  # and its chunk (index into a, b)
        left = np.zeros(n_updates, np.int64)  # values left in that chunk
        for t0 in range(0, n_blocks, tile_blocks):
            t1 = min(n_blocks, t0 + tile_blocks)
            for u in range(n_updates):
                ju, cu, lu = j[u], c[u], left[u]
                wu = w[u]
                s = np.float32(wu * a[cu])
                o = np.float32(wu * b[cu])
                for block in range(t0, t1):
                    if chunk_restart[block] >= 0:
                        cu = u * c_each + chunk_restart[block]
                        lu = chunk
                        s = np.float32(wu * a[cu])
                        o = np.float32(wu * b[cu])
                    base = np.uint64(block_base[block])
                    count = np.int64(counts[u, block])
                    while count > 0:
                        if lu == 0:
                            cu += 1
                            lu = chunk
                            s = np.float32(wu * a[cu])
                            o = np.float32(wu * b[cu])
                        m = min(count, lu)
                        for i in range(m):
                            k = ju + np.uint64(i)
                            acc[base + np.uint64(offsets[k])] += s * np.float32(levels[k]) + o
                        ju += np.uint64(m)
                        lu -= m
                        count -= m
                j[u], c[u], left[u] = ju, cu, lu

    @_jit
    def _chunk_squared_norm(levels, lo, hi, a, b):
        # sum over levels[lo:hi] of (l a + b)^2 = a^2 sum l^2 + 2 a b sum l + m b^2, float64,
        # the sums of levels exact in int64
        s1 = 0
        s2 = 0
        for j in range(lo, hi):
            v = np.int64(levels[j])
            s1 += v
            s2 += v * v
        ac = np.float64(a)
        bc = np.float64(b)
        return ac * ac * s2 + 2.0 * ac * bc * s1 + (hi - lo) * bc * bc

    @_jit
    def _levels_squared_norm(levels, a, b, chunk):
        n = levels.shape[0]
        total = 0.0
        for c in range(a.shape[0]):
            total += _chunk_squared_norm(levels, c * chunk, min(n, (c + 1) * chunk), a[c], b[c])
        return total

    @_jit
    def _chunked_levels_squared_norm(levels, a, b, sizes):
        # chunk c holds sizes[c] values (the joined tensors of an update: each tensor's
        # last chunk may be short)
        total = 0.0
        lo = 0
        for c in range(sizes.shape[0]):
            total += _chunk_squared_norm(levels, lo, lo + sizes[c], a[c], b[c])
            lo += sizes[c]
        return total

    @_jit
    def _chunk_scale_bound(b, sizes):
        # (the largest chunk scale, sum over chunks of values x scale^2), float64: b is
        # -scale per chunk, so an update's values are bounded without reading a level
        top = 0.0
        total = 0.0
        for c in range(b.shape[0]):
            s = abs(np.float64(b[c]))
            top = max(top, s)
            total += sizes[c] * s * s
        return top, total

    add_dense_levels, add_sparse_levels, add_joined_levels_batch, levels_squared_norm = (
        _add_dense_levels,
        _add_sparse_levels,
        _add_joined_levels_batch,
        _levels_squared_norm,
    )
    chunked_levels_squared_norm = _chunked_levels_squared_norm
    chunk_scale_bound = _chunk_scale_bound
else:  # pragma: no cover
    add_dense_levels, add_sparse_levels, add_joined_levels_batch, levels_squared_norm = (
        _add_dense_levels_numpy,
        _add_sparse_levels_numpy,
        _add_joined_levels_batch_numpy,
        _levels_squared_norm_numpy,
    )
    chunked_levels_squared_norm = _chunked_levels_squared_norm_numpy
    chunk_scale_bound = _chunk_scale_bound_numpy
