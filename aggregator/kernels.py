"""Compiled inner loops for the aggregator's hot path: adding a quantized (and possibly
sparse) tensor into a float32 running sum straight from its levels, with no dense
float32 copy in between.

numba compiles them when it is installed (it is, with the `server` extra); otherwise the
same maths runs as numpy expressions, slower but identical within float32 rounding.
Each loop is written so LLVM can vectorize it: one chunk at a time with its coefficients
hoisted, no division in the inner loop.
"""
from __future__ import annotations

import numpy as np

from edge_sdk.protocol import INDEX_BLOCK, block_positions

try:
    import numba
except ImportError:  # pragma: no cover - exercised by the numpy twins' tests
    numba = None

__all__ = ["COMPILED", "add_block_sparse_levels_batch", "add_dense_levels", "add_sparse_levels",
           "levels_squared_norm"]

COMPILED = numba is not None


def _add_dense_levels_numpy(acc, levels, a, b, chunk, w):
    n = len(levels)
    c = np.arange(n) // chunk
    acc += (levels * a[c] + b[c]) * np.float32(w)


def _add_sparse_levels_numpy(acc, indices, levels, a, b, chunk, w):
    c = np.arange(len(levels)) // chunk
    acc[indices] += (levels * a[c] + b[c]) * np.float32(w)


def _add_block_sparse_levels_batch_numpy(acc, counts, offsets, levels, a, b, starts,
                                         chunk_starts, chunk, w, tile_blocks):
    for u in range(counts.shape[0]):
        v, c = slice(starts[u], starts[u + 1]), slice(chunk_starts[u], chunk_starts[u + 1])
        _add_sparse_levels_numpy(acc, block_positions(counts[u], offsets[v]), levels[v], a[c],
                                 b[c], chunk, w[u])


def _levels_squared_norm_numpy(levels, a, b, chunk):
    c = np.arange(len(levels)) // chunk
    v = (levels * a[c] + b[c]).astype(np.float64)
    return float(np.dot(v, v))


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
                acc[indices[j]] += s * np.float32(levels[j]) + o

    @_jit
    def _add_block_sparse_levels_batch(acc, counts, offsets, levels, a, b, starts, chunk_starts,
                                       chunk, w, tile_blocks):
        # B updates at once, one tile of the sum at a time: each tile is read and written
        # once per batch instead of once per update, which is what a sparse add costs when
        # the sum does not fit in cache (at 5% density most cache lines hold a kept value).
        # Positions come as (count per block, offset in block); each update's chunk
        # coefficients step with a counter rather than a division per value.
        n_updates, n_blocks = counts.shape
        j = starts[:-1].copy()  # each update's next value
        c = chunk_starts[:-1].copy()  # and its chunk (index into a, b)
        left = np.full(n_updates, chunk, np.int64)  # values left in that chunk
        for t0 in range(0, n_blocks, tile_blocks):
            t1 = min(n_blocks, t0 + tile_blocks)
            for u in range(n_updates):
                ju, cu, lu = j[u], c[u], left[u]
                s = np.float32(w[u] * a[cu])
                o = np.float32(w[u] * b[cu])
                for block in range(t0, t1):
                    base = block * INDEX_BLOCK
                    for _ in range(counts[u, block]):
                        if lu == 0:
                            cu += 1
                            lu = chunk
                            s = np.float32(w[u] * a[cu])
                            o = np.float32(w[u] * b[cu])
                        acc[base + offsets[ju]] += s * np.float32(levels[ju]) + o
                        ju += 1
                        lu -= 1
                j[u], c[u], left[u] = ju, cu, lu

    @_jit
    def _levels_squared_norm(levels, a, b, chunk):
        # per chunk: sum (l a + b)^2 = a^2 sum l^2 + 2 a b sum l + m b^2, sums exact in int
        n = levels.shape[0]
        total = 0.0
        for c in range(a.shape[0]):
            lo = c * chunk
            hi = min(n, lo + chunk)
            s1 = 0
            s2 = 0
            for j in range(lo, hi):
                v = np.int64(levels[j])
                s1 += v
                s2 += v * v
            ac = np.float64(a[c])
            bc = np.float64(b[c])
            total += ac * ac * s2 + 2.0 * ac * bc * s1 + (hi - lo) * bc * bc
        return total

    add_dense_levels, add_sparse_levels, add_block_sparse_levels_batch, levels_squared_norm = \
        _add_dense_levels, _add_sparse_levels, _add_block_sparse_levels_batch, _levels_squared_norm
else:  # pragma: no cover
    add_dense_levels, add_sparse_levels, add_block_sparse_levels_batch, levels_squared_norm = \
        _add_dense_levels_numpy, _add_sparse_levels_numpy, _add_block_sparse_levels_batch_numpy, \
        _levels_squared_norm_numpy
