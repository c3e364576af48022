"""A block-coded int8 body is checked over all of its tensors at once (decode_body).
Oracle: tensor by tensor (decode_tensor_parts). On any body, valid or damaged, both accept
or both refuse, and what they accept is the same parts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.protocol import DEFAULT_CODEC, BadPayload, CodecSpec, NonFinite
from edge_sdk.protocol.body import _body_plan, decode_body
from edge_sdk.protocol.codec import decode_tensor_parts, encode_tensor, tensor_seed

FIELDS = ("levels", "a", "b", "block_counts", "block_offsets")


def decode_tensors(raw, spec, shapes, seed):
    """decode_body's tensors as a list, in parameter order."""
    return list(decode_body(raw, spec, tuple(enumerate(shapes)), seed).values())


def _body(shapes, spec, seed):
    rng = np.random.default_rng(seed)
    payloads = [
        encode_tensor(rng.normal(size=shape).astype(np.float32), spec, tensor_seed(seed, i), rng)[0]
        for i, shape in enumerate(shapes)
    ]
    return bytearray(b"".join(payloads))


def _one_by_one(raw, spec, shapes, seed):
    out, offset = [], 0
    for i, shape in enumerate(shapes):
        size = spec.payload_size(math.prod(shape))
        out.append(
            decode_tensor_parts(
                bytes(raw[offset : offset + size]), spec, shape, tensor_seed(seed, i)
            )
        )
        offset += size
    return out


def _outcome(decode):
    try:
        return decode()
    except (BadPayload, NonFinite) as e:
        return e


shape_lists = st.lists(
    st.one_of(st.tuples(st.integers(1, 700)), st.tuples(st.integers(1, 40), st.integers(1, 40))),
    min_size=1,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(
    shape_lists,
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.05, 0.3, 1.0]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
)
def test_joined_checks_accept_and_refuse_exactly_what_tensor_by_tensor_does(
    shapes, seed, fraction, damage
):
    spec = CodecSpec("int8", sparsifier="topk", fraction=fraction, index_coding="blocks")
    shapes = tuple(shapes)
    raw = _body(shapes, spec, seed)
    for where, value in damage:
        raw[where % len(raw)] = value
    joined = _outcome(lambda: decode_tensors(memoryview(bytes(raw)), spec, shapes, seed))
    reference = _outcome(lambda: _one_by_one(raw, spec, shapes, seed))
    if isinstance(reference, BadPayload):
        assert isinstance(joined, BadPayload)
        return
    assert not isinstance(joined, BadPayload), joined
    for mine, theirs in zip(joined, reference, strict=True):
        assert mine.shape == theirs.shape and mine.chunk == theirs.chunk
        for field in FIELDS:
            np.testing.assert_array_equal(
                getattr(mine, field), getattr(theirs, field), err_msg=field
            )


@pytest.mark.parametrize(
    "spec",
    [
        CodecSpec("int8"),
        CodecSpec("float16"),
        CodecSpec("int8", sparsifier="topk", fraction=0.1),
        CodecSpec("int4", sparsifier="topk", fraction=0.1, index_coding="blocks"),
        CodecSpec("int8", sparsifier="topk", fraction=0.1, index_coding="blocks", rotate=True),
    ],
)
def test_other_codecs_go_tensor_by_tensor(spec):
    shapes = ((300,), (17, 9))
    assert _body_plan(spec, shapes) is None
    raw = _body(shapes, spec, 5)
    for mine, theirs in zip(
        decode_tensors(memoryview(bytes(raw)), spec, shapes, 5),
        _one_by_one(raw, spec, shapes, 5),
        strict=True,
    ):
        np.testing.assert_array_equal(mine.to_dense(), theirs.to_dense())


def test_the_default_codec_is_checked_joined_and_says_why_it_refuses():
    shapes = ((600,), (30, 30))
    assert _body_plan(DEFAULT_CODEC, shapes) is not None
    raw = _body(shapes, DEFAULT_CODEC, 1)
    second = DEFAULT_CODEC.payload_size(600)  # the second tensor's counts start here
    raw[second : second + 2] = (0).to_bytes(2, "little")  # its first block now counts 0
    with pytest.raises(BadPayload, match="add up to"):
        decode_tensors(memoryview(bytes(raw)), DEFAULT_CODEC, shapes, 1)


@pytest.mark.parametrize("scale", [0.0, -0.0, 3.4e38, -1e-30, np.inf, -np.inf, np.nan])
def test_joined_scale_check_agrees_with_tensor_by_tensor_at_the_edges(scale):
    # the joined check reads scales' bits as unsigned (one pass) and falls back to the
    # exact comparison only when that fails: -0.0 takes the fallback and is valid
    shapes = ((600,), (30, 30))
    raw = _body(shapes, DEFAULT_CODEC, 2)
    first_scale = _body_plan(DEFAULT_CODEC, shapes).gather[0].start  # tensor 0's scales
    raw[first_scale : first_scale + 4] = np.float32(scale).tobytes()
    joined = _outcome(lambda: decode_tensors(memoryview(bytes(raw)), DEFAULT_CODEC, shapes, 2))
    reference = _outcome(lambda: _one_by_one(raw, DEFAULT_CODEC, shapes, 2))
    valid = bool(np.isfinite(scale) and scale >= 0)  # -0.0 >= 0; NaN is not
    refused = (BadPayload, NonFinite)  # NaN and Inf are NonFinite, negatives BadPayload
    assert isinstance(joined, refused) is isinstance(reference, refused) is (not valid)
    if not valid:
        assert type(joined) is type(reference) is (BadPayload if np.isfinite(scale) else NonFinite)
    if valid:
        assert joined[0].a[0] == reference[0].a[0]
