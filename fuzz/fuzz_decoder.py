"""Coverage-guided fuzzing of the update decoder (atheris/libFuzzer).

Any exception other than a ProtocolError is a crash. Seeds are valid messages for several
codecs, so mutations explore the decoder past its first checks.

    python fuzz/fuzz_decoder.py -max_total_time=60 [corpus_dir]
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from edge_sdk.protocol import (
        CodecSpec,
        ProtocolError,
        UpdateMeta,
        UpdatePipeline,
        decode_update,
        encode_update,
        generate_signing_key,
    )
    from edge_sdk.protocol.message import _CHECKSUM, _PREFIX

SPECS = [{"name": "a", "shape": [40, 7]}, {"name": "b", "shape": [13]}]


def seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    delta = {
        "a": rng.normal(size=(40, 7)).astype(np.float32),
        "b": rng.normal(size=13).astype(np.float32),
    }
    key = generate_signing_key()
    meta = UpdateMeta("t", "m", 1, "d", "k", 3, {"loss": 1.0})
    return [
        encode_update(delta, SPECS, meta, UpdatePipeline(codec), signing_key=key, rng=rng)
        for codec in (
            CodecSpec(),
            CodecSpec("int4", rotate=True, rotation_block=16),
            CodecSpec("int8", sparsifier="topk", fraction=0.1),
            CodecSpec("int8", sparsifier="topk", fraction=0.3, index_coding="blocks"),
            CodecSpec("int2", sparsifier="randk", fraction=0.5),
        )
    ]


def reseal(data: bytes) -> bytes:
    """Recompute the checksum of a mutated message, so mutations reach the header, codec
    and payload parsers instead of all stopping at the integrity check."""
    import hashlib

    if len(data) < _PREFIX.size + _CHECKSUM:
        return data
    _, _, _, head_len, body_len = _PREFIX.unpack_from(data)
    end = _PREFIX.size + head_len + body_len
    if end + _CHECKSUM > len(data):
        return data
    return data[:end] + hashlib.sha256(data[:end]).digest() + data[end + _CHECKSUM :]


def test_one_input(data: bytes) -> None:
    if data and data[0] & 1:  # half the inputs: resealed
        data = reseal(data[1:])
    try:
        decode_update(data, SPECS, public_key=None)
    except ProtocolError:
        pass


def main() -> None:
    import os
    import tempfile

    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = tempfile.mkdtemp(prefix="fuzz-corpus-")
        for i, seed in enumerate(seeds()):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(seed)
        args.append(corpus)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
