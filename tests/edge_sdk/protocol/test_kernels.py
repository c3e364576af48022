"""kernels.py, through the parts that call it: a decoded tensor added into a sum from
its parts equals adding its dense form, a batch of joined updates equals adding each, and
every compiled loop equals its numpy twin."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.protocol import JoinedBatch, kernels
from edge_sdk.protocol.codec import block_map, chunk_sizes
from tests.edge_sdk.protocol.samples import CODECS, SHAPES, decoded_parts, joined_update


@pytest.mark.parametrize("name", sorted(CODECS))
def test_parts_add_themselves_as_their_dense_tensor(name):
    parts, reconstructed = decoded_parts(CODECS[name])
    acc = np.full(parts.size, 0.5, np.float32)
    parts.add_into(acc, 2.5)
    np.testing.assert_allclose(acc, 0.5 + 2.5 * reconstructed.reshape(-1), rtol=1e-5, atol=1e-6)
    exact = float(np.vdot(reconstructed, reconstructed))
    assert parts.squared_norm() == pytest.approx(exact, rel=1e-5)
    largest, bound = parts.norm_bound()  # from the chunk scales: never below the truth
    assert bound >= exact * (1 - 1e-6)
    assert largest >= float(np.abs(reconstructed).max()) * (1 - 1e-6) or largest == 0.0
    half = parts.scaled(0.5)
    assert type(half) is type(parts) and half.squared_norm() == pytest.approx(exact / 4, rel=1e-5)


@pytest.mark.skipif(not kernels.COMPILED, reason="numba is not installed")
def test_compiled_kernels_match_their_numpy_twins():
    rng = np.random.default_rng(0)
    n, chunk = 1000, 64
    levels = rng.integers(0, 256, n).astype(np.uint8)
    a, b = rng.random(16).astype(np.float32), -rng.random(16).astype(np.float32)
    indices = np.sort(rng.choice(5000, n, replace=False))
    for compiled, twin, args in [
        (kernels.add_dense_levels, kernels._add_dense_levels_numpy, (levels, a, b, chunk, 1.7)),
        (
            kernels.add_sparse_levels,
            kernels._add_sparse_levels_numpy,
            (indices, levels, a, b, chunk, 1.7),
        ),
    ]:
        size = 5000 if len(args) == 6 else n
        x, y = np.ones(size, np.float32), np.ones(size, np.float32)
        compiled(x, *args)
        twin(y, *args)
        np.testing.assert_allclose(x, y, rtol=1e-5)
    assert kernels.levels_squared_norm(levels, a, b, chunk) == pytest.approx(
        kernels._levels_squared_norm_numpy(levels, a, b, chunk), rel=1e-6
    )


@pytest.mark.parametrize("tile_blocks", [1, 3, 256])
def test_the_batched_tiled_add_equals_adding_each_update(tile_blocks):
    at, total = {}, 0
    for i, shape in enumerate(SHAPES[::-1]):  # the sums' order need not be the updates'
        at[f"t{len(SHAPES) - 1 - i}"] = total
        total += int(np.prod(shape))
    group, expected = [], np.zeros(total)
    for seed, w in enumerate([1.0, 2.5, 0.3, 4.0]):  # one layout: one fraction, one chunk
        parts, dense_each = joined_update(SHAPES, 0.3, 16, seed)
        group.append((parts, w))
        for name, x in dense_each.items():
            expected[at[name] : at[name] + x.size] += w * x.reshape(-1)
    flat = np.full(total, 0.25, np.float32)
    batch = JoinedBatch(group[0][0], capacity=5)
    for parts, w in group:
        batch.put(parts, w)
    batch.add_to(flat, at, tile_blocks)
    assert batch.size == 0 and not batch.full
    np.testing.assert_allclose(flat, 0.25 + expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not kernels.COMPILED, reason="numba is not installed")
def test_the_compiled_batch_kernel_matches_its_numpy_twin():
    group = [joined_update(SHAPES, 0.2, 32, seed)[0] for seed in range(3)]
    base, restart = block_map(group[0].blocks, group[0].chunks, (0, 1500, 1700, 1701))
    args = (
        np.stack([x.counts for x in group]),
        np.concatenate([x.offsets for x in group]),
        np.concatenate([x.levels for x in group]),
        np.concatenate([x.a for x in group]),
        np.concatenate([x.b for x in group]),
        base,
        restart,
        32,
        np.array([1.0, 0.5, 3.0]),
        2,
    )
    x, y = np.zeros(1701 + 512, np.float32), np.zeros(1701 + 512, np.float32)
    kernels.add_joined_levels_batch(x, *args)
    kernels._add_joined_levels_batch_numpy(y, *args)
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not kernels.COMPILED, reason="numba is not installed")
def test_the_chunked_norm_kernel_matches_its_numpy_twin():
    parts, _ = joined_update(SHAPES, 0.3, 16, 2)
    sizes = chunk_sizes(parts.plan.kept, parts.chunk)
    assert sizes.sum() == len(parts.levels) and len(sizes) == len(parts.a)
    assert kernels.chunked_levels_squared_norm(
        parts.levels, parts.a, parts.b, sizes
    ) == pytest.approx(
        kernels._chunked_levels_squared_norm_numpy(parts.levels, parts.a, parts.b, sizes), rel=1e-9
    )
    top, bound = kernels.chunk_scale_bound(parts.b, sizes)
    assert (top, bound) == pytest.approx(
        kernels._chunk_scale_bound_numpy(parts.b, sizes), rel=1e-12
    )
    assert top == pytest.approx(float(-parts.b.min()))
