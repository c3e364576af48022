"""Writes the wire format's conformance vectors (docs/protocol.md, "Conformance vectors").

    python tests/vectors/generate.py [--out DIR]     (default: this directory)

Everything is deterministic: the inputs come from fixed seeds, the signing key is the 32
bytes 00 01 .. 1f, and each message's encoder randomness from np.random.default_rng(a
fixed seed per case). Three files:

- updates.json: per codec, the delta, the metadata and the exact update the Python
  encoder writes (header text, decompressed body and whole message, hex), the tensors the
  decoder returns, and whether another encoder can reproduce the bytes (`byte_exact`);
- models.json: model downloads (signed and unsigned) and the parameters they decode to;
- damaged.json: messages that must be refused, each with the error code it must give.

Arrays are float32 little-endian bytes in hex, so no value is rounded by a text format.
The damaged messages are framed here by hand (`frame`), not by edge_sdk, so this file is
also a second implementation of the framing that docs/protocol.md describes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np
import zstandard

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from edge_sdk import protocol  # noqa: E402
from edge_sdk.protocol import (  # noqa: E402
    CodecSpec,
    DecodeLimits,
    ErrorFeedback,
    UpdateMeta,
    public_key_of,
    sign,
)

HERE = Path(__file__).resolve().parent
PRIVATE_KEY = bytes(range(32))
SPECS = [
    {"name": "dense.weight", "shape": [4, 75]},
    {"name": "dense.bias", "shape": [5]},
    {"name": "embedding", "shape": [600]},
]
META = UpdateMeta(
    task_id="vectors-task",
    model_id="vectors-model",
    model_version=3,
    device_id="dev-vectors",
    idempotency_key="vectors-key-0001",
    num_examples=12,
    metrics={"accuracy": 0.5, "mean_loss": 0.6931},
)
TINY_SPECS = [{"name": "w", "shape": [4]}]  # docs/protocol.md's worked example

NEAREST_TOPK = dict(
    quantizer="int8", sparsifier="topk", fraction=0.05, index_coding="blocks", stochastic=False
)
# name -> codec arguments; each case's encoder rng is default_rng(CASE_SEED + its index)
CODECS = {
    "float32": {},
    "float16": dict(quantizer="float16"),
    "int8_nearest": dict(quantizer="int8", stochastic=False),
    "int8_nearest_chunk64": dict(quantizer="int8", stochastic=False, chunk=64),
    "int8_stochastic": dict(quantizer="int8"),
    "int4_nearest": dict(quantizer="int4", stochastic=False),
    "int4_stochastic": dict(quantizer="int4"),
    "int2_nearest": dict(quantizer="int2", stochastic=False),
    "int1_nearest": dict(quantizer="int1", stochastic=False),
    "int1_stochastic": dict(quantizer="int1"),
    "topk_gaps_float32": dict(sparsifier="topk", fraction=0.05),
    "topk_gaps_int8_nearest": dict(
        quantizer="int8", sparsifier="topk", fraction=0.05, stochastic=False
    ),
    "topk_blocks_int8_nearest": NEAREST_TOPK,
    "topk_blocks_int8_default": dict(
        quantizer="int8", sparsifier="topk", fraction=0.05, index_coding="blocks"
    ),
    "topk_blocks_int4_nearest": dict(NEAREST_TOPK, quantizer="int4"),
    "randk_int8_nearest": dict(
        quantizer="int8", sparsifier="randk", fraction=0.1, stochastic=False
    ),
    "rotate_int8_nearest": dict(
        quantizer="int8", stochastic=False, rotate=True, rotation_block=256
    ),
}
CASE_SEED = 1000


def f32_hex(a) -> str:
    return np.ascontiguousarray(a, "<f4").tobytes().hex()


def tensors_hex(d: dict) -> dict:
    return {k: f32_hex(v) for k, v in d.items()}


def tensors_from_hex(doc: dict, specs) -> dict[str, np.ndarray]:
    """The inverse of `tensors_hex`: float32 arrays shaped as `specs` say."""
    shapes = {s["name"]: s["shape"] for s in specs}
    return {k: np.frombuffer(bytes.fromhex(v), "<f4").reshape(shapes[k]) for k, v in doc.items()}


def make_delta(seed: int = 20261203, specs=SPECS) -> dict[str, np.ndarray]:
    """Small normal values with a few large ones (what top-k picks), float32."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        n = int(np.prod(s["shape"]))
        v = rng.normal(0, 0.01, n)
        big = rng.choice(n, size=max(1, n // 40), replace=False)
        v[big] += rng.normal(0, 0.2, len(big))
        out[s["name"]] = v.astype(np.float32).reshape(s["shape"])
    return out


def byte_exact(codec: CodecSpec) -> bool:
    """Whether another encoder, given the seed, can write the same bytes: nothing the
    encoder draws (stochastic rounding) and no numpy-defined generator (random-k
    positions, rotation signs) reaches the body, and no scale is a numpy float32 mean
    (1-bit nearest: numpy's pairwise summation order would have to be copied)."""
    draws = codec.bits is not None and codec.stochastic
    mean_scale = codec.bits == 1 and not codec.stochastic
    return not draws and not mean_scale and not needs_numpy_prng(codec)


def needs_numpy_prng(codec: CodecSpec) -> bool:
    """Random-k positions and rotation signs come from numpy's PCG64 generator seeded with
    the tensor's seed: a decoder must reproduce numpy's algorithms."""
    return codec.sparsifier == "randk" or codec.rotate


def _raw_body(message: bytes) -> bytes:
    head_len, body_len = struct.unpack_from("<II", message, 8)
    body = message[16 + head_len : 16 + head_len + body_len]
    return zstandard.ZstdDecompressor().decompress(body)


def _header_text(message: bytes) -> str:
    (head_len,) = struct.unpack_from("<I", message, 8)
    return message[16 : 16 + head_len].decode()


def encode_vector_update(
    delta: dict,
    specs,
    meta: UpdateMeta,
    codec: CodecSpec,
    rng_seed: int,
    signing_key: bytes | None,
    feedback: ErrorFeedback | None = None,
) -> bytes:
    """A vector's update: `delta` encoded with `codec`, the encoder's rng seeded
    `rng_seed`, signed by `signing_key` (None: unsigned); `feedback`, if given, is
    updated in place as the encoder leaves it."""
    return protocol.encode_update(
        delta,
        specs,
        meta,
        protocol.UpdatePipeline(codec),
        signing_key=signing_key,
        rng=np.random.default_rng(rng_seed),
        feedback=feedback,
    )


def update_case(
    name: str,
    codec: CodecSpec,
    delta: dict,
    specs,
    index: int,
    *,
    signed: bool = True,
    feedback: ErrorFeedback | None = None,
    meta: UpdateMeta = META,
) -> dict:
    feedback_in = None if feedback is None else tensors_hex(feedback.residual)
    rng_seed = CASE_SEED + index
    key = PRIVATE_KEY if signed else None
    message = encode_vector_update(delta, specs, meta, codec, rng_seed, key, feedback)
    decoded = protocol.decode_update(
        message, specs, public_key=public_key_of(PRIVATE_KEY) if signed else None
    )
    header = json.loads(_header_text(message))
    case = {
        "name": name,
        "codec": codec.to_json(),
        "zstd_level": protocol.UpdatePipeline(codec).compression_level,
        "specs": specs,
        "meta": dataclasses.asdict(meta),
        "seed": header["seed"],
        "rng_seed": rng_seed,
        "signed": signed,
        "byte_exact": byte_exact(codec),
        "needs_numpy_prng": needs_numpy_prng(codec),
        "header": _header_text(message),
        "body": _raw_body(message).hex(),
        "message": message.hex(),
        "decoded": tensors_hex(decoded.tensors),
    }
    if feedback is not None:
        case["feedback_in"] = feedback_in
        case["feedback_out"] = tensors_hex(feedback.residual)
    return case


def updates() -> dict:
    delta = make_delta()
    cases = [
        update_case(name, CodecSpec(**args), delta, SPECS, i)
        for i, (name, args) in enumerate(CODECS.items())
    ]
    # error feedback over two rounds of the default codec with nearest rounding: the
    # second delta is corrected by the first round's residual before it is encoded
    cases.append(update_case("float32_unsigned", CodecSpec(), delta, SPECS, 50, signed=False))
    feedback = ErrorFeedback()
    second = make_delta(seed=7)
    for r, d in enumerate((delta, second)):
        cases.append(
            update_case(
                f"error_feedback_round{r + 1}",
                CodecSpec(**NEAREST_TOPK),
                d,
                SPECS,
                100 + r,
                feedback=feedback,
            )
        )
    tiny = {"w": np.array([0.5, -0.25, 0.0, 1.0], np.float32)}
    cases.append(
        update_case(
            "tiny_topk_blocks_int8_nearest",
            CodecSpec(**dict(NEAREST_TOPK, fraction=0.5)),
            tiny,
            TINY_SPECS,
            200,
        )
    )
    return {
        "private_key": PRIVATE_KEY.hex(),
        "public_key": public_key_of(PRIVATE_KEY).hex(),
        "delta": tensors_hex(delta),
        "second_delta": tensors_hex(second),
        "tiny_delta": tensors_hex(tiny),
        "cases": cases,
    }


def models() -> dict:
    params = make_delta(seed=99)
    cases = []
    for signed in (False, True):
        message = protocol.encode_parameters(
            params, SPECS, "vectors-model", 7, signing_key=PRIVATE_KEY if signed else None
        )
        header, decoded = protocol.decode_parameters(message, SPECS)
        cases.append(
            {
                "name": "signed" if signed else "unsigned",
                "specs": SPECS,
                "model_id": "vectors-model",
                "model_version": 7,
                "signed": signed,
                "header": _header_text(message),
                "message": message.hex(),
                "parameters": tensors_hex(decoded),
            }
        )
    return {
        "private_key": PRIVATE_KEY.hex(),
        "public_key": public_key_of(PRIVATE_KEY).hex(),
        "cases": cases,
    }


# -- damaged messages ----------------------------------------------------------------------
def frame(
    magic: bytes,
    header: bytes,
    raw_body: bytes,
    *,
    key: bytes | None = PRIVATE_KEY,
    version: int = 1,
    flags: int | None = None,
    level: int = 3,
    body: bytes | None = None,
) -> bytes:
    """A message framed as docs/protocol.md says: prefix, header, zstd body, sha256 of all
    before it, Ed25519 over prefix + header + checksum."""
    body = zstandard.ZstdCompressor(level=level).compress(raw_body) if body is None else body
    flags = (1 if key is not None else 0) if flags is None else flags
    data = struct.pack("<4sHHII", magic, version, flags, len(header), len(body)) + header + body
    checksum = hashlib.sha256(data).digest()
    data += checksum
    if key is not None:
        data += sign(key, data[: 16 + len(header)] + checksum)
    return data


def _canonical(doc) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def damaged(update_cases: list[dict]) -> dict:
    by_name = {c["name"]: c for c in update_cases}
    base = bytes.fromhex(by_name["topk_blocks_int8_nearest"]["message"])
    base_header = json.loads(by_name["topk_blocks_int8_nearest"]["header"])
    base_body = bytes.fromhex(by_name["topk_blocks_int8_nearest"]["body"])
    f32 = by_name["float32"]
    f32_header, f32_body = json.loads(f32["header"]), bytes.fromhex(f32["body"])
    int8_header = json.loads(by_name["int8_nearest"]["header"])
    int8_body = bytes.fromhex(by_name["int8_nearest"]["body"])
    int4_header = json.loads(by_name["int4_nearest"]["header"])
    int4_body = bytes.fromhex(by_name["int4_nearest"]["body"])
    pk = public_key_of(PRIVATE_KEY).hex()
    head_len = struct.unpack_from("<I", base, 8)[0]
    body_len = struct.unpack_from("<I", base, 12)[0]
    end = 16 + head_len + body_len
    cases = []

    def add(name, message, code, why, *, specs=SPECS, public_key=pk, kind="update", limits=None):
        cases.append(
            {
                "name": name,
                "kind": kind,
                "message": message.hex(),
                "specs": specs,
                "public_key": public_key,
                "limits": dataclasses.asdict(limits or DecodeLimits()),
                "error": code,
                "why": why,
            }
        )

    def flip(data: bytes, at: int) -> bytes:
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]

    def with_header(doc, raw=base_body, level=-1):
        return frame(b"EFLU", _canonical(doc), raw, level=level)

    add(
        "too_large",
        base,
        "too_large",
        "over max_message_bytes, checked before anything else",
        limits=DecodeLimits(max_message_bytes=len(base) - 1),
    )
    add(
        "header_too_large",
        base,
        "too_large",
        "header_len over max_header_bytes",
        limits=DecodeLimits(max_header_bytes=head_len - 1),
    )
    add("shorter_than_fixed_fields", base[:40], "truncated", "under prefix + checksum bytes")
    add("truncated", base[:-1], "truncated", "one byte less than the lengths say")
    add("trailing_bytes", base + b"\0", "bad_payload", "one byte more than the lengths say")
    add("bad_magic", b"EFLX" + base[4:], "bad_magic", "magic is not EFLU")
    add(
        "model_as_update",
        bytes.fromhex(models()["cases"][0]["message"]),
        "bad_magic",
        "a model download (EFLM) offered as an update",
    )
    add(
        "unsupported_version",
        frame(b"EFLU", _canonical(base_header), base_body, version=2, level=-1),
        "unsupported_version",
        "format version 2",
    )
    add(
        "unknown_flags",
        frame(b"EFLU", _canonical(base_header), base_body, flags=3, level=-1),
        "malformed_header",
        "flag bit 1 is not defined",
    )
    add("checksum", flip(base, end - 1), "bad_checksum", "last body byte changed")
    add("checksum_field", flip(base, end), "bad_checksum", "first checksum byte changed")
    add("signature", flip(base, len(base) - 1), "bad_signature", "last signature byte changed")
    add(
        "header_signed_by_other_key",
        frame(b"EFLU", _canonical(base_header), base_body, key=bytes(32), level=-1),
        "bad_signature",
        "valid frame signed by another key (seed 00..00)",
    )
    add(
        "unsigned_but_key_required",
        frame(b"EFLU", _canonical(base_header), base_body, key=None, level=-1),
        "bad_signature",
        "flags bit 0 clear while the server holds the device's key",
    )
    add(
        "header_not_json",
        frame(b"EFLU", b"{not json", base_body, level=-1),
        "malformed_header",
        "header bytes are not JSON",
    )
    add(
        "header_not_object",
        frame(b"EFLU", b"[1,2]", base_body, level=-1),
        "malformed_header",
        "header is JSON but not an object",
    )
    meta = dict(base_header["meta"])
    del meta["metrics"]
    add(
        "meta_missing_field",
        with_header(base_header | {"meta": meta}),
        "malformed_header",
        "meta lacks metrics",
    )
    add(
        "meta_extra_field",
        with_header(base_header | {"meta": base_header["meta"] | {"x": 1}}),
        "malformed_header",
        "meta has a field not in the list",
    )
    add(
        "num_examples_zero",
        with_header(base_header | {"meta": base_header["meta"] | {"num_examples": 0}}),
        "malformed_header",
        "num_examples must be >= 1",
    )
    add(
        "metric_not_finite",
        with_header(
            base_header | {"meta": base_header["meta"] | {"metrics": {"loss": float("nan")}}}
        ),
        "malformed_header",
        "a metric is NaN (Python's json writes and reads NaN)",
    )
    add(
        "seed_out_of_range",
        with_header(base_header | {"seed": 2**62}),
        "malformed_header",
        "seed must be < 2^62",
    )
    add(
        "seed_missing",
        with_header({k: v for k, v in base_header.items() if k != "seed"}),
        "malformed_header",
        "no seed",
    )
    add(
        "codec_unknown_quantizer",
        with_header(base_header | {"codec": base_header["codec"] | {"quantizer": "int3"}}),
        "malformed_header",
        "quantizer int3 does not exist",
    )
    add(
        "codec_unknown_field",
        with_header(base_header | {"codec": base_header["codec"] | {"bits": 8}}),
        "malformed_header",
        "codec has a field CodecSpec does not know",
    )
    add(
        "local_dp_not_object",
        with_header(base_header | {"local_dp": 1}),
        "malformed_header",
        "local_dp must be an object or null",
    )
    wrong = [dict(s) for s in SPECS]
    wrong[2]["shape"] = [800]
    add(
        "wrong_shape",
        base,
        "shape_mismatch",
        "decoded against a model whose last tensor has 800 values: the body holds the "
        "payloads of 600",
        specs=wrong,
    )
    add(
        "body_size_differs",
        with_header(base_header, raw=base_body + b"\0"),
        "shape_mismatch",
        "the zstd frame declares one byte more than the shapes and codec need",
    )
    add(
        "body_not_zstd",
        frame(b"EFLU", _canonical(base_header), b"", body=b"not zstd"),
        "bad_payload",
        "body is not a zstd frame",
    )

    def patched(header: dict, body: bytes, at: int, value: bytes) -> bytes:
        """An update framed under `header` whose body is `body` with `value` at byte `at`."""
        raw = bytearray(body)
        raw[at : at + len(value)] = value
        return frame(b"EFLU", _canonical(header), bytes(raw))

    f32 = struct.Struct("<f").pack
    nan_second = patched(f32_header, f32_body, 4, f32(float("nan")))
    add("non_finite_value", nan_second, "non_finite", "float32 codec, the second value is NaN")
    inf_first = patched(f32_header, f32_body, 0, f32(float("inf")))
    add("infinite_value", inf_first, "non_finite", "float32 codec, the first value is +inf")
    # (a NaN or infinite scale is bad_payload on main and non_finite once the bounded
    # contributions change is merged: its vector waits for that)
    negative = patched(int8_header, int8_body, 0, f32(-1.0))
    add("scale_negative", negative, "bad_payload", "int8 codec, the first chunk scale is -1")
    # after two 4-byte scales: two 4-bit levels of 15 (only 0..14 exist)
    level_15 = patched(int4_header, int4_body, 8, b"\xff")
    why = "int4 codec, a level of 15 (levels are 0..14)"
    add("level_out_of_range", level_15, "bad_payload", why)
    # top-k "blocks" body of dense.weight: counts u16 x 2 | offsets u8 x 15 | ...
    counts_body = bytearray(base_body)
    counts_body[0] += 1
    add(
        "block_counts_sum",
        with_header(base_header, raw=bytes(counts_body)),
        "bad_payload",
        "dense.weight's block counts add up to k + 1",
    )
    k_first = struct.unpack_from("<H", base_body, 0)[0]
    order_body = bytearray(base_body)
    order_body[4], order_body[5] = order_body[5], order_body[4]  # first two offsets swapped
    assert k_first >= 2
    add(
        "offsets_not_increasing",
        with_header(base_header, raw=bytes(order_body)),
        "bad_payload",
        "dense.weight's first two offsets swapped",
    )
    gaps = by_name["topk_gaps_int8_nearest"]
    # the second gap 0: a repeated index
    repeated = patched(json.loads(gaps["header"]), bytes.fromhex(gaps["body"]), 4, bytes(4))
    add("gaps_repeated_index", repeated, "bad_payload", "top-k gaps: the second gap is 0")
    model = bytes.fromhex(models()["cases"][0]["message"])
    model_header = json.loads(_header_text(model))
    model_raw = _raw_body(model)
    bad_model = bytearray(model_raw)
    bad_model[0:4] = struct.pack("<f", float("nan"))
    add(
        "model_non_finite",
        frame(b"EFLM", _canonical(model_header), bytes(bad_model), key=None),
        "non_finite",
        "a model whose first parameter is NaN",
        kind="model",
        public_key=None,
    )
    add(
        "model_missing_version",
        frame(b"EFLM", _canonical({"model_id": "vectors-model"}), model_raw, key=None),
        "malformed_header",
        "a model header without model_version",
        kind="model",
        public_key=None,
    )
    return {"cases": cases}


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    u = updates()
    docs = {"updates.json": u, "models.json": models(), "damaged.json": damaged(u["cases"])}
    paths = []
    for name, doc in docs.items():
        path = out / name
        path.write_text(json.dumps(doc, indent=1) + "\n")
        paths.append(path)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE)
    for path in write(parser.parse_args(argv).out):
        print(path)


if __name__ == "__main__":
    main()
