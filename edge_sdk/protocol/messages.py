"""Every JSON exchange between devices, operators and the aggregator, typed once: the
server's handlers, the HTTP transport and the in-process transport all build and read
these classes, so the paths cannot drift, and the OpenAPI document is generated from them.

Each message is a frozen dataclass (typedjson.py says how fields are typed and bounded).
`from_json(doc)` checks a parsed JSON value strictly and raises BadField naming the
field's path, e.g. "enroll.public_key"; `to_json()` gives the JSON-ready dict. Parse the
text first with `jsontext.parse_json`, which bounds its size. Requests refuse unknown
keys; replies ignore them.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from .errors import BadField
from .typedjson import (
    JSON_INT,
    Message,
    bounded,
    decode_value,
    encode_value,
    parse_bounded_int,
    type_hints,
)

__all__ = [
    "BUFFER_POLICIES",
    "AssignedPlan",
    "BufferPolicy",
    "CheckInReply",
    "CheckInRequest",
    "EnrollReply",
    "EnrollRequest",
    "ErrorBody",
    "ErrorDetail",
    "EvaluationAck",
    "EvaluationAssignment",
    "EvaluationReport",
    "FailureReport",
    "HeldoutAck",
    "HeldoutReport",
    "JSON_INT",
    "Message",
    "MetricSums",
    "RecordAck",
    "SecAggKeys",
    "SecAggReveal",
    "SecAggShares",
    "SecAggView",
    "TaskCreate",
    "TaskDescription",
    "TaskList",
    "TrainingAssignment",
    "UploadAck",
    "UploadBegin",
    "UploadSession",
    "bounded",
    "decode_value",
    "encode_value",
    "parse_bounded_int",
    "type_hints",
]

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
    public_key: bytes = bounded(
        minLength=32, maxLength=32, description="base64 of the raw 32-byte Ed25519 key"
    )


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
    eligibility: dict[str, int] = bounded(
        {},
        maxProperties=64,
        description=("counts of the reasons this device was ineligible since it last checked in"),
    )
    sdk_version: str | None = bounded(None, maxLength=64)
    models: list[str] | None = bounded(None, maxItems=64)


BufferPolicy = Literal["average", "local"]
"""What federated training does with a bundle's buffers (BatchNorm running statistics;
docs/bundle-format.md): "average" them like parameters, or keep each device's own values
on the device, "local" (FedBN, Li et al. 2021, "FedBN: Federated Learning on Non-IID
Features via Local Batch Normalization")."""
BUFFER_POLICIES: tuple[str, ...] = typing.get_args(BufferPolicy)


@dataclass(frozen=True)
class AssignedPlan(Message):
    """What the device trains for one assignment: the task's `plan` settings (the
    aggregator's PlanSettings, which say how to fix a bad value, hold the same fields)."""

    path = "plan"
    _open = True
    epochs: int = bounded(1, minimum=1)
    batch_size: int = bounded(16, minimum=1)
    lr: float = bounded(0.1, exclusiveMinimum=0)
    max_steps: int | None = bounded(None, minimum=1)
    buffers: BufferPolicy = bounded(
        "average",
        description=(
            "average: start from the server's buffers, send their deltas; local: keep this "
            "device's own buffer values between participations and send zero deltas for them"
        ),
    )


@dataclass(frozen=True)
class TrainingAssignment(Message):
    path = "assignment"
    _open = True
    task_id: str
    round_id: int = bounded(**_ROUND)
    model_version: int = bounded(**_ROUND)
    deadline: float = bounded(description="server clock, seconds")
    model_id: str
    plan: AssignedPlan
    secagg: dict | None = bounded(
        None,
        description=(
            "secure aggregation settings (clip, frac_bits, max_examples, ...); null: send a "
            "signed update"
        ),
    )


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

    def check(self, path: str) -> None:
        given = [
            self.assignment is not None,
            self.evaluation is not None,
            self.retry_at is not None,
        ]
        if sum(given) != 1:
            raise BadField(path, "holds exactly one of assignment, evaluation, retry_at")


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

    def check(self, path: str) -> None:
        if not self.to_json():
            raise BadField(path, "needs at least one of loss_sum, correct, correct_top3, count")


@dataclass(frozen=True)
class EvaluationReport(Message):
    """POST /v1/tasks/{task_id}/evaluations: federated evaluation of one model version."""

    path = "evaluation_report"
    model_version: int = bounded(**_ROUND)
    sums: MetricSums


@dataclass(frozen=True)
class RecordAck(Message):
    """The reply to a report the server records once: `duplicate` when it had it."""

    _open = True
    status: Literal["recorded", "duplicate"]


@dataclass(frozen=True)
class EvaluationAck(RecordAck):
    path = "evaluation_ack"


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

    def check(self, path: str) -> None:
        for index, (_, share) in self.reveal.items():
            if not (0 < len(share) <= _SHARE_DIGITS and share.isascii() and share.isdigit()):
                raise BadField(
                    f"{path}.reveal.{index}[1]",
                    f"must be a decimal share of at most {_SHARE_DIGITS} digits",
                )

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
    peers: dict[int, tuple[bytes, bytes]] | None = bounded(
        None, description=("index -> [c_public, s_public]")
    )
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

    def check(self, path: str) -> None:
        for name in self.metrics:
            if not 0 < len(name) <= 64:
                raise BadField(f"{path}.metrics", "names have 1 to 64 characters")


@dataclass(frozen=True)
class HeldoutAck(RecordAck):
    path = "heldout_ack"


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
