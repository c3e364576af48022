"""Decoded updates to test with: a tensor of every kind of codec as DecodedTensor parts,
and block-coded int8 updates as JoinedParts, each with what it decodes to, dense."""

from __future__ import annotations

import numpy as np

from edge_sdk.protocol import INDEX_BLOCK, CodecSpec, JoinedParts
from edge_sdk.protocol.body import decode_body
from edge_sdk.protocol.codec import decode_tensor_parts, encode_tensor, tensor_seed

CODECS = {
    "float32": CodecSpec(),
    "float16": CodecSpec("float16"),
    "int8": CodecSpec("int8"),
    "int4": CodecSpec("int4", chunk=64),
    "int1-sign": CodecSpec("int1", stochastic=False),
    "int8+rotation": CodecSpec("int8", rotate=True),
    "topk-int8": CodecSpec("int8", sparsifier="topk", fraction=0.05),
    "topk-int8-blocks": CodecSpec("int8", sparsifier="topk", fraction=0.05, index_coding="blocks"),
    "topk-float16-blocks": CodecSpec(
        "float16", sparsifier="topk", fraction=0.3, index_coding="blocks"
    ),
    "topk-int8-blocks-chunk8": CodecSpec(
        "int8", sparsifier="topk", fraction=0.4, chunk=8, index_coding="blocks"
    ),
    "randk-float16": CodecSpec("float16", sparsifier="randk", fraction=0.1),
    "topk-int2": CodecSpec("int2", sparsifier="topk", fraction=0.2, chunk=32),
}

SHAPES = ((5 * INDEX_BLOCK + 77,), (3, 40), (1,), (2 * INDEX_BLOCK,))


def decoded_parts(spec: CodecSpec, shape=(37, 51), seed=3):
    """One tensor of `shape` encoded with `spec`, as DecodedTensor parts, and its
    reconstruction (float32, dense)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, shape).astype(np.float32)
    payload, reconstructed = encode_tensor(x, spec, seed, rng)
    return decode_tensor_parts(payload, spec, shape, seed), reconstructed


def joined_update(shapes, fraction: float, chunk: int, seed: int):
    """A JoinedParts update of tensors "t0", "t1", ... of `shapes` (block-coded top-k int8),
    and what each decodes to, dense."""
    spec = CodecSpec(
        "int8", sparsifier="topk", fraction=fraction, chunk=chunk, index_coding="blocks"
    )
    rng = np.random.default_rng(seed)
    payloads, dense_each = [], {}
    for i, shape in enumerate(shapes):
        x = rng.normal(0, 0.1, shape).astype(np.float32)
        payload, dense_each[f"t{i}"] = encode_tensor(x, spec, tensor_seed(seed, i), rng)
        payloads.append(payload)
    specs = tuple((f"t{i}", shape) for i, shape in enumerate(shapes))
    parts = decode_body(memoryview(b"".join(payloads)), spec, specs, seed)
    assert isinstance(parts, JoinedParts)
    return parts, dense_each
