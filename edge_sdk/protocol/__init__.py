"""The wire format and update codecs: the only place in edge-fl that knows byte layouts.

stdlib + numpy + zstandard + cryptography + PyNaCl (libsodium) only; the aggregator imports
it too. The JSON messages are typed in `messages` (import it as a module: its names
are the API's vocabulary, not the wire format's).
"""

from .body import JoinedBatch, JoinedParts
from .codec import INDEX_BLOCK, CodecSpec, DecodedTensor, block_positions, encode_tensor
from .error_feedback import ErrorFeedback
from .errors import (
    BadChecksum,
    BadField,
    BadMagic,
    BadPayload,
    BadSignature,
    JsonLimitExceeded,
    MalformedHeader,
    MalformedJson,
    NonFinite,
    ProtocolError,
    ShapeMismatch,
    TooLarge,
    Truncated,
    UnsupportedVersion,
)
from .jsontext import JsonLimits, parse_json
from .message import (
    FORMAT_VERSION,
    CheckedUpdate,
    DecodedUpdate,
    DecodeLimits,
    UpdateMeta,
    UpdatePipeline,
    decode_parameters,
    decode_update,
    encode_parameters,
    encode_update,
    open_update,
    peek_update,
)
from .model_encoding import COMPACT_ENCODING, ENCODINGS, decode_model, encode_model
from .secagg import FixedPoint, SecAggClient, SecAggServer
from .signing import generate_signing_key, public_key_of, sign, verify
from .transforms import clip_by_global_norm, global_norm

DEFAULT_CODEC = CodecSpec(quantizer="int8", sparsifier="topk", fraction=0.05, index_coding="blocks")
"""The default for the keyboard model: the 5% largest coordinates, int8 with per-chunk
scales, their positions as a count per 256-coordinate block and a byte each, with the
device's error feedback carrying the rest to the next round (sparsified SGD with memory,
Stich et al. 2018; Aji & Heafield 2017). 1-bit sign codes are smaller still but far
lossier per round, too lossy a default before the simulator measures its accuracy cost
(sizes and errors: bench/codec_bench.py, docs/benchmarks.md)."""

__all__ = [
    "BadChecksum",
    "BadField",
    "BadMagic",
    "BadPayload",
    "BadSignature",
    "COMPACT_ENCODING",
    "CheckedUpdate",
    "CodecSpec",
    "DEFAULT_CODEC",
    "DecodeLimits",
    "DecodedTensor",
    "DecodedUpdate",
    "ENCODINGS",
    "ErrorFeedback",
    "FORMAT_VERSION",
    "FixedPoint",
    "INDEX_BLOCK",
    "JoinedBatch",
    "JoinedParts",
    "JsonLimitExceeded",
    "JsonLimits",
    "MalformedHeader",
    "MalformedJson",
    "NonFinite",
    "ProtocolError",
    "SecAggClient",
    "SecAggServer",
    "ShapeMismatch",
    "TooLarge",
    "Truncated",
    "UnsupportedVersion",
    "UpdateMeta",
    "UpdatePipeline",
    "block_positions",
    "clip_by_global_norm",
    "decode_model",
    "decode_parameters",
    "decode_update",
    "encode_model",
    "encode_parameters",
    "encode_tensor",
    "encode_update",
    "generate_signing_key",
    "global_norm",
    "open_update",
    "parse_json",
    "peek_update",
    "public_key_of",
    "sign",
    "verify",
]
