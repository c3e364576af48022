from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_sdk.protocol import (
    DEFAULT_CODEC,
    BadChecksum,
    BadMagic,
    BadSignature,
    CodecSpec,
    DecodeLimits,
    ErrorFeedback,
    NonFinite,
    ProtocolError,
    ShapeMismatch,
    TooLarge,
    Truncated,
    UpdateMeta,
    UpdatePipeline,
    clip_by_global_norm,
    decode_parameters,
    decode_update,
    encode_parameters,
    encode_update,
    generate_signing_key,
    global_norm,
    peek_update,
    public_key_of,
)

SPECS = [
    {"name": "embedding.weight", "shape": [50, 8]},
    {"name": "rnn.bias", "shape": [24]},
    {"name": "scalar_like", "shape": [1]},
]
KEY = generate_signing_key()
PUBLIC = public_key_of(KEY)
META = UpdateMeta("task-1", "ab" * 32, 7, "device-9", "idem-1", 12, {"loss": 2.5})

CODECS = [
    CodecSpec(),
    CodecSpec("float16"),
    CodecSpec("int8"),
    CodecSpec("int4", rotate=True, rotation_block=64),
    CodecSpec("int2", chunk=16),
    DEFAULT_CODEC,
    CodecSpec("int8", sparsifier="topk", fraction=0.1),
    CodecSpec("float32", sparsifier="topk", fraction=0.3, index_coding="blocks"),
    CodecSpec("int4", sparsifier="randk", fraction=0.3, rotate=True, rotation_block=32),
]


def _delta(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {s["name"]: (rng.normal(size=s["shape"]) * scale).astype(np.float32) for s in SPECS}


def _encode(delta=None, codec=CodecSpec(), seed=0, feedback=None, **kw):
    """`delta` (default `_delta()`) as META's update, signed by KEY; `kw` goes to the
    pipeline; `feedback`, if given, is updated in place."""
    return encode_update(
        delta if delta is not None else _delta(),
        SPECS,
        META,
        UpdatePipeline(codec, **kw),
        signing_key=KEY,
        rng=np.random.default_rng(seed),
        feedback=feedback,
    )


def test_float32_round_trip_is_exact_and_signed():
    delta = _delta()
    decoded = decode_update(_encode(delta), SPECS, public_key=PUBLIC)
    assert decoded.meta == META and decoded.local_dp is None
    for name in delta:
        np.testing.assert_array_equal(decoded.tensors[name], delta[name])


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{c.quantizer}-{c.sparsifier}-{c.rotate}")
def test_every_codec_round_trips_to_what_the_encoder_reconstructed(codec):
    delta = _delta(1)
    feedback = ErrorFeedback()
    message = _encode(delta, codec, seed=3, feedback=feedback)
    decoded = decode_update(message, SPECS, public_key=PUBLIC).tensors
    for name in delta:  # the residual is exactly what the server did not get
        np.testing.assert_allclose(
            decoded[name] + feedback.residual[name], delta[name], rtol=1e-5, atol=1e-5
        )


def test_error_feedback_carries_the_residual_across_rounds():
    codec = CodecSpec("int1", stochastic=False, chunk=16)
    feedback = ErrorFeedback()
    sent_sum = np.zeros(425, np.float64)
    delta_sum = np.zeros(425, np.float64)
    for round_ in range(30):
        delta = _delta(round_)
        delta_sum += np.concatenate([v.ravel() for v in delta.values()])
        message = _encode(delta, codec, seed=round_, feedback=feedback)
        got = decode_update(message, SPECS, public_key=None).tensors
        sent_sum += np.concatenate([got[s["name"]].ravel() for s in SPECS])
    residual = np.concatenate([feedback.residual[s["name"]].ravel() for s in SPECS])
    np.testing.assert_allclose(sent_sum + residual, delta_sum, rtol=1e-4, atol=1e-3)
    # without feedback the 1-bit errors would pile up; with it the gap stays one round's worth
    assert np.linalg.norm(sent_sum - delta_sum) < 3 * np.linalg.norm(list(_delta(0).values())[0])
    restored = ErrorFeedback.from_bytes(feedback.to_bytes())
    for name in feedback.residual:
        np.testing.assert_array_equal(restored.residual[name], feedback.residual[name])


@settings(max_examples=50, deadline=None)
@given(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
def test_clipping_never_increases_the_norm(scale, max_norm):
    delta = _delta(0, scale)
    clipped, before = clip_by_global_norm(delta, max_norm)
    after = global_norm(clipped)
    assert after <= before * (1 + 1e-6) and after <= max_norm * (1 + 1e-5)


def test_local_dp_noise_is_recorded_in_the_header():
    decoded = decode_update(_encode(clip_norm=1.0, noise_multiplier=0.5), SPECS, public_key=PUBLIC)
    assert decoded.local_dp == {"clip_norm": 1.0, "noise_multiplier": 0.5}


def test_default_codec_is_at_most_a_twentieth_of_float32():
    rng = np.random.default_rng(0)
    specs = [{"name": "w", "shape": [200_000]}]
    delta = {"w": rng.normal(size=200_000).astype(np.float32) * 0.01}
    full = encode_update(delta, specs, META, UpdatePipeline(), signing_key=KEY, rng=rng)
    small = encode_update(
        delta, specs, META, UpdatePipeline(DEFAULT_CODEC), signing_key=KEY, rng=rng
    )
    assert len(small) <= len(full) / 20


@pytest.mark.parametrize(
    "codec, level",
    [
        (DEFAULT_CODEC, -1),
        (CodecSpec(), 3),
        (CodecSpec("int8"), 3),
        (CodecSpec("int4", sparsifier="topk", fraction=0.1, index_coding="blocks"), 3),
    ],
)
def test_the_body_goes_at_the_codecs_zstd_level_unless_the_pipeline_sets_one(codec, level):
    assert UpdatePipeline(codec).compression_level == level
    assert UpdatePipeline(codec, compression_level=5).compression_level == 5
    # the default is what is applied: the same bytes as asking for that level, and the
    # other choice (with or without Huffman coding) gives other bytes, the same tensors
    specs = [{"name": "w", "shape": [40_000]}]
    delta = {"w": np.random.default_rng(0).normal(size=40_000).astype(np.float32)}

    def encode(pipeline):
        return encode_update(
            delta, specs, META, pipeline, signing_key=KEY, rng=np.random.default_rng(4)
        )

    same, other = (
        encode(UpdatePipeline(codec, compression_level=lv))
        for lv in (level, 3 if level < 0 else -1)
    )
    assert encode(UpdatePipeline(codec)) == same != other
    np.testing.assert_array_equal(
        decode_update(same, specs, public_key=PUBLIC).tensors["w"],
        decode_update(other, specs, public_key=PUBLIC).tensors["w"],
    )


def test_sink_receives_tensors_one_at_a_time_in_order():
    seen = []
    decoded = decode_update(
        _encode(),
        SPECS,
        public_key=PUBLIC,
        sink=lambda name, array: seen.append((name, array.shape)),
    )
    assert decoded.tensors is None
    assert seen == [(s["name"], tuple(s["shape"])) for s in SPECS]


def test_peek_reads_metadata_without_decoding():
    assert peek_update(_encode()) == META


def test_model_download_round_trip_and_signature():
    params = _delta(5)
    data = encode_parameters(params, SPECS, "model-x", 3, signing_key=KEY)
    header, got = decode_parameters(data, SPECS, public_key=PUBLIC)
    assert header == {"model_id": "model-x", "model_version": 3}
    for name in params:
        np.testing.assert_array_equal(got[name], params[name])
    with pytest.raises(BadSignature):
        decode_parameters(encode_parameters(params, SPECS, "m", 1), SPECS, public_key=PUBLIC)


# -- hostile input: every bad message raises the typed error, never anything else ----------
MESSAGE = _encode(codec=CodecSpec("int4", rotate=True, rotation_block=64))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(MESSAGE) - 1))
def test_every_truncation_raises_a_protocol_error(cut):
    with pytest.raises(ProtocolError):
        decode_update(MESSAGE[:cut], SPECS, public_key=PUBLIC)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(MESSAGE) * 8 - 1))
def test_every_bit_flip_raises_a_protocol_error(bit):
    data = bytearray(MESSAGE)
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProtocolError):
        decode_update(bytes(data), SPECS, public_key=PUBLIC)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_a_protocol_error(data):
    with pytest.raises(ProtocolError):
        decode_update(data, SPECS, public_key=PUBLIC)


def test_specific_failures_have_specific_errors():
    with pytest.raises(TooLarge):
        decode_update(MESSAGE, SPECS, public_key=PUBLIC, limits=DecodeLimits(max_message_bytes=100))
    with pytest.raises(BadMagic):
        decode_update(b"XXXX" + MESSAGE[4:], SPECS, public_key=PUBLIC)
    with pytest.raises(Truncated):
        decode_update(MESSAGE[:10], SPECS, public_key=PUBLIC)
    with pytest.raises(BadChecksum):
        decode_update(
            MESSAGE[:-97] + bytes([MESSAGE[-97] ^ 1]) + MESSAGE[-96:], SPECS, public_key=PUBLIC
        )
    other = public_key_of(generate_signing_key())
    with pytest.raises(BadSignature):  # a forged signature: another device's key
        decode_update(MESSAGE, SPECS, public_key=other)
    mislabelled = [{"name": "embedding.weight", "shape": [50, 9]}] + SPECS[1:]
    with pytest.raises(ShapeMismatch):
        decode_update(MESSAGE, mislabelled, public_key=PUBLIC)
    renamed = [{"name": "other", "shape": [50, 8]}] + SPECS[1:]
    with pytest.raises(ShapeMismatch):
        encode_update(
            _delta(), renamed, META, UpdatePipeline(), signing_key=KEY, rng=np.random.default_rng(0)
        )


def test_non_finite_values_are_rejected_by_the_decoder():
    import hashlib
    import struct

    import zstandard

    delta = _delta()
    good = _encode(delta)  # re-frame a message whose float32 payload holds a NaN
    prefix = struct.Struct("<4sHHII")
    magic, version, flags, head_len, body_len = prefix.unpack_from(good)
    head = good[prefix.size : prefix.size + head_len]
    raw = bytearray(
        zstandard.ZstdDecompressor().decompress(
            good[prefix.size + head_len : prefix.size + head_len + body_len]
        )
    )
    raw[0:4] = np.float32(np.nan).tobytes()
    body = zstandard.ZstdCompressor().compress(bytes(raw))
    data = prefix.pack(magic, version, 0, len(head), len(body)) + head + body
    data += hashlib.sha256(data).digest()
    with pytest.raises(NonFinite):
        decode_update(data, SPECS, public_key=None)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, 24, elements=st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_any_finite_float32_delta_round_trips(values):
    delta = _delta()
    delta["rnn.bias"] = values
    decoded = decode_update(_encode(delta), SPECS, public_key=PUBLIC)
    np.testing.assert_array_equal(decoded.tensors["rnn.bias"], values)


def test_codec_spec_validates_with_a_fix_in_the_message():
    with pytest.raises(ValueError, match="quantizer must be one of"):
        CodecSpec("int3")
    with pytest.raises(ValueError, match="needs a sparsifier"):
        CodecSpec(fraction=0.5)
    with pytest.raises(ValueError, match="power of two"):
        CodecSpec(rotate=True, rotation_block=1000)


def test_a_non_finite_delta_is_refused_before_encoding():
    delta = _delta()
    delta["embedding.weight"][0, 0] = np.inf
    with pytest.raises(NonFinite):
        _encode(delta)


def test_array_container_round_trips_and_rejects_garbage():
    from edge_sdk.protocol.arrays import decode_arrays, encode_arrays

    arrays = {
        "scalar": np.int64(7),
        "m": np.arange(6, dtype=np.float32).reshape(2, 3),
        "empty": np.zeros((0, 4), np.uint8),
        "flag": np.array([True, False]),
    }
    back = decode_arrays(encode_arrays(arrays))
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == np.asarray(v).dtype and back[k].shape == np.shape(v)
    blob = encode_arrays(arrays)
    for bad in (blob[:-1], blob + b"x", b"EFLA" + blob[4:8] + b"{", b"nope"):
        with pytest.raises(ProtocolError):
            decode_arrays(bad)
    with pytest.raises(ValueError, match="numeric"):
        encode_arrays({"o": np.array([object()])})


@pytest.mark.parametrize(
    "change",
    [
        {"num_examples": 0},
        {"num_examples": 2**53 + 1},
        {"num_examples": 10**400},
        {"num_examples": float("inf")},
        {"num_examples": 5.0},
        {"num_examples": True},
        {"model_version": -1},
        {"model_version": 10**30},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 129},
        {"idempotency_key": "a/b"},
        {"idempotency_key": "\ud800"},
        {"device_id": "dev-\ud800"},
        {"metrics": {"loss": 1e12 * 1.5}},
        {"metrics": {"loss": 10**400}},
        {"metrics": {"loss": float("nan")}},
        {"metrics": {"loss": True}},
        {"metrics": {"\ud800": 1.0}},
        {"metrics": {"a b": 1.0}},
    ],
)
def test_update_metadata_out_of_range_is_a_malformed_header(change):
    from dataclasses import replace

    from edge_sdk.protocol import MalformedHeader

    with pytest.raises(MalformedHeader):
        replace(META, **change).validate()


def test_update_metadata_at_its_limits_is_valid():
    from dataclasses import replace

    replace(
        META,
        num_examples=2**53,
        model_version=2**53,
        idempotency_key="a-Z_0.9:" * 16,
        metrics={"x" * 64: -1e12, "n": 3},
    ).validate()
