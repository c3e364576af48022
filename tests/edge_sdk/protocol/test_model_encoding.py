"""Model downloads in the compact encodings: the bound of each, the checksum, and old
float32 frames still read."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.protocol import (
    BadChecksum,
    MalformedHeader,
    ShapeMismatch,
    decode_model,
    decode_parameters,
    encode_model,
    encode_parameters,
    generate_signing_key,
    public_key_of,
)

SPECS = [
    {"name": "w", "shape": [300, 70]},
    {"name": "b", "shape": [70]},
    {"name": "s", "shape": [1]},
]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w": rng.normal(0, 0.2, (300, 70)).astype(np.float32),
        "b": rng.uniform(-3, 3, 70).astype(np.float32),
        "s": np.array([0.0], np.float32),
    }


def test_q8_error_at_most_half_a_step_of_its_chunk():
    params = _params()
    data = encode_model(params, SPECS, "m", 3, "q8")
    header, got = decode_model(data, SPECS)
    assert header["model_version"] == 3 and header["encoding"] == "q8"
    for name, x in params.items():
        flat, rec = x.reshape(-1), got[name].reshape(-1)
        assert rec.dtype == np.float32 and got[name].shape == x.shape
        for start in range(0, flat.size, 256):
            chunk = flat[start : start + 256]
            half_step = np.abs(chunk).max() / 254
            assert np.abs(rec[start : start + 256] - chunk).max() <= half_step * (1 + 1e-5) + 1e-12
    assert len(data) < len(encode_parameters(params, SPECS, "m", 3)) / 3.5


def test_f16_is_float16_rounding_and_f32_is_the_float32_frame_byte_for_byte():
    params = _params(1)
    _, got = decode_model(encode_model(params, SPECS, "m", 0, "f16"), SPECS)
    for name, x in params.items():
        np.testing.assert_array_equal(got[name], x.astype(np.float16).astype(np.float32))
    assert encode_model(params, SPECS, "m", 0, "f32") == encode_parameters(params, SPECS, "m", 0)
    # a device reads an old server's float32 frame with the same call
    _, got = decode_model(encode_parameters(params, SPECS, "m", 0), SPECS)
    for name, x in params.items():
        np.testing.assert_array_equal(got[name], x)


def test_decoding_is_a_deterministic_function_of_the_bytes():
    params = _params(2)
    a, b = encode_model(params, SPECS, "m", 1, "q8"), encode_model(params, SPECS, "m", 1, "q8")
    assert a == b


@pytest.mark.parametrize("encoding", ["q8", "f16"])
def test_a_changed_byte_is_refused_by_the_checksum(encoding):
    data = bytearray(encode_model(_params(), SPECS, "m", 1, encoding))
    for at in (20, len(data) // 2, len(data) - 40):
        bad = bytearray(data)
        bad[at] ^= 0x10
        with pytest.raises(BadChecksum):
            decode_model(bytes(bad), SPECS)


def test_a_signed_compact_model_verifies_and_an_unknown_encoding_is_refused():
    key = generate_signing_key()
    data = encode_model(_params(), SPECS, "m", 1, "q8", signing_key=key)
    decode_model(data, SPECS, public_key=public_key_of(key))
    with pytest.raises(ValueError):
        encode_model(_params(), SPECS, "m", 1, "q3")
    # an old device's decoder refuses a compact frame instead of misreading it
    with pytest.raises(ShapeMismatch):
        decode_parameters(data, SPECS)


def test_a_difference_decodes_only_onto_its_base_within_the_int4_bound():
    base, now = _params(3), _params(3)
    now = {k: v + np.float32(0.01) * np.sign(v) for k, v in now.items()}
    data = encode_model(now, SPECS, "m", 5, "q4", base=(2, base))
    header, got = decode_model(data, SPECS, base=(2, base))
    assert header["base_version"] == 2 and header["model_version"] == 5
    for name in now:
        d = (now[name] - base[name]).reshape(-1)
        for start in range(0, d.size, 64):
            half_step = np.abs(d[start : start + 64]).max() / 14
            err = np.abs(
                got[name].reshape(-1)[start : start + 64]
                - now[name].reshape(-1)[start : start + 64]
            )
            assert err.max() <= half_step * (1 + 1e-4) + 1e-7
    for wrong in (None, (3, base)):
        with pytest.raises(MalformedHeader):
            decode_model(data, SPECS, base=wrong)
