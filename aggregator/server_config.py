"""The aggregator process's settings, built once at the entry point (`edge-fl serve`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    """Built once at the entry point; validated here."""

    data_dir: str
    admin_token: str
    enrollment_secrets: dict = field(default_factory=lambda: {"default": "change-me"})
    max_body_bytes: int = 32 * 2**20
    rate_per_s: float = 20.0
    burst: int = 40
    tick_interval_s: float = 1.0
    # fault injection for crash tests: the process dies (as with kill -9) the n-th time it
    # reaches the named point of aggregator.store.CRASH_POINTS, e.g. {"model_file_written": 2}
    crash_at: dict = field(default_factory=dict)
    # PostgreSQL shared by several aggregator processes (None: SQLite + files in data_dir)
    store_url: str | None = None
    # where the other processes reach this one (`edge-fl serve` fills in the bound address)
    advertise_url: str | None = None
    forward_timeout_s: float = 60.0
    # server-side held-out evaluation: {task_id: {"bundle": DIR, "examples": FILE.jsonl}};
    # each runs as its own process (server_eval/), started and stopped with the app
    heldout: dict = field(default_factory=dict)
    # resource limits (docs/aggregator.md, "Limits"): every connection has a deadline for
    # a request's headers (from its first byte), for its body (from the end of the
    # headers) and for idling between requests
    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    idle_timeout_s: float = 75.0
    max_json_bytes: int = 64 * 2**10  # JSON bodies; updates, chunks and masked inputs: max_body_bytes
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
        self._check_limits()
        for task_id, entry in self.heldout.items():
            paths = {k: entry.get(k) for k in ("bundle", "examples")} \
                if isinstance(entry, dict) else {}
            poll = entry.get("poll_s", 10.0) if isinstance(entry, dict) else None
            if not paths or set(entry) - {"bundle", "examples", "poll_s"} or not all(
                    isinstance(v, str) and Path(v).exists() for v in paths.values()) or not (
                    isinstance(poll, (int, float)) and poll > 0):
                raise ValueError(f"heldout[{task_id!r}] must be {{\"bundle\": DIR, \"examples\": "
                                 "FILE, \"poll_s\": 10}} naming an existing bundle and "
                                 "JSON-lines file")
        if self.heldout and self.advertise_url is None:
            raise ValueError("held-out evaluators reach the server at advertise_url; set it "
                             "(edge-fl serve fills it in)")
        if self.store_url is not None and not self.store_url.startswith(
                ("postgresql://", "postgres://")):
            raise ValueError("store_url must be a postgresql://user@host:port/db URL; leave it "
                             "out for SQLite + files under data_dir")
        if self.advertise_url is not None and not self.advertise_url.startswith(
                ("http://", "https://")):
            raise ValueError("advertise_url must be http(s)://host:port, as the other "
                             "aggregator processes reach this one")
        if self.forward_timeout_s <= 0:
            raise ValueError("forward_timeout_s must be > 0")
        if len(self.admin_token) < 16:
            raise ValueError("admin_token must be at least 16 characters")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be >= 1024")
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")

    def _check_limits(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s",
                     "auth_failures_per_s", "upload_session_ttl_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive number of seconds (or per second), "
                                 f"got {value!r}")
        for name, least in (("max_json_bytes", 1024), ("auth_failure_burst", 1),
                            ("max_uploads_per_device", 1), ("max_upload_bytes_per_device", 1024)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not isinstance(self.public_status_settings, bool):
            raise ValueError("public_status_settings must be true or false")
