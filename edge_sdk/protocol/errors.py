"""Errors of the wire format. Every decoding failure is a ProtocolError with a stable
`code`, which the aggregator maps to HTTP 400 and a device maps to "drop this message".

    ProtocolError (ValueError)
    ├── Truncated            code "truncated"            fewer bytes than the layout needs
    ├── BadMagic             code "bad_magic"            not an edge-fl message of this kind
    ├── UnsupportedVersion   code "unsupported_version"  a format version we do not read
    ├── TooLarge             code "too_large"            over a size limit (checked first)
    ├── MalformedHeader      code "malformed_header"     header JSON missing/typed wrong
    ├── BadChecksum          code "bad_checksum"         bytes changed in transit
    ├── BadSignature         code "bad_signature"        not signed by the device's key
    ├── ShapeMismatch        code "shape_mismatch"       names/shapes differ from the model
    ├── NonFinite            code "non_finite"           NaN or Inf in a tensor
    ├── BadPayload           code "bad_payload"          tensor bytes inconsistent
    └── MalformedJson        code "malformed_json"       not strict UTF-8 JSON (NaN, lone
        │                                                surrogates and bad escapes included)
        ├── JsonLimitExceeded  code "json_limit"         over a size, depth, string or number
        │                                                length limit (details: limit, max)
        └── BadField         code "bad_field"            a JSON document's fields unknown,
                                                         missing, of the wrong type or out
                                                         of range (typedjson.py)
                                                         (details: field, its path; with
                                                         several, errors: every one)

MalformedJson, JsonLimitExceeded and BadField carry `details`, a JSON-ready dict the
aggregator adds to its error body.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    code = "protocol_error"


class Truncated(ProtocolError):
    code = "truncated"


class BadMagic(ProtocolError):
    code = "bad_magic"


class UnsupportedVersion(ProtocolError):
    code = "unsupported_version"


class TooLarge(ProtocolError):
    code = "too_large"


class MalformedHeader(ProtocolError):
    code = "malformed_header"


class BadChecksum(ProtocolError):
    code = "bad_checksum"


class BadSignature(ProtocolError):
    code = "bad_signature"


class ShapeMismatch(ProtocolError):
    code = "shape_mismatch"


class NonFinite(ProtocolError):
    code = "non_finite"


class BadPayload(ProtocolError):
    code = "bad_payload"


class MalformedJson(ProtocolError):
    code = "malformed_json"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


class JsonLimitExceeded(MalformedJson):
    code = "json_limit"


class BadField(MalformedJson):
    """A field of a JSON document (a message, the task settings, the server config) that
    cannot be used as given. `field` is its path, e.g. "enroll.public_key" or
    "settings.robust.trim" ("" for the document as a whole); the aggregator answers 400
    with it.

    One BadField may name several bad fields (`BadField.joined`): `errors` holds each as
    a one-field BadField (`(self,)` for a one-field error), `field` is the first one's
    path, and `details["errors"]` lists them all as {"field", "message"}. At most
    `LISTED` are kept; `truncated` says whether more were found and left out."""

    code = "bad_field"
    LISTED = 20  # a hostile document names many bad fields; an answer quotes this many

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message, field=field)
        self.field, self.message = field, message
        self.errors: tuple[BadField, ...] = (self,)
        self.truncated = False

    @classmethod
    def joined(cls, errors, truncated: bool = False) -> BadField:
        """One error naming every field of `errors` (BadFields, each possibly joined
        already), in their order; the one error itself when there is one."""
        flat = [one for e in errors for one in e.errors]
        truncated = truncated or any(e.truncated for e in errors) or len(flat) > cls.LISTED
        flat = flat[: cls.LISTED]
        if not flat:
            raise ValueError("BadField.joined needs at least one error")
        if len(flat) == 1 and not truncated:
            return flat[0]
        more = f"; (stopped looking after {len(flat)})" if truncated else ""
        text = f"{len(flat)} bad fields: " + "; ".join(str(e) for e in flat) + more
        error = cls(flat[0].field, text)
        MalformedJson.__init__(
            error,
            text,
            field=flat[0].field,
            errors=[{"field": e.field, "message": e.message} for e in flat],
        )
        error.errors, error.truncated = tuple(flat), truncated
        return error

    def under(self, prefix: str) -> BadField:
        """The same error, its paths prefixed with the enclosing object's path."""
        if not prefix:
            return self
        if len(self.errors) > 1 or self.truncated:
            return BadField.joined([e.under(prefix) for e in self.errors], self.truncated)
        return BadField(f"{prefix}.{self.field}" if self.field else prefix, self.message)
