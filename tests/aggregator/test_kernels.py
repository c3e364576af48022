"""The fused accumulation path equals decoding to dense arrays and adding them."""
from __future__ import annotations

import numpy as np
import pytest

from aggregator import kernels
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
    counts = np.bincount(indices // INDEX_BLOCK, minlength=-(-5000 // INDEX_BLOCK)).astype(np.uint16)
    offsets = (indices % INDEX_BLOCK).astype(np.uint8)
    for compiled, twin, args in [
            (kernels.add_dense_levels, kernels._add_dense_levels_numpy, (levels, a, b, chunk, 1.7)),
            (kernels.add_sparse_levels, kernels._add_sparse_levels_numpy,
             (indices, levels, a, b, chunk, 1.7)),
            (kernels.add_block_sparse_levels, kernels._add_block_sparse_levels_numpy,
             (counts, offsets, levels, a, b, chunk, 1.7))]:
        size = n if len(args) == 5 else 5000
        x, y = np.ones(size, np.float32), np.ones(size, np.float32)
        compiled(x, *args)
        twin(y, *args)
        np.testing.assert_allclose(x, y, rtol=1e-5)
    assert kernels.levels_squared_norm(levels, a, b, chunk) == pytest.approx(
        kernels._levels_squared_norm_numpy(levels, a, b, chunk), rel=1e-6)
