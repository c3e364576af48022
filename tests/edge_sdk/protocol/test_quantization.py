from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_sdk.protocol import quantization as q
from edge_sdk.protocol.rotation import rotate, unrotate

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
vectors = arrays(np.float32, st.integers(1, 700), elements=finite)


def _step(x, bits, chunk):
    scales = np.abs(q._pad(x, chunk).reshape(-1, chunk)).max(1)
    return np.repeat(2 * scales / (q.levels(bits) - 1), chunk)[: len(x)]


@settings(max_examples=60, deadline=None)
@given(vectors, st.sampled_from([2, 4, 8]), st.sampled_from([8, 64, 256]))
def test_dequantize_error_at_most_half_step_with_nearest_rounding(x, bits, chunk):
    idx, scales = q.quantize_chunks(x, bits, chunk, False, None)
    err = np.abs(q.dequantize_chunks(idx, scales, bits, chunk, False) - x)
    assert np.all(err <= _step(x, bits, chunk) / 2 * (1 + 1e-5) + 1e-6)


@settings(max_examples=60, deadline=None)
@given(vectors, st.sampled_from([1, 2, 4, 8]), st.sampled_from([8, 256]), st.integers(0, 2**32))
def test_dequantize_error_below_one_step_with_stochastic_rounding(x, bits, chunk, seed):
    idx, scales = q.quantize_chunks(x, bits, chunk, True, np.random.default_rng(seed))
    err = np.abs(q.dequantize_chunks(idx, scales, bits, chunk, True) - x)
    assert np.all(err <= _step(x, bits, chunk) * (1 + 1e-5) + 1e-6)


@settings(max_examples=15, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 40), elements=st.floats(-10, 10, width=32)),
    st.sampled_from([1, 2, 4]),
)
def test_stochastic_rounding_is_unbiased(x, bits):
    rng = np.random.default_rng(0)
    draws = 4000
    total = np.zeros_like(x, dtype=np.float64)
    for _ in range(draws):
        idx, scales = q.quantize_chunks(x, bits, 64, True, rng)
        total += q.dequantize_chunks(idx, scales, bits, 64, True)
    step = _step(x, bits, 64)
    # the mean of n draws errs by at most ~step/sqrt(n) times a few standard deviations
    assert np.all(np.abs(total / draws - x) <= 5 * step / np.sqrt(draws) + 1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=300), st.sampled_from([1, 2, 4, 8]))
def test_pack_unpack_round_trip(values, bits):
    idx = (np.array(values) % (2**bits)).astype(np.uint8)
    packed = q.pack_bits(idx, bits)
    assert len(packed) == q.packed_size(len(idx), bits)
    np.testing.assert_array_equal(q.unpack_bits(packed, bits, len(idx)), idx)


@settings(max_examples=40, deadline=None)
@given(vectors, st.integers(0, 2**40), st.sampled_from([2, 64, 1024]))
def test_rotation_is_orthogonal_and_invertible(x, seed, block):
    y = rotate(x, seed, block)
    np.testing.assert_allclose(np.linalg.norm(y), np.linalg.norm(x), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(unrotate(y, seed, block, len(x)), x, rtol=1e-4, atol=1e-2)
