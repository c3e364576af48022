"""The aggregator's errors and the one table that maps them to HTTP statuses.

    AggregatorError
    ├── BadRequest (ValueError)            400  malformed JSON or fields; wire errors too
    │   ├── UpdateNotFinite                400  an update holds NaN or Inf
    │   └── UpdateNormExceeded             400  over the task's max_update_norm
    ├── Unauthorized (PermissionError)     401  no or unknown credentials
    ├── Forbidden (PermissionError)        403  credentials of the wrong kind or population
    │   └── EnrollmentClosed               403  no enrollment secret configured
    ├── NotFound (KeyError)                404  unknown task, version or upload
    │   └── UploadExpired                  410  a resumable upload outlived its session
    ├── BodyTimeout (TimeoutError)         408  the body did not arrive within its deadline
    ├── StaleVersion (ValueError)          409  computed from an old model (says current)
    ├── RoundClosed (RuntimeError)         409  the round/buffer no longer takes updates
    ├── NotSelected (PermissionError)      403  this device holds no assignment
    ├── TaskPaused (RuntimeError)          409  the task is paused
    ├── TaskFailed (RuntimeError)          409  the task's stored state no longer loads
    ├── UploadOffsetMismatch (ValueError)  409  a chunk out of order (says bytes received)
    ├── PayloadTooLarge (ValueError)       413  over the body size cap
    │   └── UploadQuotaBytes               413  a device's open uploads would hold too much
    ├── LengthRequired (ValueError)        411  a body without a declared Content-Length
    ├── UnsupportedEncoding (ValueError)   415  a Content-Encoding other than identity
    ├── RateLimited (RuntimeError)         429  too many requests (says when to retry)
    │   └── UploadQuotaSessions            429  too many open uploads of one device
    ├── NotLeader (RuntimeError)           503  another process runs the task's coordinator
    │                                            and cannot be reached now (says when to retry)
    └── StoreUnavailable (ConnectionError) 503  the shared database is unreachable (ditto)

Domain errors know nothing of HTTP; `STATUS` and `status_of` are used only by the
app's error middleware. Wire-format errors (edge_sdk.protocol.ProtocolError) map to 400
with their own code.
"""

from __future__ import annotations

from edge_sdk.protocol import ProtocolError


class AggregatorError(Exception):
    code = "error"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


class BadRequest(AggregatorError, ValueError):
    code = "bad_request"


class UpdateNotFinite(BadRequest):
    code = "update_not_finite"


class UpdateNormExceeded(BadRequest):
    code = "update_norm_exceeded"


class Unauthorized(AggregatorError, PermissionError):
    code = "unauthorized"


class Forbidden(AggregatorError, PermissionError):
    code = "forbidden"


class EnrollmentClosed(Forbidden):
    code = "enrollment_closed"


class NotFound(AggregatorError, KeyError):
    code = "not_found"

    def __str__(self):  # KeyError would quote the message
        return self.args[0]


class StaleVersion(AggregatorError, ValueError):
    code = "stale_version"


class RoundClosed(AggregatorError, RuntimeError):
    code = "round_closed"


class NotSelected(AggregatorError, PermissionError):
    code = "not_selected"


class TaskPaused(AggregatorError, RuntimeError):
    code = "task_paused"


class TaskFailed(AggregatorError, RuntimeError):
    code = "task_failed"


class UploadOffsetMismatch(AggregatorError, ValueError):
    code = "upload_offset_mismatch"


class PayloadTooLarge(AggregatorError, ValueError):
    code = "payload_too_large"


class UploadQuotaBytes(PayloadTooLarge):
    code = "upload_quota_bytes"


class LengthRequired(AggregatorError, ValueError):
    code = "length_required"


class UnsupportedEncoding(AggregatorError, ValueError):
    code = "unsupported_content_encoding"


class BodyTimeout(AggregatorError, TimeoutError):
    code = "body_timeout"


class UploadExpired(NotFound):
    code = "upload_expired"


class RateLimited(AggregatorError, RuntimeError):
    code = "rate_limited"


class UploadQuotaSessions(RateLimited):
    code = "upload_quota_sessions"


class NotLeader(AggregatorError, RuntimeError):
    code = "not_leader"


class StoreUnavailable(AggregatorError, ConnectionError):
    code = "store_unavailable"


STATUS: dict[type, int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    StaleVersion: 409,
    RoundClosed: 409,
    NotSelected: 403,
    TaskPaused: 409,
    TaskFailed: 409,
    UploadOffsetMismatch: 409,
    PayloadTooLarge: 413,
    LengthRequired: 411,
    UnsupportedEncoding: 415,
    BodyTimeout: 408,
    UploadExpired: 410,
    RateLimited: 429,
    NotLeader: 503,
    StoreUnavailable: 503,
    ProtocolError: 400,
}


def status_of(error: Exception) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def code_of(error: Exception) -> str:
    return getattr(error, "code", "internal_error")
