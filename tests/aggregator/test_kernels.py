"""The fused accumulation path equals decoding to dense arrays and adding them."""
from __future__ import annotations

import numpy as np
import pytest

from aggregator import kernels, numerics
from aggregator.numerics import RunningSum, add_scaled, dense, global_norm, scaled, squared_norm
from edge_sdk.protocol import INDEX_BLOCK, CodecSpec
from edge_sdk.protocol.codec import decode_tensor_parts, encode_tensor

CODECS = {
    "float32": CodecSpec(),
    "float16": CodecSpec("float16"),
    "int8": CodecSpec("int8"),
    "int4": CodecSpec("int4", chunk=64),
    "int1-sign": CodecSpec("int1", stochastic=False),
    "int8+rotation": CodecSpec("int8", rotate=True),
    "topk-int8": CodecSpec("int8", sparsifier="topk", fraction=0.05),
    "topk-int8-blocks": CodecSpec("int8", sparsifier="topk", fraction=0.05, index_coding="blocks"),
    "topk-float16-blocks": CodecSpec("float16", sparsifier="topk", fraction=0.3,
                                     index_coding="blocks"),
    "topk-int8-blocks-chunk8": CodecSpec("int8", sparsifier="topk", fraction=0.4, chunk=8,
                                         index_coding="blocks"),
    "randk-float16": CodecSpec("float16", sparsifier="randk", fraction=0.1),
    "topk-int2": CodecSpec("int2", sparsifier="topk", fraction=0.2, chunk=32),
}


def _parts(spec: CodecSpec, shape=(37, 51), seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, shape).astype(np.float32)
    payload, reconstructed = encode_tensor(x, spec, seed, rng)
    return decode_tensor_parts(payload, spec, shape, seed), reconstructed


@pytest.mark.parametrize("name", sorted(CODECS))
def test_adding_parts_equals_adding_the_dense_tensor(name):
    parts, reconstructed = _parts(CODECS[name])
    np.testing.assert_array_equal(dense(parts), reconstructed)
    acc = np.full(parts.shape, 0.5, np.float32)
    add_scaled(acc, parts, 2.5)
    np.testing.assert_allclose(acc, 0.5 + 2.5 * reconstructed, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_norm_and_scaling_of_parts_match_the_dense_tensor(name):
    parts, reconstructed = _parts(CODECS[name])
    assert squared_norm(parts) == pytest.approx(float(np.vdot(reconstructed, reconstructed)), rel=1e-5)
    half = scaled(parts, 0.5)
    assert type(half) is type(parts)  # still parts: nothing was made dense
    np.testing.assert_allclose(dense(half), 0.5 * reconstructed, rtol=1e-6, atol=1e-8)
    assert global_norm({"a": half, "b": reconstructed}) == pytest.approx(
        np.sqrt(1.25 * np.vdot(reconstructed, reconstructed)), rel=1e-5)


def test_running_sum_of_parts_equals_the_float64_weighted_mean():
    total = RunningSum()
    expected = np.zeros((37, 51))
    for seed, w in enumerate([1.0, 3.0, 0.5, 7.0]):
        parts, reconstructed = _parts(CODECS["topk-int8" if seed % 2 else "int8"], seed=seed)
        total.add({"w": parts}, w)
        expected += w * reconstructed.astype(np.float64)
    np.testing.assert_allclose(total.mean()["w"], expected / 11.5, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not kernels.COMPILED, reason="numba is not installed")
def test_compiled_kernels_match_their_numpy_twins():
    rng = np.random.default_rng(0)
    n, chunk = 1000, 64
    levels = rng.integers(0, 256, n).astype(np.uint8)
    a, b = rng.random(16).astype(np.float32), -rng.random(16).astype(np.float32)
    indices = np.sort(rng.choice(5000, n, replace=False))
    for compiled, twin, args in [
            (kernels.add_dense_levels, kernels._add_dense_levels_numpy, (levels, a, b, chunk, 1.7)),
            (kernels.add_sparse_levels, kernels._add_sparse_levels_numpy,
             (indices, levels, a, b, chunk, 1.7))]:
        size = 5000 if len(args) == 6 else n
        x, y = np.ones(size, np.float32), np.ones(size, np.float32)
        compiled(x, *args)
        twin(y, *args)
        np.testing.assert_allclose(x, y, rtol=1e-5)
    assert kernels.levels_squared_norm(levels, a, b, chunk) == pytest.approx(
        kernels._levels_squared_norm_numpy(levels, a, b, chunk), rel=1e-6)


def _block_parts(n: int, fraction: float, chunk: int, seed: int):
    spec = CodecSpec("int8", sparsifier="topk", fraction=fraction, chunk=chunk, index_coding="blocks")
    return _parts(spec, shape=(n,), seed=seed)


@pytest.mark.parametrize("tile_blocks", [1, 3, 256])
def test_the_batched_tiled_add_equals_adding_each_update(tile_blocks):
    n, group, expected = 5 * INDEX_BLOCK + 77, [], np.zeros(5 * INDEX_BLOCK + 77)
    for seed, (fraction, w) in enumerate([(0.05, 1.0), (0.4, 2.5), (0.9, 0.3), (0.01, 4.0)]):
        parts, reconstructed = _block_parts(n, fraction, 16, seed)
        group.append((parts, w))
        expected += w * reconstructed
    acc = np.full(n, 0.25, np.float32)
    numerics.add_block_sparse_batch(acc, group, tile_blocks)
    np.testing.assert_allclose(acc, 0.25 + expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not kernels.COMPILED, reason="numba is not installed")
def test_the_compiled_batch_kernel_matches_its_numpy_twin():
    n = 7 * INDEX_BLOCK + 5
    group = [_block_parts(n, f, 32, seed)[0] for seed, f in enumerate([0.1, 0.5, 0.02])]
    args = (np.stack([x.block_counts for x in group]), np.concatenate([x.block_offsets for x in group]),
            np.concatenate([x.levels for x in group]), np.concatenate([x.a for x in group]),
            np.concatenate([x.b for x in group]), np.cumsum([0] + [len(x.levels) for x in group]),
            np.cumsum([0] + [len(x.a) for x in group]), 32, np.array([1.0, 0.5, 3.0]), 2)
    x, y = np.zeros(n, np.float32), np.zeros(n, np.float32)
    kernels.add_block_sparse_levels_batch(x, *args)
    kernels._add_block_sparse_levels_batch_numpy(y, *args)
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_running_sum_holds_block_coded_updates_back_and_counts_them_all():
    # more than two batches plus a remainder, block-coded tensors mixed with other codecs
    # and two chunk sizes; the mean and the sums include what is still held back
    total = RunningSum()
    n = 3 * INDEX_BLOCK + 10
    expected = {"a": np.zeros(n), "b": np.zeros((37, 51))}
    weights = np.random.default_rng(0).uniform(0.1, 5.0, 2 * RunningSum.BATCH + 5)
    for i, w in enumerate(weights):
        a, a_rec = _block_parts(n, 0.05, 64 if i % 3 else 256, i)
        b, b_rec = _parts(CODECS["topk-int8" if i % 2 else "int8"], seed=i)
        total.add({"a": a, "b": b}, float(w))
        expected["a"] += w * a_rec
        expected["b"] += w * b_rec
        if i == 3:  # held back so far, yet visible
            np.testing.assert_allclose(total.sums["a"], expected["a"], rtol=1e-5, atol=1e-6)
    assert total.count == len(weights)
    mean = total.mean()
    for name in expected:
        np.testing.assert_allclose(mean[name], expected[name] / weights.sum(), rtol=1e-5, atol=1e-7)
