"""Model downloads in a smaller encoding than float32: the model frame of `message` (same
magic, prefix, zstd body, sha256 checksum and optional signature), whose header also
names the encoding and its codec.

    encoding  codec (codec.CodecSpec)                         bytes per parameter (raw)
    "f32"     float32                                         4
    "f16"     float16                                         2
    "q8"      int8, nearest rounding, one float32 scale per   1 + 4/256
              256 values (quantization.quantize_chunks)

A "f32" download is the float32 model frame byte for byte (`encode_parameters`): its
header has no "encoding" field, and old devices read it as they always have. The others
add "encoding" and "codec" to the header; `decode_model` reads either. Decoding is a
deterministic function of the bytes (nearest rounding, no seed), so the server knows the
exact parameters a device reconstructs. Error bound of "q8": half a step per value,
max|x| / 254 over its chunk of 256 values.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .codec import CodecSpec, decode_tensor, encode_tensor
from .errors import BadSignature, MalformedHeader
from .message import (MODEL_MAGIC, DecodeLimits, _body, _check_finite, _check_names, _frame,
                      _specs, _unframe, encode_parameters)
from .signing import verify

ENCODINGS: dict[str, CodecSpec] = {
    "f32": CodecSpec(),
    "f16": CodecSpec(quantizer="float16"),
    "q8": CodecSpec(quantizer="int8", stochastic=False, chunk=256),
}
"""The encodings a server offers for model downloads, by the name a device asks for."""

DEFAULT_ENCODING = "f32"  # what a device that names none gets: the float32 model
COMPACT_ENCODING = "q8"  # what the SDK asks for (docs/protocol.md, "Downloads")


def encode_model(parameters: dict[str, np.ndarray], specs: Iterable, model_id: str,
                 model_version: int, encoding: str = DEFAULT_ENCODING,
                 signing_key: bytes | None = None) -> bytes:
    """A model download of `parameters` (float32 arrays by spec name; not mutated) in
    `encoding` (a key of ENCODINGS), checksummed, optionally signed."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    if encoding == DEFAULT_ENCODING:
        return encode_parameters(parameters, specs, model_id, model_version, signing_key)
    specs = _specs(specs)
    _check_names(parameters, specs)
    codec = ENCODINGS[encoding]
    rng = np.random.default_rng(0)  # unused: nearest rounding draws nothing
    payloads = [encode_tensor(parameters[name], codec, 0, rng)[0] for name, _ in specs]
    header = {"model_id": model_id, "model_version": int(model_version),
              "encoding": encoding, "codec": codec.to_json()}
    return _frame(MODEL_MAGIC, header, payloads, signing_key)  # zstd level 3: 19 saves 0.1%


def decode_model(data: bytes, specs: Iterable, *, public_key: bytes | None = None,
                 limits: DecodeLimits = DecodeLimits()) -> tuple[dict, dict[str, np.ndarray]]:
    """(header {model_id, model_version[, encoding, codec]}, float32 parameters) of a model
    download in any encoding. The checksum (and with `public_key` the signature) is
    checked before any tensor is read; raises a ProtocolError subclass for bad input."""
    frame = _unframe(data, MODEL_MAGIC, limits)
    if public_key is not None:
        if frame.signature is None:
            raise BadSignature("the model is unsigned")
        verify(public_key, frame.signed_part, frame.signature)
    header = frame.header
    if not isinstance(header.get("model_id"), str) or not isinstance(header.get("model_version"), int):
        raise MalformedHeader("a model header has a string model_id and an int model_version")
    encoding = header.get("encoding", DEFAULT_ENCODING)
    if encoding not in ENCODINGS:
        raise MalformedHeader(f"unknown model encoding {encoding!r}")
    codec = ENCODINGS[encoding]
    if "encoding" in header and CodecSpec.from_json(header.get("codec")) != codec:
        raise MalformedHeader(f"the codec of encoding {encoding!r} is not {codec.to_json()}")
    specs = _specs(specs)
    view, offset, params = _body(frame.body, specs, codec), 0, {}
    for name, shape in specs:
        size = codec.payload_size(math.prod(shape))
        payload = view[offset:offset + size]
        offset += size
        if encoding == DEFAULT_ENCODING:
            params[name] = np.frombuffer(payload, "<f4").astype(np.float32).reshape(shape)
        else:
            params[name] = decode_tensor(payload, codec, shape, 0).astype(np.float32, copy=False)
        _check_finite(name, params[name])
    return header, params
