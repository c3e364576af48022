"""Model downloads in a smaller encoding than float32: the model frame of `message` (same
magic, prefix, zstd body, sha256 checksum and optional signature), whose header also
names the encoding and its codec.

    encoding  codec (codec.CodecSpec)                         bytes per parameter (raw)
    "f32"     float32                                         4
    "f16"     float16                                         2
    "q8"      int8, nearest rounding, one float32 scale per   1 + 4/256
              256 values (quantization.quantize_chunks)
    "q4"      int4, nearest rounding, a scale per 64 values   0.5 + 4/64
              (differences from a "q8" base)

A "f32" download is the float32 model frame byte for byte (`encode_parameters`): its
header has no "encoding" field, and old devices read it as they always have. The others
add "encoding" and "codec" to the header; `decode_model` reads either. Decoding is a
deterministic function of the bytes (nearest rounding, no seed), so the server knows the
exact parameters a device reconstructs. Error bound of "q8": half a step per value,
max|x| / 254 over its chunk of 256 values.

A difference download: a device that holds the reconstruction R_B of a whole (not
difference) download of version B gets version V as the encoded difference W_V - R_B,
its header naming "base_version": B; it adds the decoded difference to R_B. Its base
stays R_B: every difference is taken from a whole download's reconstruction, so errors
do not accumulate (the error is the difference's own quantization error), and the
server, which computes R_B from the bytes it served, bounds V - B (docs/protocol.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .codec import CodecSpec, decode_tensor_parts, encode_tensor
from .errors import MalformedHeader
from .message import (
    MODEL_MAGIC,
    DecodeLimits,
    _body,
    _check_finite,
    _check_names,
    _frame,
    _specs,
    _unframe_model,
    encode_parameters,
)

ENCODINGS: dict[str, CodecSpec] = {
    "f32": CodecSpec(),
    "f16": CodecSpec(quantizer="float16"),
    "q8": CodecSpec(quantizer="int8", stochastic=False, chunk=256),
    "q4": CodecSpec(quantizer="int4", stochastic=False, chunk=64),
}
"""The encodings a server offers for model downloads, by the name a device asks for."""

DIFFERENCE_ENCODINGS = {"f32": "f32", "f16": "f16", "q8": "q4", "q4": "q4"}
"""The encoding of a difference from a base held in the key's encoding. A difference
is small beside the parameters, so int4 with a scale per 64 values errs less on it (half
a step: max|d| / 14 over its chunk) than q8 on the whole model, at half the bytes."""

DEFAULT_ENCODING = "f32"  # what a device that names none gets: the float32 model
COMPACT_ENCODING = "q8"  # what the SDK asks for (docs/protocol.md, "Downloads")


def encode_model(
    parameters: dict[str, np.ndarray],
    specs: Iterable,
    model_id: str,
    model_version: int,
    encoding: str = DEFAULT_ENCODING,
    signing_key: bytes | None = None,
    base: tuple[int, dict[str, np.ndarray]] | None = None,
) -> bytes:
    """A model download of `parameters` (float32 arrays by spec name; not mutated) in
    `encoding` (a key of ENCODINGS), checksummed, optionally signed. With `base`
    (version B, the parameters a device reconstructed from B's whole download), the
    difference parameters - base (encode it in DIFFERENCE_ENCODINGS[base's encoding])."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    if encoding == DEFAULT_ENCODING and base is None:
        return encode_parameters(parameters, specs, model_id, model_version, signing_key)
    specs = _specs(specs)
    _check_names(parameters, specs)
    codec = ENCODINGS[encoding]
    rng = np.random.default_rng(0)  # unused: nearest rounding draws nothing
    header = {
        "model_id": model_id,
        "model_version": int(model_version),
        "encoding": encoding,
        "codec": codec.to_json(),
    }
    if base is not None:
        _check_names(base[1], specs)
        header["base_version"] = int(base[0])
        parameters = {
            name: np.subtract(parameters[name], base[1][name], dtype=np.float32)
            for name, _ in specs
        }
    payloads = [encode_tensor(parameters[name], codec, 0, rng)[0] for name, _ in specs]
    return _frame(MODEL_MAGIC, header, payloads, signing_key)  # zstd level 3: 19 saves 0.1%


def decode_model(
    data: bytes,
    specs: Iterable,
    *,
    public_key: bytes | None = None,
    limits: DecodeLimits = DecodeLimits(),
    base: tuple[int, dict[str, np.ndarray]] | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """(header {model_id, model_version[, encoding, codec, base_version]}, float32
    parameters) of a model download in any encoding. A difference download needs the
    `base` it was taken from (version, parameters; not mutated) and returns base plus
    the difference. The checksum (and with `public_key` the signature) is checked before
    any tensor is read; raises a ProtocolError subclass for bad input."""
    frame = _unframe_model(data, public_key, limits)
    header = frame.header
    encoding = header.get("encoding", DEFAULT_ENCODING)
    if encoding not in ENCODINGS:
        raise MalformedHeader(f"unknown model encoding {encoding!r}")
    codec = ENCODINGS[encoding]
    if "encoding" in header and CodecSpec.from_json(header.get("codec")) != codec:
        raise MalformedHeader(f"the codec of encoding {encoding!r} is not {codec.to_json()}")
    base_version = header.get("base_version")
    if base_version is not None and (base is None or base_version != base[0]):
        raise MalformedHeader(
            f"a difference from version {base_version!r}, and this device "
            f"holds {None if base is None else base[0]}"
        )
    specs = _specs(specs)
    view, offset, params = _body(frame.body, specs, codec), 0, {}
    for name, shape in specs:
        size = codec.payload_size(math.prod(shape))
        payload = view[offset : offset + size]
        offset += size
        if encoding == DEFAULT_ENCODING:
            params[name] = np.frombuffer(payload, "<f4").astype(np.float32).reshape(shape)
        else:
            params[name] = (
                decode_tensor_parts(payload, codec, shape, 0)
                .to_dense()
                .astype(np.float32, copy=False)
            )
            if base_version is not None:
                params[name] = np.add(base[1][name], params[name], dtype=np.float32)
        _check_finite(name, params[name])
    return header, params
