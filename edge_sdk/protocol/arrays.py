"""A small container for a dict of numpy arrays: the SDK's local state (stored examples,
training checkpoints, error-feedback residuals).

Layout: b"EFLA", u32 header length, JSON header [[name, dtype, shape], ...], then each
array's C-order bytes in header order. Unlike .npz, reading it never calls Python's
compiler (numpy parses .npy headers with ast.literal_eval, which CPython 3.11 cannot run
in two threads at once: "AST constructor recursion depth mismatch"), and it admits only
numeric dtypes.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from .errors import BadPayload

_MAGIC = b"EFLA"
_HEAD = struct.Struct("<4sI")
_KINDS = "biuf"  # bool, signed, unsigned, float: never objects
MAX_HEADER_BYTES = 1 << 20


def encode_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    items = {k: np.asarray(v, order="C") for k, v in arrays.items()}  # keeps 0-d arrays 0-d
    for name, a in items.items():
        if a.dtype.kind not in _KINDS:
            raise ValueError(f"array {name!r} has dtype {a.dtype}; only numeric dtypes are stored")
    header = json.dumps([[k, a.dtype.str, list(a.shape)] for k, a in items.items()]).encode()
    return _HEAD.pack(_MAGIC, len(header)) + header + b"".join(a.tobytes() for a in items.values())


def decode_arrays(blob: bytes) -> dict[str, np.ndarray]:
    """Inverse of encode_arrays; BadPayload (a ProtocolError) for anything malformed."""
    if len(blob) < _HEAD.size:
        raise BadPayload("array container is truncated")
    magic, head_len = _HEAD.unpack_from(blob)
    if magic != _MAGIC or head_len > MAX_HEADER_BYTES or _HEAD.size + head_len > len(blob):
        raise BadPayload("not an array container, or its header length is wrong")
    try:
        entries = json.loads(blob[_HEAD.size : _HEAD.size + head_len])
        specs = [(str(n), np.dtype(d), tuple(int(s) for s in shape)) for n, d, shape in entries]
    except (ValueError, TypeError) as e:
        raise BadPayload(f"array container header is malformed: {e}") from None
    out, offset = {}, _HEAD.size + head_len
    for name, dtype, shape in specs:
        if dtype.kind not in _KINDS or any(s < 0 for s in shape):
            raise BadPayload(f"array {name!r}: dtype {dtype} or shape {shape} not allowed")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + size > len(blob):
            raise BadPayload(f"array {name!r} is truncated")
        out[name] = (
            np.frombuffer(
                blob, dtype, count=size // dtype.itemsize if dtype.itemsize else 0, offset=offset
            )
            .reshape(shape)
            .copy()
        )
        offset += size
    if offset != len(blob):
        raise BadPayload(f"{len(blob) - offset} unexpected bytes after the arrays")
    return out
