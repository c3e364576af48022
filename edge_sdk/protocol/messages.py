"""Every JSON exchange between devices, operators and the aggregator, typed once: the
server's handlers, the HTTP transport and the in-process transport all build and read
these classes, so the paths cannot drift, and the OpenAPI document is generated from them.

Each message is a frozen dataclass. `from_json(doc)` checks a parsed JSON value strictly
(types, ranges, lengths, unknown keys) and raises BadField naming the field's path, e.g.
"enroll.public_key"; `to_json()` gives the JSON-ready dict (None-valued optional fields
left out). Parse the text first with `jsontext.parse_json`, which bounds its size.

Field types: str, int, float, bool, bytes (base64 text), X | None, Literal[...],
list[X], tuple[X, Y], dict[str, X], dict[int, X] (keys are decimal text), dict (any JSON
object) and nested messages. Ranges and lengths are declared as JSON-schema keywords in
the field's metadata, `field(metadata={"minimum": 0})`; an int without a declared range
is bounded to +-(2^53 - 1), the integers every JSON reader holds exactly.

Requests refuse unknown keys. Replies (`_open = True`) ignore them, so a newer server
can add a field without breaking older devices.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .errors import BadField

__all__ = [
    "CheckInReply", "CheckInRequest", "EnrollReply", "EnrollRequest", "ErrorBody", "ErrorDetail",
    "EvaluationAck", "EvaluationAssignment", "EvaluationReport", "FailureReport", "HeldoutAck",
    "HeldoutReport", "JSON_INT", "Message", "MetricSums", "SecAggKeys", "SecAggReveal",
    "SecAggShares", "SecAggView", "TaskCreate", "TaskDescription", "TaskList",
    "TrainingAssignment", "UploadAck", "UploadBegin", "UploadSession", "decode_value",
    "encode_value", "parse_bounded_int",
]

JSON_INT = 2**53 - 1
_INDEX_MAX = 2**31 - 1  # secure-aggregation device indices
_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
         "maxLength", "pattern", "minItems", "maxItems", "minProperties", "maxProperties"}


def bounded(default=dataclasses.MISSING, *, description: str | None = None, **schema):
    """A dataclass field with JSON-schema bounds (minimum, maxLength, pattern, ...)."""
    unknown = set(schema) - _KEYS
    if unknown:
        raise TypeError(f"unknown schema keywords {sorted(unknown)}; known: {sorted(_KEYS)}")
    metadata = dict(schema) | ({"description": description} if description else {})
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class Message:
    """The base of the JSON messages. `path` roots the field paths of errors."""

    path: ClassVar[str] = "message"
    _open: ClassVar[bool] = False

    @classmethod
    def from_json(cls, doc: Any, path: str | None = None):
        return decode_value(cls, doc, path or cls.path)

    def to_json(self) -> dict:
        return encode_value(self)

    def check(self) -> None:
        """Checks across fields (BadField); called by from_json after the fields."""


# -- the generic codec ------------------------------------------------------------------------
def decode_value(kind, value: Any, path: str, meta: typing.Mapping = {}):
    """`value` (parsed JSON) checked against the type `kind` and the schema keywords in
    `meta`; dataclasses are built field by field. Raises BadField at the first problem."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"only X | None unions are supported, not {kind}")
        return decode_value(inner[0], value, path, meta)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            raise BadField(path, f"must be one of {list(args)}")
        return value
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, value, path)
    if kind is bool:
        if not isinstance(value, bool):
            raise BadField(path, "must be true or false")
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadField(path, "must be an integer")
        _check_range(value, path, meta, -JSON_INT, JSON_INT)
        return value
    if kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise BadField(path, "must be a finite number")
        _check_range(value, path, meta, None, None)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise BadField(path, "must be a string")
        _check_length(len(value), path, meta, "characters")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise BadField(path, f"must match {meta['pattern']}")
        return value
    if kind is bytes:
        if not isinstance(value, str):
            raise BadField(path, "must be base64 text")
        try:
            data = base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise BadField(path, "must be base64 text") from None
        _check_length(len(data), path, meta, "bytes")
        return data
    if kind is dict or origin is dict:
        if not isinstance(value, dict):
            raise BadField(path, "must be a JSON object")
        _check_count(len(value), path, meta, "minProperties", "maxProperties", "keys")
        if kind is dict:
            return dict(value)
        key_kind, item_kind = args
        return {_decode_key(key_kind, k, path): decode_value(item_kind, v, f"{path}.{k}")
                for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise BadField(path, "must be a JSON array")
        _check_count(len(value), path, meta, "minItems", "maxItems", "items")
        return [decode_value(args[0], v, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list) or len(value) != len(args):
            raise BadField(path, f"must be a JSON array of {len(args)} items")
        return tuple(decode_value(a, v, f"{path}.{i}") for i, (a, v) in enumerate(zip(args, value)))
    raise TypeError(f"{path}: no JSON form for {kind!r}")


def _decode_dataclass(cls, value: Any, path: str):
    if not isinstance(value, dict):
        raise BadField(path, "must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(value) - set(fields)
    if unknown and not getattr(cls, "_open", False):
        name = sorted(unknown)[0]
        raise BadField(f"{path}.{name}", f"unknown field; known: {sorted(fields)}")
    hints = type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadField(f"{path}.{name}", "is required")
            continue
        kwargs[name] = decode_value(hints[name], value[name], f"{path}.{name}", f.metadata)
    try:
        message = cls(**kwargs)
    except (TypeError, ValueError) as e:  # a dataclass that validates in __post_init__
        raise BadField(path, str(e)) from None
    if isinstance(message, Message):
        message.check()
    return message


def _decode_key(kind, key: str, path: str):
    if kind is str:
        return key
    if kind is int:
        return parse_bounded_int(key, f"{path}.{key[:20]}", 0, _INDEX_MAX)
    raise TypeError(f"{path}: object keys are str or int, not {kind!r}")


def _check_range(value, path: str, meta, low, high) -> None:
    low = meta.get("minimum", low)
    high = meta.get("maximum", high)
    if low is not None and value < low or high is not None and value > high:
        raise BadField(path, f"must be in [{low}, {high}]")
    if "exclusiveMinimum" in meta and not value > meta["exclusiveMinimum"]:
        raise BadField(path, f"must be > {meta['exclusiveMinimum']}")
    if "exclusiveMaximum" in meta and not value < meta["exclusiveMaximum"]:
        raise BadField(path, f"must be < {meta['exclusiveMaximum']}")


def _check_length(n: int, path: str, meta, unit: str) -> None:
    _check_count(n, path, meta, "minLength", "maxLength", unit)


def _check_count(n: int, path: str, meta, low: str, high: str, unit: str) -> None:
    if n < meta.get(low, 0) or n > meta.get(high, n):
        raise BadField(path, f"must have {meta.get(low, 0)} to {meta.get(high, 'any number of')} {unit}")


def parse_bounded_int(text: str, path: str, low: int = 0, high: int = JSON_INT) -> int:
    """A query parameter or key: ASCII decimal digits only (no sign, no '²'), within
    [low, high]; BadField otherwise."""
    if not (isinstance(text, str) and 0 < len(text) <= len(str(high)) and text.isascii()
            and text.isdigit()):
        raise BadField(path, f"must be a decimal integer in [{low}, {high}]")
    value = int(text)
    if not low <= value <= high:
        raise BadField(path, f"must be a decimal integer in [{low}, {high}]")
    return value


def encode_value(value: Any) -> Any:
    """The JSON-ready form of a message or a value of a message's field."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.default is None:
                continue
            out[f.name] = encode_value(item)
        return out
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    return value


_HINTS: dict[type, dict] = {}


def type_hints(cls) -> dict:
    """The resolved field types of a dataclass (cached)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


# -- devices --------------------------------------------------------------------------------
_NAME = {"minLength": 1, "maxLength": 128}
_ROUND = {"minimum": 0, "maximum": JSON_INT}


@dataclass(frozen=True)
class EnrollRequest(Message):
    """POST /v1/enroll: a device registers its Ed25519 public key with its population's
    enrollment secret."""

    path = "enroll"
    population: str = bounded(**_NAME)
    secret: str = bounded(minLength=1, maxLength=1024)
    public_key: bytes = bounded(minLength=32, maxLength=32,
                               description="base64 of the raw 32-byte Ed25519 key")


@dataclass(frozen=True)
class EnrollReply(Message):
    path = "enroll_reply"
    _open = True
    device_id: str
    token: str = bounded(description="the bearer token of every later device call")


@dataclass(frozen=True)
class CheckInRequest(Message):
    """POST /v1/checkin: ask for work, for one task or any."""

    path = "checkin"
    task_id: str | None = bounded(None, **_NAME)
    eligibility: dict[str, int] = bounded({}, maxProperties=64, description=(
        "counts of the reasons this device was ineligible since it last checked in"))
    sdk_version: str | None = bounded(None, maxLength=64)
    models: list[str] | None = bounded(None, maxItems=64)


@dataclass(frozen=True)
class TrainingAssignment(Message):
    path = "assignment"
    _open = True
    task_id: str
    round_id: int = bounded(**_ROUND)
    model_version: int = bounded(**_ROUND)
    deadline: float = bounded(description="server clock, seconds")
    model_id: str
    plan: dict = bounded(description="local training: epochs, batch_size, lr, max_steps")
    secagg: dict | None = bounded(None, description=(
        "secure aggregation settings (clip, frac_bits, max_examples, ...); null: send a "
        "signed update"))


@dataclass(frozen=True)
class EvaluationAssignment(Message):
    path = "evaluation"
    _open = True
    task_id: str
    model_version: int = bounded(**_ROUND)
    deadline: float
    model_id: str


@dataclass(frozen=True)
class CheckInReply(Message):
    """Exactly one of: an assignment, an evaluation, or a time to come back at."""

    path = "checkin_reply"
    _open = True
    assignment: TrainingAssignment | None = None
    evaluation: EvaluationAssignment | None = None
    retry_at: float | None = None
    retry_after_s: float | None = bounded(None, minimum=0)

    def check(self) -> None:
        given = [self.assignment is not None, self.evaluation is not None,
                 self.retry_at is not None]
        if sum(given) != 1:
            raise BadField(self.path, "holds exactly one of assignment, evaluation, retry_at")


@dataclass(frozen=True)
class UploadAck(Message):
    """An update's acknowledgement: `accepted`, or `duplicate` (this update was counted
    already: a retry)."""

    path = "upload_ack"
    _open = True
    status: Literal["accepted", "duplicate"]
    weight: float | None = None
    staleness: int | None = bounded(None, minimum=0)
    version: int | None = bounded(None, minimum=0)
    aggregated_into: int | None = None


@dataclass(frozen=True)
class UploadBegin(Message):
    """POST /v1/tasks/{task_id}/uploads: start a resumable upload."""

    path = "upload_begin"
    size: int = bounded(minimum=1, maximum=2**40, description="bytes of the whole update")
    sha256: str = bounded(pattern="^[0-9a-f]{64}$", description="lowercase hex")


@dataclass(frozen=True)
class UploadSession(Message):
    path = "upload_session"
    _open = True
    upload_id: str
    received: int = bounded(minimum=0)
    size: int = bounded(minimum=0)


@dataclass(frozen=True)
class MetricSums(Message):
    """Sums over the device's local examples; at least one."""

    path = "sums"
    loss_sum: float | None = bounded(None, minimum=0)
    correct: float | None = bounded(None, minimum=0)
    correct_top3: float | None = bounded(None, minimum=0)
    count: float | None = bounded(None, minimum=0)

    def check(self) -> None:
        if not self.to_json():
            raise BadField(self.path, "needs at least one of loss_sum, correct, correct_top3, count")


@dataclass(frozen=True)
class EvaluationReport(Message):
    """POST /v1/tasks/{task_id}/evaluations: federated evaluation of one model version."""

    path = "evaluation_report"
    model_version: int = bounded(**_ROUND)
    sums: MetricSums


@dataclass(frozen=True)
class EvaluationAck(Message):
    path = "evaluation_ack"
    _open = True
    status: Literal["recorded", "duplicate"]


@dataclass(frozen=True)
class FailureReport(Message):
    """POST /v1/tasks/{task_id}/failures: this device gave up its assignment."""

    path = "failure"
    reason: str = bounded(minLength=1, maxLength=256, description="a short code, e.g. not_charging")


# -- secure aggregation ----------------------------------------------------------------------
_SHARE_DIGITS = 157  # decimal digits of a number below secagg.PRIME = 2^521 - 1


@dataclass(frozen=True)
class SecAggKeys(Message):
    """Step 0: two X25519 public keys."""

    path = "secagg_keys"
    round_id: int = bounded(**_ROUND)
    c_public: bytes = bounded(minLength=32, maxLength=32)
    s_public: bytes = bounded(minLength=32, maxLength=32)


@dataclass(frozen=True)
class SecAggShares(Message):
    """Step 1: an encrypted Shamir share for every peer, keyed by the peer's index."""

    path = "secagg_shares"
    round_id: int = bounded(**_ROUND)
    shares: dict[int, bytes] = bounded(maxProperties=10_000)


@dataclass(frozen=True)
class SecAggReveal(Message):
    """Step 3: per peer index, ["b", share] for a survivor's self-mask or ["s", share]
    for a dropped device's key, the share in decimal."""

    path = "secagg_reveal"
    round_id: int = bounded(**_ROUND)
    reveal: dict[int, tuple[Literal["b", "s"], str]] = bounded(maxProperties=10_000)

    def check(self) -> None:
        for index, (_, share) in self.reveal.items():
            if not (0 < len(share) <= _SHARE_DIGITS and share.isascii() and share.isdigit()):
                raise BadField(f"{self.path}.reveal.{index}.1",
                               f"must be a decimal share of at most {_SHARE_DIGITS} digits")

    def shares(self) -> dict[int, tuple[str, int]]:
        return {index: (kind, int(share)) for index, (kind, share) in self.reveal.items()}


@dataclass(frozen=True)
class SecAggView(Message):
    """This device's view of the secure round: what it needs for its next step."""

    path = "secagg_view"
    _open = True
    phase: Literal["advertising", "sharing", "masking", "unmasking", "done", "failed"]
    retry_after_s: float = bounded(minimum=0)
    index: int | None = None
    threshold: int | None = None
    peers: dict[int, tuple[bytes, bytes]] | None = bounded(None, description=(
        "index -> [c_public, s_public]"))
    shares: dict[int, bytes] | None = bounded(None, description="index -> encrypted share for you")
    survivors: list[int] | None = None
    dropped: list[int] | None = None
    reason: str | None = None


# -- operators -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskCreate(Message):
    """POST /v1/admin/tasks. `settings` is checked by the aggregator's TaskSettings."""

    path = "task"
    task_id: str = bounded(**_NAME)
    bundle_dir: str = bounded(minLength=1, maxLength=4096)
    settings: dict | None = None


@dataclass(frozen=True)
class TaskDescription(Message):
    path = "task_description"
    _open = True
    task_id: str
    mode: str
    model_id: str
    version: int
    round: int
    phase: str
    paused: bool
    in_flight: int
    accepted: int
    funnel: dict
    settings: dict
    led_here: bool


@dataclass(frozen=True)
class TaskList(Message):
    path = "tasks"
    _open = True
    tasks: list[TaskDescription]


@dataclass(frozen=True)
class HeldoutReport(Message):
    """A model version's metrics on the server's held-out set (server_eval/ posts them)."""

    path = "heldout"
    metrics: dict[str, float] = bounded(minProperties=1, maxProperties=32)

    def check(self) -> None:
        for name in self.metrics:
            if not 0 < len(name) <= 64:
                raise BadField(f"{self.path}.metrics", "names have 1 to 64 characters")


@dataclass(frozen=True)
class HeldoutAck(Message):
    path = "heldout_ack"
    _open = True
    status: Literal["recorded", "duplicate"]


@dataclass(frozen=True)
class ErrorDetail(Message):
    """Other keys say more: field (a BadField's path), retry_after_s, received, ..."""

    path = "error"
    _open = True
    code: str
    message: str


@dataclass(frozen=True)
class ErrorBody(Message):
    """Every 4xx and 5xx answer of the aggregator."""

    path = "error_body"
    _open = True
    error: ErrorDetail
