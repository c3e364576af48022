"""The wire format: updates (device -> server) and models (server -> device).

Layout, little-endian:

    magic        4 bytes   b"EFLU" update | b"EFLM" model
    version      u16       FORMAT_VERSION
    flags        u16       bit 0: signed
    header_len   u32       header bytes
    body_len     u32       body bytes
    header       UTF-8 JSON (metadata; for updates also the codec description)
    body         zstd frame: the tensors' payloads in the model's parameter order
    checksum     32 bytes  sha256 of everything before it
    signature    64 bytes  Ed25519 of prefix + header + checksum (when flags bit 0); the
                           checksum binds the body, so signing costs no second pass over it

Tensor payload sizes follow from the parameter shapes and the codec, so the body needs
no framing and a decoder knows every size before it reads or allocates anything.
Decoding checks, in order: sizes against limits, magic, version, checksum, signature,
header fields, then the tensors: the body is decompressed once into a buffer of the
size the shapes imply, and every tensor is validated (layout, scales, finiteness) before
any is handed to a sink or returned.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np
import zstandard

from .body import decode_body
from .codec import CodecSpec, encode_tensor, tensor_seed
from .error_feedback import ErrorFeedback
from .errors import (
    BadChecksum,
    BadMagic,
    BadPayload,
    BadSignature,
    MalformedHeader,
    NonFinite,
    ShapeMismatch,
    TooLarge,
    Truncated,
    UnsupportedVersion,
)
from .signing import SIGNATURE_BYTES, sign, verify
from .transforms import add_gaussian_noise, clip_by_global_norm

FORMAT_VERSION = 1
UPDATE_MAGIC, MODEL_MAGIC = b"EFLU", b"EFLM"
_PREFIX = struct.Struct("<4sHHII")
_CHECKSUM = 32
_SIGNED = 1
_FLOAT32 = CodecSpec()


@dataclass(frozen=True)
class DecodeLimits:
    max_message_bytes: int = 64 * 2**20
    max_header_bytes: int = 64 * 2**10


MAX_EXACT_INT = 2**53  # num_examples and model_version: what a float64 holds exactly
MAX_METRIC = 1e12  # |value| of a metric in update metadata
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_METRIC_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class UpdateMeta:
    """What a device says about its update. num_examples weights it in the average (a
    server caps the weight per task). The idempotency key names one participation: it is
    scoped to (task, device) by the server, so two participations use two keys and a
    retry of one reuses its key."""

    task_id: str
    model_id: str
    model_version: int
    device_id: str
    idempotency_key: str
    num_examples: int
    metrics: dict = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("task_id", "model_id", "device_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not 0 < len(value) <= 256 or not _utf8(value):
                raise MalformedHeader(f"{name} must be a non-empty UTF-8 string of <= 256 chars")
        if not isinstance(self.idempotency_key, str) or not _KEY.fullmatch(self.idempotency_key):
            raise MalformedHeader("idempotency_key must be 1 to 128 letters, digits or '_.:-'")
        for name, low in (("model_version", 0), ("num_examples", 1)):
            value = getattr(self, name)
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not low <= value <= MAX_EXACT_INT
            ):
                raise MalformedHeader(f"{name} must be an integer in {low}..2^53")
        if (
            not isinstance(self.metrics, dict)
            or len(self.metrics) > 32
            or not all(
                isinstance(k, str) and _METRIC_NAME.fullmatch(k) and _finite_metric(v)
                for k, v in self.metrics.items()
            )
        ):
            raise MalformedHeader(
                f"metrics must map at most 32 names (1 to 64 letters, digits "
                f"or '_.:-') to finite numbers of magnitude <= {MAX_METRIC:g}"
            )


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, which no store or log can hold
        return False
    return True


def _finite_metric(value) -> bool:
    # a float first: a 400-digit integer is finite to Python but not to a float64
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and abs(float(value)) <= MAX_METRIC
    except OverflowError:
        return False


@dataclass(frozen=True)
class UpdatePipeline:
    """What a device does to a delta before it leaves: clip its L2 norm, add local DP
    noise (std = noise_multiplier * clip_norm), encode with `codec`."""

    codec: CodecSpec = _FLOAT32
    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    # zstd level of the body; None: the codec's (CodecSpec.zstd_level: -1 for top-k int8,
    # whose levels Huffman coding barely shrinks, 3 otherwise)
    compression_level: int | None = None

    def __post_init__(self):
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
        if self.noise_multiplier < 0:
            raise ValueError("noise_multiplier must be >= 0")
        if self.noise_multiplier and self.clip_norm is None:
            raise ValueError("local DP noise needs a clip_norm to calibrate it")
        if self.compression_level is None:
            object.__setattr__(self, "compression_level", self.codec.zstd_level)
        if not -7 <= self.compression_level <= 22:
            raise ValueError(f"compression_level must be in -7..22, got {self.compression_level}")


@dataclass(frozen=True)
class DecodedUpdate:
    meta: UpdateMeta
    codec: CodecSpec
    local_dp: dict | None
    tensors: Mapping[str, np.ndarray] | None  # None when a sink received them


def _specs(specs: Iterable) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for s in specs:
        name, shape = (s["name"], s["shape"]) if isinstance(s, dict) else (s.name, s.shape)
        out.append((name, tuple(int(d) for d in shape)))
    return out


# -- encoding ---------------------------------------------------------------------------
def encode_update(
    delta: dict[str, np.ndarray],
    specs: Iterable,
    meta: UpdateMeta,
    pipeline: UpdatePipeline,
    *,
    signing_key: bytes,
    rng: np.random.Generator,
    feedback: ErrorFeedback | None = None,
) -> bytes:
    """Encode and sign a delta (not mutated). With `feedback`, its residual is added
    first and replaced by this round's compression error."""
    meta.validate()
    specs = _specs(specs)
    _check_names(delta, specs)
    for name, value in delta.items():
        _check_finite(name, value)  # a diverged model must not leave the device
    work = feedback.corrected(delta) if feedback is not None else delta
    local_dp = None
    if pipeline.clip_norm is not None:
        work, norm = clip_by_global_norm(work, pipeline.clip_norm)
        if pipeline.noise_multiplier:
            work = add_gaussian_noise(work, pipeline.noise_multiplier * pipeline.clip_norm, rng)
            local_dp = {
                "clip_norm": pipeline.clip_norm,
                "noise_multiplier": pipeline.noise_multiplier,
            }
    seed = int(rng.integers(0, 2**62))
    payloads, reconstructed = [], {}
    for i, (name, shape) in enumerate(specs):
        payload, rec = encode_tensor(work[name], pipeline.codec, tensor_seed(seed, i), rng)
        payloads.append(payload)
        reconstructed[name] = rec
    if feedback is not None:
        feedback.remember(work, reconstructed)
    header = {
        "meta": meta.__dict__,
        "codec": pipeline.codec.to_json(),
        "seed": seed,
        "local_dp": local_dp,
    }
    return _frame(UPDATE_MAGIC, header, payloads, signing_key, pipeline.compression_level)


def encode_parameters(
    parameters: dict[str, np.ndarray],
    specs: Iterable,
    model_id: str,
    model_version: int,
    signing_key: bytes | None = None,
) -> bytes:
    """A model download: float32 parameters in spec order, checksummed, optionally signed."""
    specs = _specs(specs)
    _check_names(parameters, specs)
    payloads = [np.ascontiguousarray(parameters[n], "<f4").tobytes() for n, _ in specs]
    header = {"model_id": model_id, "model_version": int(model_version)}
    return _frame(MODEL_MAGIC, header, payloads, signing_key)


def _frame(
    magic: bytes,
    header: dict,
    payloads: list[bytes],
    signing_key: bytes | None,
    compression_level: int = 3,
) -> bytes:
    body = zstandard.ZstdCompressor(level=compression_level).compress(b"".join(payloads))
    return _seal(magic, header, body, signing_key)


def _seal(magic: bytes, header: dict, body: bytes, signing_key: bytes | None) -> bytes:
    """The frame around an already compressed body: prefix, header, checksum, signature."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    flags = _SIGNED if signing_key is not None else 0
    data = _PREFIX.pack(magic, FORMAT_VERSION, flags, len(head), len(body)) + head + body
    checksum = hashlib.sha256(data).digest()
    data += checksum
    if signing_key is not None:
        data += sign(signing_key, data[: _PREFIX.size + len(head)] + checksum)
    return data


def reseal_update(data: bytes, meta: UpdateMeta, signing_key: bytes) -> bytes:
    """The same encoded tensors under other metadata, signed by `signing_key`: for load
    generators and tests that cannot afford to encode a delta per message."""
    meta.validate()
    frame = _unframe(data, UPDATE_MAGIC, DecodeLimits())
    header = frame.header | {"meta": dict(meta.__dict__)}
    return _seal(UPDATE_MAGIC, header, bytes(frame.body), signing_key)  # the body as it is


# -- decoding ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Frame:
    header: dict
    body: bytes
    signed_part: bytes
    signature: bytes | None


def _unframe(data: bytes, magic: bytes, limits: DecodeLimits) -> _Frame:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadPayload("a message is bytes")
    data = bytes(data)
    if len(data) > limits.max_message_bytes:
        raise TooLarge(f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")
    if len(data) < _PREFIX.size + _CHECKSUM:
        raise Truncated(f"message of {len(data)} bytes is shorter than its fixed fields")
    got_magic, version, flags, head_len, body_len = _PREFIX.unpack_from(data)
    if got_magic != magic:
        raise BadMagic(f"magic {got_magic!r}, expected {magic!r}")
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(f"format version {version}; this side reads {FORMAT_VERSION}")
    if flags & ~_SIGNED:
        raise MalformedHeader(f"unknown flags {flags:#x}")
    if head_len > limits.max_header_bytes:
        raise TooLarge(f"header of {head_len} bytes exceeds {limits.max_header_bytes}")
    end = _PREFIX.size + head_len + body_len
    expected = end + _CHECKSUM + (SIGNATURE_BYTES if flags & _SIGNED else 0)
    if len(data) < expected:
        raise Truncated(f"message is {len(data)} bytes, its lengths say {expected}")
    if len(data) > expected:
        raise BadPayload(f"{len(data) - expected} unexpected bytes after the message")
    if hashlib.sha256(memoryview(data)[:end]).digest() != data[end : end + _CHECKSUM]:
        raise BadChecksum("checksum mismatch: the message was altered or damaged")
    try:
        header = json.loads(data[_PREFIX.size : _PREFIX.size + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedHeader(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise MalformedHeader("header must be a JSON object")
    signed_part = data[: _PREFIX.size + head_len] + data[end : end + _CHECKSUM]
    signature = data[end + _CHECKSUM :] if flags & _SIGNED else None
    return _Frame(header, memoryview(data)[_PREFIX.size + head_len : end], signed_part, signature)


@dataclass(frozen=True)
class CheckedUpdate:
    """An update whose sizes, magic, version and checksum were checked and whose metadata
    was read; its tensors are not decoded yet. Pass it to decode_update to decode
    without hashing the bytes a second time."""

    meta: UpdateMeta
    frame: _Frame


def open_update(data: bytes, limits: DecodeLimits = DecodeLimits()) -> CheckedUpdate:
    """Check an update's envelope and read its metadata, without decoding any tensor:
    the server authorizes before paying for decompression."""
    frame = _unframe(data, UPDATE_MAGIC, limits)
    return CheckedUpdate(_update_meta(frame.header), frame)


def peek_update(data: bytes, limits: DecodeLimits = DecodeLimits()) -> UpdateMeta:
    return open_update(data, limits).meta


def decode_update(
    data: bytes | CheckedUpdate,
    specs: Iterable,
    *,
    public_key: bytes | None,
    sink: Callable[[str, np.ndarray], None] | None = None,
    limits: DecodeLimits = DecodeLimits(),
    keep_parts: bool = False,
) -> DecodedUpdate:
    """Verify and decode an update. With `public_key` the signature is required and
    checked before any tensor is read. Tensors go to `sink(name, array)` one at a time
    (nothing is kept), or are returned in `tensors`: dense float32 arrays, or with
    `keep_parts` DecodedTensor parts for consumers that fuse dequantization into their
    own pass (for a block-coded int8 body, one JoinedParts: the same Mapping of parts,
    whose arrays are joined). Raises a ProtocolError subclass for any bad input, and
    nothing else."""
    checked = data if isinstance(data, CheckedUpdate) else open_update(data, limits)
    frame, meta = checked.frame, checked.meta
    if public_key is not None:
        if frame.signature is None:
            raise BadSignature("the update is unsigned; this server requires signatures")
        verify(public_key, frame.signed_part, frame.signature)
    codec = CodecSpec.from_json(frame.header.get("codec"))
    seed = frame.header.get("seed")
    if not isinstance(seed, int) or not 0 <= seed < 2**62:
        raise MalformedHeader("seed must be an integer in [0, 2^62)")
    local_dp = frame.header.get("local_dp")
    if local_dp is not None and not isinstance(local_dp, dict):
        raise MalformedHeader("local_dp must be an object or null")
    specs = _specs(specs)
    parts = decode_body(_body(frame.body, specs, codec), codec, specs, seed)
    if keep_parts and sink is None:
        tensors = parts
    else:
        tensors = {} if sink is None else None
        for name, tensor in parts.items():
            array = tensor if keep_parts else tensor.to_dense()
            if sink is None:
                tensors[name] = array
            else:
                sink(name, array)
    return DecodedUpdate(meta, codec, local_dp, tensors)


def _unframe_model(data: bytes, public_key: bytes | None, limits: DecodeLimits) -> _Frame:
    """A model download's frame, its checksum (and with `public_key` its signature)
    checked and its header holding a string model_id and an int model_version."""
    frame = _unframe(data, MODEL_MAGIC, limits)
    if public_key is not None:
        if frame.signature is None:
            raise BadSignature("the model is unsigned")
        verify(public_key, frame.signed_part, frame.signature)
    header = frame.header
    if not isinstance(header.get("model_id"), str) or not isinstance(
        header.get("model_version"), int
    ):
        raise MalformedHeader("a model header has a string model_id and an int model_version")
    return frame


def decode_parameters(
    data: bytes,
    specs: Iterable,
    *,
    public_key: bytes | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> tuple[dict, dict[str, np.ndarray]]:
    """(header {model_id, model_version}, parameters) of a model download."""
    frame = _unframe_model(data, public_key, limits)
    header = frame.header
    params = {}
    for name, shape, payload in _payloads(frame.body, _specs(specs), _FLOAT32):
        params[name] = np.frombuffer(payload, "<f4").astype(np.float32).reshape(shape)
        _check_finite(name, params[name])
    return header, params


def _payloads(body: bytes, specs, codec: CodecSpec):
    """(name, shape, payload bytes) out of the zstd body, each of its exact size."""
    view, offset = _body(body, specs, codec), 0
    for name, shape in specs:
        size = codec.payload_size(math.prod(shape))
        yield name, shape, view[offset : offset + size]
        offset += size


def _body(body: bytes, specs, codec: CodecSpec) -> memoryview:
    """The zstd body decompressed, checked to hold exactly the tensors' payloads."""
    size = _body_size(codec, tuple(shape for _, shape in specs))
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as e:
        raise BadPayload(f"body is not a valid zstd frame: {e}") from None
    if declared != size:  # checked before anything is decompressed
        raise ShapeMismatch(
            f"the body holds {declared} bytes of tensors; the model's shapes and codec need {size}"
        )
    try:  # one allocation of the declared size, then zero-copy slices of it
        raw = _decompressor().decompress(body, max_output_size=declared, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise BadPayload(f"body is not a valid zstd frame: {e}") from None
    if len(raw) != declared:
        raise ShapeMismatch(
            f"the body decompresses to {len(raw)} bytes, its frame declares {declared}"
        )
    return memoryview(raw)


@functools.lru_cache(maxsize=64)  # a few codecs x models per server
def _body_size(codec: CodecSpec, shapes: tuple) -> int:
    return sum(codec.payload_size(math.prod(shape)) for shape in shapes)


_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: a context is not shared between threads, and making one
    per message costs more than decoding a small update's header."""
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def _update_meta(header: dict) -> UpdateMeta:
    doc = header.get("meta")
    fields = (
        "task_id",
        "model_id",
        "model_version",
        "device_id",
        "idempotency_key",
        "num_examples",
        "metrics",
    )
    if not isinstance(doc, dict) or set(doc) != set(fields):
        raise MalformedHeader(f"update metadata must have exactly the fields {fields}")
    meta = UpdateMeta(**doc)
    meta.validate()
    return meta


def _check_names(tensors: dict, specs) -> None:
    names = [n for n, _ in specs]
    if set(tensors) != set(names):
        raise ShapeMismatch(f"tensors {sorted(tensors)} differ from the model's {names}")
    for name, shape in specs:
        if tuple(np.shape(tensors[name])) != shape:
            raise ShapeMismatch(
                f"tensor {name!r} has shape {list(np.shape(tensors[name]))}, "
                f"the model says {list(shape)}"
            )


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise NonFinite(f"tensor {name!r} contains NaN or Inf")
