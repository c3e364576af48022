"""numerics.py on decoded parts: the running sum, norms, scaling and the norm bound give
what they give on the dense tensors, without making the parts dense (the kernels
themselves: tests/edge_sdk/protocol/test_kernels.py)."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator import numerics
from aggregator.numerics import RunningSum, add_scaled, dense, global_norm, scaled, squared_norm
from edge_sdk.protocol import JoinedBatch, JoinedParts
from tests.edge_sdk.protocol.samples import CODECS, SHAPES, decoded_parts, joined_update


@pytest.mark.parametrize("name", sorted(CODECS))
def test_adding_parts_equals_adding_the_dense_tensor(name):
    parts, reconstructed = decoded_parts(CODECS[name])
    np.testing.assert_array_equal(dense(parts), reconstructed)
    acc = np.full(parts.shape, 0.5, np.float32)
    add_scaled(acc, parts, 2.5)
    np.testing.assert_allclose(acc, 0.5 + 2.5 * reconstructed, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_norm_and_scaling_of_parts_match_the_dense_tensor(name):
    parts, reconstructed = decoded_parts(CODECS[name])
    assert squared_norm(parts) == pytest.approx(
        float(np.vdot(reconstructed, reconstructed)), rel=1e-5
    )
    half = scaled(parts, 0.5)
    assert type(half) is type(parts)  # still parts: nothing was made dense
    np.testing.assert_allclose(dense(half), 0.5 * reconstructed, rtol=1e-6, atol=1e-8)
    assert global_norm({"a": half, "b": reconstructed}) == pytest.approx(
        np.sqrt(1.25 * np.vdot(reconstructed, reconstructed)), rel=1e-5
    )


def test_running_sum_of_parts_equals_the_float64_weighted_mean():
    total = RunningSum()
    expected = np.zeros((37, 51))
    for seed, w in enumerate([1.0, 3.0, 0.5, 7.0]):
        parts, reconstructed = decoded_parts(CODECS["topk-int8" if seed % 2 else "int8"], seed=seed)
        total.add({"w": parts}, w)
        expected += w * reconstructed.astype(np.float64)
    np.testing.assert_allclose(total.mean()["w"], expected / 11.5, rtol=1e-5, atol=1e-7)


def test_joined_parts_are_their_tensors_and_scale_as_a_whole():
    parts, dense_each = joined_update(SHAPES, 0.3, 64, 7)
    assert list(parts) == list(dense_each) and len(parts) == len(SHAPES)
    for name, x in dense_each.items():
        np.testing.assert_array_equal(dense(parts[name]), x)
    half = numerics.scaled_delta(parts, 0.5)
    assert isinstance(half, JoinedParts) and half.layout == parts.layout
    for name, x in dense_each.items():
        np.testing.assert_allclose(dense(half[name]), 0.5 * x, rtol=1e-6, atol=1e-8)
    assert global_norm(half) == pytest.approx(
        0.5 * np.sqrt(sum(float(np.vdot(x, x)) for x in dense_each.values())), rel=1e-5
    )
    with pytest.raises(KeyError):
        parts["nope"]


def test_running_sum_holds_joined_updates_back_and_counts_them_all():
    # more than two batches plus a remainder; joined updates of two layouts (chunk sizes),
    # mixed with the same tensors sent in other codecs; half of them scaled as a whole, as
    # the coordinator discounts stale deltas; sums and mean include what is still held back
    total = RunningSum()
    expected = {f"t{i}": np.zeros(shape) for i, shape in enumerate(SHAPES)}
    weights = np.random.default_rng(0).uniform(0.1, 5.0, 2 * RunningSum.BATCH + 5)
    for i, w in enumerate(weights):
        if i % 5 == 4:
            delta = {
                name: decoded_parts(CODECS["topk-int8" if i % 2 else "int8"], x.shape, seed=i)
                for name, x in expected.items()
            }
            dense_each = {name: rec for name, (_, rec) in delta.items()}
            delta = {name: parts for name, (parts, _) in delta.items()}
        else:
            delta, dense_each = joined_update(SHAPES, 0.05, 64 if i % 3 else 256, i)
        factor = 0.5 if i % 2 else 1.0
        total.add(numerics.scaled_delta(delta, factor), float(w))
        for name, x in dense_each.items():
            expected[name] += factor * w * x
        if i == 3:  # held back so far, yet visible
            np.testing.assert_allclose(total.sums["t0"], expected["t0"], rtol=1e-5, atol=1e-6)
    assert total.count == len(weights)
    mean = total.mean()
    for name in expected:
        np.testing.assert_allclose(mean[name], expected[name] / weights.sum(), rtol=1e-5, atol=1e-7)


def test_running_sum_bounds_the_bytes_it_holds_back(monkeypatch):
    parts, dense_each = joined_update(SHAPES, 0.4, 64, 0)
    per_update = JoinedBatch.bytes_per_update(parts)
    monkeypatch.setattr(RunningSum, "BATCH_BYTES", 3 * per_update + 1)
    total = RunningSum()
    for _ in range(7):
        total.add(parts, 1.0)
        assert total._held.size <= 3 and len(total._held.weights) == 3
    for name, x in dense_each.items():
        np.testing.assert_allclose(total.sums[name], 7 * x, rtol=1e-5, atol=1e-6)


def test_running_sum_refuses_an_update_of_other_tensors():
    total = RunningSum()
    parts, _ = joined_update(SHAPES, 0.05, 64, 0)
    total.add(parts, 1.0)
    other, _ = joined_update(SHAPES[:2], 0.05, 64, 1)
    with pytest.raises(ValueError, match="differ from the first update"):
        total.add(other, 1.0)
    with pytest.raises(ValueError, match="differ from the first update"):
        total.add({"t0": np.zeros(SHAPES[0], np.float32)}, 1.0)
    batch = JoinedBatch(parts, capacity=2)
    with pytest.raises(ValueError, match="share one layout"):  # its kernel trusts the layout
        batch.put(joined_update(SHAPES, 0.1, 64, 2)[0], 1.0)


# -- the norm bound: exact where it decides, never dense on the joined path ---------------------
def _dense_norm(dense_each) -> float:
    return float(
        np.sqrt(
            sum(
                np.dot(x.reshape(-1).astype(np.float64), x.reshape(-1)) for x in dense_each.values()
            )
        )
    )


@pytest.mark.parametrize("chunk", [8, 16, 64])
def test_norm_over_equals_the_dense_norm_on_either_side_of_the_bound(chunk):
    for seed in range(4):
        parts, dense_each = joined_update(SHAPES, 0.3, chunk, seed)
        norm = _dense_norm(dense_each)
        assert numerics.global_norm(parts) == pytest.approx(norm, rel=1e-6)
        # bounds far above, just above (the cheap bound exceeds them: the exact pass
        # decides), just below and far below the norm
        for bound, over in [
            (10 * norm, False),
            (norm * 1.001, False),
            (norm * 0.999, True),
            (norm / 10, True),
        ]:
            got = numerics.norm_over(parts, bound)
            assert (got is not None) is over, (bound, norm)
            if over:
                assert got == pytest.approx(norm, rel=1e-6) or got > bound
        half = numerics.scaled_delta(parts, 0.5)
        assert numerics.norm_over(half, norm * 0.6) is None
        assert numerics.norm_over(half, norm * 0.4) == pytest.approx(norm / 2, rel=1e-6)


def test_norm_over_holds_every_chunk_scale_to_the_bound():
    parts, _ = joined_update(SHAPES, 0.3, 16, 1)
    # a crafted update: one huge, finite scale over middle levels, which decode to ~0
    b = parts.b.copy()
    b[2] = -np.float32(3e38)
    levels = parts.levels.copy()
    levels[:] = 127
    crafted = JoinedParts(
        parts.names,
        parts.shapes,
        parts.counts,
        parts.offsets,
        levels,
        parts.a,
        b,
        parts.chunk,
        parts.plan,
    )
    assert numerics.norm_over(crafted, 100.0) == pytest.approx(3e38, rel=1e-6)
    # the same over the other paths: per-tensor parts and dense arrays
    tensors = {name: crafted[name] for name in crafted}
    assert numerics.norm_over(tensors, 100.0) == pytest.approx(3e38, rel=1e-6)
    big = {"w": np.full(1000, 1e38, np.float32)}  # its float32 sum of squares overflows
    assert numerics.norm_over(big, 100.0) == pytest.approx(1e38 * np.sqrt(1000), rel=1e-6)
    assert numerics.norm_over({"w": np.full(4, 0.5, np.float32)}, 1.0) is None


@pytest.mark.parametrize("name", sorted(CODECS))
def test_norm_over_of_any_codecs_parts_equals_the_dense_norm(name):
    parts, reconstructed = decoded_parts(CODECS[name], shape=(37, 51))
    other, reconstructed_other = decoded_parts(CODECS[name], shape=(300,), seed=4)
    delta = {"a": parts, "b": other}
    norm = _dense_norm({"a": reconstructed, "b": reconstructed_other})
    for bound, over in [(10 * norm, False), (norm * 1.001, False), (norm * 0.999, True)]:
        got = numerics.norm_over(delta, bound)
        assert (got is not None) is over, (bound, norm)
        if over:
            assert got == pytest.approx(norm, rel=1e-5)
