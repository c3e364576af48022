"""The aggregator process's settings, built once at the entry point (`edge-fl serve`).

`ServerConfig.from_json` builds it from the serve config file (plus the command line's
flags), refusing unknown keys with their path and the nearest valid name
(`config.heldout.kb.bundel: unknown key; did you mean 'bundle'?`), as task settings do.
There are no built-in secrets: `edge-fl serve` generates an admin token when none is
given, and a server without enrollment secrets enrolls no device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_sdk.protocol.typedjson import BadField, Checks, decode_value, encode_value


@dataclass(frozen=True)
class HeldoutEntry:
    """A held-out evaluator beside the server: the task's model versions evaluated on the
    JSON-lines `examples` with the bundle at `bundle`, polled every `poll_s` seconds."""

    bundle: str
    examples: str
    poll_s: float = 10.0

    def __post_init__(self):
        with Checks(self) as check:
            for name, what in (("bundle", "bundle directory"), ("examples", "JSON-lines file")):
                value = getattr(self, name)
                check.require(
                    isinstance(value, str) and Path(value).exists(),
                    name,
                    f"must name an existing {what}, got {value!r}",
                )
            check.require(
                _number(self.poll_s) and 0 < self.poll_s < 1e6,
                "poll_s",
                f"must be a number of seconds > 0, got {self.poll_s!r}",
            )


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _token_like(value: str) -> bool:
    """Printable ASCII without spaces: it travels in headers and JSON, compared bytewise."""
    return isinstance(value, str) and value.isascii() and value.isprintable() and " " not in value


@dataclass(frozen=True)
class ServerConfig:
    """Built once at the entry point; validated here."""

    data_dir: str
    admin_token: str
    # {population: secret}; empty: enrollment is refused (403 enrollment_closed)
    enrollment_secrets: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int = 32 * 2**20
    rate_per_s: float = 20.0
    burst: int = 40
    tick_interval_s: float = 1.0
    # fault injection for crash tests: the process dies (as with kill -9) the n-th time it
    # reaches the named point of aggregator.store.CRASH_POINTS, e.g. {"model_file_written": 2}
    crash_at: dict[str, int] = field(default_factory=dict)
    # PostgreSQL shared by several aggregator processes (None: SQLite + files in data_dir)
    store_url: str | None = None
    # where the other processes reach this one (`edge-fl serve` fills in the bound address)
    advertise_url: str | None = None
    forward_timeout_s: float = 60.0
    # server-side held-out evaluation per task; each runs as its own process (server_eval/),
    # started and stopped with the app
    heldout: dict[str, HeldoutEntry] = field(default_factory=dict)
    # resource limits (docs/aggregator.md, "Limits"): every connection has a deadline for
    # a request's headers (from its first byte), for its body (from the end of the
    # headers) and for idling between requests
    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    idle_timeout_s: float = 75.0
    max_json_bytes: int = (
        64 * 2**10
    )  # JSON bodies; updates, chunks and masked inputs: max_body_bytes
    # failed enrollments and authentications, per client address (a token bucket)
    auth_failures_per_s: float = 0.2
    auth_failure_burst: int = 10
    # resumable uploads: a session expires this long after it began; per device at most
    # this many open sessions holding at most this many declared bytes
    upload_session_ttl_s: float = 3600.0
    max_uploads_per_device: int = 2
    max_upload_bytes_per_device: int = 64 * 2**20
    # /v1/status and /metrics show task settings and DP figures only when this is on
    public_status_settings: bool = False

    def __post_init__(self):
        with Checks(self) as check:
            self._check_access(check)
            self._check_limits(check)

    def _check_access(self, check: Checks) -> None:
        require = check.require
        require(
            isinstance(self.data_dir, str) and self.data_dir != "",
            "data_dir",
            "must name a directory",
        )
        require(
            _token_like(self.admin_token) and len(self.admin_token) >= 16,
            "admin_token",
            "must be at least 16 printable ASCII characters without spaces (leave it "
            "out and edge-fl serve generates one)",
        )
        secrets = require(
            isinstance(self.enrollment_secrets, dict),
            "enrollment_secrets",
            "must map population names to secrets",
        )
        for population, secret in self.enrollment_secrets.items() if secrets else ():
            require(
                _token_like(population) and 0 < len(population) <= 64,
                f"enrollment_secrets.{population}",
                "a population is 1 to 64 printable ASCII characters without spaces",
            ) and require(
                _token_like(secret) and 0 < len(secret) <= 256,
                f"enrollment_secrets.{population}",
                "a secret is 1 to 256 printable ASCII characters without spaces",
            )
        for task_id, entry in self.heldout.items():
            require(
                isinstance(entry, HeldoutEntry),
                f"heldout.{task_id}",
                'must be {"bundle": DIR, "examples": FILE.jsonl, "poll_s": 10}',
            )
        require(
            not self.heldout or self.advertise_url is not None,
            "advertise_url",
            "held-out evaluators reach the server at advertise_url; set it (edge-fl "
            "serve fills it in)",
        )
        require(
            self.store_url is None
            or str(self.store_url).startswith(("postgresql://", "postgres://")),
            "store_url",
            "must be a postgresql://user@host:port/db URL; leave it out for SQLite + files "
            "under data_dir",
        )
        require(
            self.advertise_url is None
            or str(self.advertise_url).startswith(("http://", "https://")),
            "advertise_url",
            "must be http(s)://host:port, as the other aggregator processes reach this one",
        )
        for name in ("forward_timeout_s", "rate_per_s", "tick_interval_s"):
            value = getattr(self, name)
            require(
                _number(value) and 0 < value < 1e12, name, f"must be a number > 0, got {value!r}"
            )
        for name, minimum in (("max_body_bytes", 1024), ("burst", 1)):
            value = getattr(self, name)
            require(
                _number(value) and isinstance(value, int) and minimum <= value < 2**53,
                name,
                f"must be an integer >= {minimum}, got {value!r}",
            )
        for point, count in self.crash_at.items():
            require(
                isinstance(count, int) and not isinstance(count, bool) and count >= 1,
                f"crash_at.{point}",
                "must be an integer >= 1 (the n-th time the point is reached)",
            )

    def _check_limits(self, check: Checks) -> None:
        require = check.require
        for name in (
            "header_timeout_s",
            "body_timeout_s",
            "idle_timeout_s",
            "auth_failures_per_s",
            "upload_session_ttl_s",
        ):
            value = getattr(self, name)
            require(
                _number(value) and 0 < value < 1e12,
                name,
                f"must be a positive number of seconds (or per second), got {value!r}",
            )
        for name, least in (
            ("max_json_bytes", 1024),
            ("auth_failure_burst", 1),
            ("max_uploads_per_device", 1),
            ("max_upload_bytes_per_device", 1024),
        ):
            value = getattr(self, name)
            require(
                _number(value) and isinstance(value, int) and least <= value < 2**53,
                name,
                f"must be an integer >= {least}, got {value!r}",
            )
        require(
            isinstance(self.public_status_settings, bool),
            "public_status_settings",
            "must be true or false",
        )

    @classmethod
    def from_json(cls, doc: dict, path: str = "config") -> ServerConfig:
        """From the serve config file's JSON (with the command line's flags merged in)."""
        return decode_value(cls, doc, path)

    def to_json(self) -> dict:
        return encode_value(self)


__all__ = ["BadField", "HeldoutEntry", "ServerConfig"]
