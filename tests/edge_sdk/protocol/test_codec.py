"""codec.py: the top-k index layouts, "gaps" (uint32 gaps) and "blocks" (a count per 256
coordinates, a byte per kept coordinate), which carry any increasing index set exactly,
the decoder refusing every malformed block layout before anything is scattered; and the
registries, where a codec is one entry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.protocol import INDEX_BLOCK, BadPayload, CodecSpec, DecodedTensor, MalformedHeader
from edge_sdk.protocol.codec import (
    INDEX_CODINGS,
    QUANTIZERS,
    SPARSIFIERS,
    decode_tensor_parts,
    encode_tensor,
)


@st.composite
def index_sets(draw):
    n = draw(st.integers(1, 3 * INDEX_BLOCK + 17))
    chosen = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=min(n, 400)))
    return n, np.array(sorted(chosen), np.int64)


@settings(max_examples=200, deadline=None)
@given(index_sets(), st.sampled_from(["gaps", "blocks"]))
def test_any_increasing_index_set_round_trips(case, coding):
    n, idx = case
    payload = INDEX_CODINGS[coding].encode(idx, n)
    expected_size = 2 * -(-n // INDEX_BLOCK) + len(idx) if coding == "blocks" else 4 * len(idx)
    assert len(payload) == expected_size == INDEX_CODINGS[coding].size(n, len(idx))
    where = INDEX_CODINGS[coding].decode(payload, n, len(idx))
    positions = where.get("indices")
    if positions is None:
        positions = DecodedTensor((n,), **where).positions()
    np.testing.assert_array_equal(positions, idx)


def test_blocks_are_a_quarter_of_the_gap_bytes_at_the_default_density():
    spec_gaps = CodecSpec("int8", sparsifier="topk", fraction=0.05)
    spec_blocks = CodecSpec("int8", sparsifier="topk", fraction=0.05, index_coding="blocks")
    n = 1_000_000
    assert spec_blocks.index_size(n) == 2 * 3907 + 50_000
    assert spec_blocks.index_size(n) / spec_gaps.index_size(n) < 0.3


def _blocks(n=3 * INDEX_BLOCK + 10):
    idx = np.array([0, 5, 255, 256, 300, 2 * INDEX_BLOCK + 1, 3 * INDEX_BLOCK + 9])
    return n, idx, bytearray(INDEX_CODINGS["blocks"].encode(idx, n))


def test_a_new_block_may_start_below_the_last_offset_of_the_previous_one():
    n, idx, payload = _blocks()  # offsets 0 5 255 | 0 44 | 1 | 9
    counts = np.frombuffer(bytes(payload), "<u2", 4)
    np.testing.assert_array_equal(counts, [3, 2, 1, 1])
    where = INDEX_CODINGS["blocks"].decode(bytes(payload), n, len(idx))
    np.testing.assert_array_equal(
        np.frombuffer(where["block_offsets"], np.uint8), [0, 5, 255, 0, 44, 1, 9]
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.__setitem__(slice(0, 2), (2).to_bytes(2, "little")), "add up to"),
        (lambda p: p.__setitem__(8 + 1, 0), "strictly increasing"),  # 0 0 within block 0
        (lambda p: p.__setitem__(8 + 2, 4), "strictly increasing"),  # 0 5 4 within block 0
        (lambda p: p.__setitem__(8 + 6, 10), "out of range"),  # last block has offsets 0..9
    ],
)
def test_malformed_blocks_are_refused_with_the_reason(damage, message):
    n, idx, payload = _blocks()
    damage(payload)
    with pytest.raises(BadPayload, match=message):
        INDEX_CODINGS["blocks"].decode(bytes(payload), n, len(idx))


def test_a_tensor_round_trips_under_either_coding_to_the_same_reconstruction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(33, 70)).astype(np.float32)
    out = {}
    for coding in ("gaps", "blocks"):
        spec = CodecSpec("int8", sparsifier="topk", fraction=0.1, index_coding=coding)
        payload, reconstructed = encode_tensor(x, spec, 7, np.random.default_rng(1))
        assert len(payload) == spec.payload_size(x.size)
        parts = decode_tensor_parts(payload, spec, x.shape, 7)
        np.testing.assert_array_equal(parts.to_dense(), reconstructed)
        out[coding] = reconstructed
    np.testing.assert_array_equal(out["gaps"], out["blocks"])


def test_headers_without_the_field_mean_gaps_and_bad_codings_are_refused():
    old = CodecSpec("int8", sparsifier="topk", fraction=0.05).to_json()
    del old["index_coding"]
    assert CodecSpec.from_json(old).index_coding == "gaps"
    with pytest.raises(MalformedHeader, match="index_coding must be one of"):
        CodecSpec.from_json(old | {"index_coding": "bitmap"})
    with pytest.raises(ValueError, match="applies to top-k"):
        CodecSpec("int8", index_coding="blocks")


@pytest.mark.parametrize(
    "n, counts, offsets, message",
    [
        (2 * INDEX_BLOCK, [257, 0], list(range(256)) + [255], "strictly increasing"),
        (INDEX_BLOCK + 10, [0, 11], list(range(11)), "out of range"),  # the last block holds 10
    ],
)
def test_a_count_over_its_blocks_coordinates_is_refused(n, counts, offsets, message):
    payload = np.array(counts, "<u2").tobytes() + np.array(offsets, np.uint8).tobytes()
    with pytest.raises(BadPayload, match=message):
        INDEX_CODINGS["blocks"].decode(payload, n, len(offsets))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 2 * INDEX_BLOCK + 40),
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
)
def test_any_payload_is_refused_or_gives_increasing_in_range_positions(n, seed, damage):
    # the aggregator's scatter kernels run without bounds checks and trust exactly this;
    # payloads are valid ones with up to three bytes overwritten
    k = CodecSpec("int8", sparsifier="topk", fraction=0.5, index_coding="blocks").kept(n)
    idx = np.sort(np.random.default_rng(seed).choice(n, k, replace=False))
    payload = bytearray(INDEX_CODINGS["blocks"].encode(idx, n))
    for where, value in damage:
        payload[where % len(payload)] = value
    try:
        where = INDEX_CODINGS["blocks"].decode(bytes(payload), n, k)
    except BadPayload:
        return
    positions = DecodedTensor((n,), **where).positions()
    assert len(positions) == k and positions[0] >= 0 and positions[-1] < n
    assert np.all(np.diff(positions) > 0)
    if not damage:
        np.testing.assert_array_equal(positions, idx)


# -- the registries: a codec is one entry ------------------------------------------------
@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
@pytest.mark.parametrize("sparsifier", sorted(SPARSIFIERS))
def test_every_registered_codec_decodes_to_what_its_encoder_reconstructed(quantizer, sparsifier):
    spec = CodecSpec(
        quantizer, sparsifier=sparsifier, fraction=1.0 if sparsifier == "none" else 0.3, chunk=64
    )
    x = np.random.default_rng(3).normal(0, 1, (37, 11)).astype(np.float32)
    payload, reconstructed = encode_tensor(x, spec, seed=5, rng=np.random.default_rng(0))
    assert len(payload) == spec.payload_size(x.size)
    decoded = decode_tensor_parts(payload, spec, x.shape, seed=5).to_dense()
    np.testing.assert_allclose(decoded, reconstructed, rtol=1e-6, atol=1e-6)


def test_a_new_quantizer_is_one_registry_entry(monkeypatch):
    from edge_sdk.protocol import codec

    monkeypatch.setitem(QUANTIZERS, "float64", codec._Floats("<f8"))
    spec = CodecSpec("float64", sparsifier="topk", fraction=0.5)
    x = np.random.default_rng(4).normal(0, 1, 100).astype(np.float32)
    payload, reconstructed = encode_tensor(x, spec, seed=1, rng=np.random.default_rng(0))
    assert len(payload) == 4 * 50 + 8 * 50  # the gaps, then the kept values as float64
    np.testing.assert_array_equal(
        decode_tensor_parts(payload, spec, (100,), 1).to_dense(), reconstructed
    )
    with pytest.raises(ValueError, match="quantizer must be one of"):
        CodecSpec("float128")
