"""Resumable uploads: a device declares an update's size and SHA-256, sends it in chunks
(resuming from the count the server holds after any failure), then commits it, which
submits it as one update.

Sessions are bounded: one expires `ttl_s` after it began (a call on it is then answered
410 `upload_expired`, and the ticker and the next start-up remove it with its bytes); a
device holds at most `max_sessions` open sessions declaring at most `max_bytes` in all
(429 `upload_quota_sessions`, 413 `upload_quota_bytes`). A device that begins a new
upload for a task abandons its unfinished one for that task (a device runs one
participation of a task at a time), so a flaky device never locks itself out.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from .errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    UploadExpired,
    UploadOffsetMismatch,
    UploadQuotaBytes,
    UploadQuotaSessions,
)
from .store import Device, Store

__all__ = ["UploadQuota", "UploadSessions"]


@dataclass(frozen=True)
class UploadQuota:
    ttl_s: float = 3600.0
    max_sessions: int = 2
    max_bytes: int = 64 * 2**20

    def __post_init__(self):
        if not self.ttl_s > 0 or self.max_sessions < 1 or self.max_bytes < 1:
            raise ValueError("an upload quota needs ttl_s > 0, max_sessions >= 1, max_bytes >= 1")


class UploadSessions:
    """The resumable uploads kept in `store`; `clock.now()` dates them."""

    def __init__(self, store: Store, clock, quota: UploadQuota, max_update_bytes: int):
        self.store, self.clock, self.quota = store, clock, quota
        self.max_update_bytes = max_update_bytes

    def begin(self, device: Device, task_id: str, size: int, sha256: str) -> dict:
        if not 0 < size <= self.max_update_bytes:
            raise PayloadTooLarge(
                f"an update may be at most {self.max_update_bytes} bytes",
                max_bytes=self.max_update_bytes,
            )
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BadRequest("sha256 must be 64 lowercase hex digits")
        now = self.clock.now()
        open_ = []
        for info in self.store.device_uploads(device.device_id):
            if info["task_id"] == task_id or self._expired(info, now):
                self.store.finish_upload(info["upload_id"])  # superseded, or out of time
            else:
                open_.append(info)
        if len(open_) >= self.quota.max_sessions:
            oldest = min(info["created"] for info in open_)
            raise UploadQuotaSessions(
                f"a device may hold {self.quota.max_sessions} unfinished uploads; commit one "
                "or let it expire",
                retry_after_s=oldest + self.quota.ttl_s - now,
                max_sessions=self.quota.max_sessions,
            )
        held = sum(info["size"] for info in open_)
        if held + size > self.quota.max_bytes:
            raise UploadQuotaBytes(
                f"this device's unfinished uploads would declare {held + size} bytes; at most "
                f"{self.quota.max_bytes} are kept per device",
                max_bytes=self.quota.max_bytes - held,
            )
        upload_id = secrets.token_hex(16)
        self.store.begin_upload(upload_id, device.device_id, task_id, size, sha256, now)
        return {"upload_id": upload_id, "received": 0, "size": size}

    def status(self, device: Device, upload_id: str) -> dict:
        info = self._session(device, upload_id)
        return {"upload_id": upload_id, "received": info["received"], "size": info["size"]}

    def append(self, device: Device, upload_id: str, offset: int, chunk: bytes) -> dict:
        """Idempotent: a chunk already received is acknowledged again; a gap is refused
        with the count received, from which the device resumes."""
        info = self._session(device, upload_id)
        received = info["received"]
        if offset < 0:
            raise BadRequest("offset must be >= 0")
        if offset + len(chunk) <= received:
            return {"upload_id": upload_id, "received": received, "size": info["size"]}
        if offset != received:
            raise UploadOffsetMismatch(f"expected offset {received}", received=received)
        if received + len(chunk) > info["size"]:
            raise PayloadTooLarge("more bytes than the upload declared", max_bytes=info["size"])
        received = self.store.append_upload(upload_id, offset, chunk)
        if received != offset + len(chunk):  # another request appended first
            raise UploadOffsetMismatch(f"expected offset {received}", received=received)
        return {"upload_id": upload_id, "received": received, "size": info["size"]}

    def complete(self, device: Device, upload_id: str) -> tuple[str, bytes]:
        """(task id, the whole update) of a finished upload whose bytes match its
        SHA-256; the caller submits them and then calls `finish`."""
        info = self._session(device, upload_id)
        if info["received"] != info["size"]:
            raise UploadOffsetMismatch("the upload is incomplete", received=info["received"])
        data = self.store.read_upload(upload_id)
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            self.store.finish_upload(upload_id)
            raise BadRequest("the uploaded bytes do not match the declared sha256")
        return info["task_id"], data

    def finish(self, upload_id: str) -> None:
        self.store.finish_upload(upload_id)

    def expire(self) -> int:
        """Remove every session past its time, with its bytes; returns how many."""
        expired = self.store.uploads_begun_before(self.clock.now() - self.quota.ttl_s)
        for upload_id in expired:
            self.store.finish_upload(upload_id)
        return len(expired)

    def _expired(self, info: dict, now: float) -> bool:
        return now - info["created"] >= self.quota.ttl_s

    def _session(self, device: Device, upload_id: str) -> dict:
        info = self.store.upload_info(upload_id)
        if info is None or info["device_id"] != device.device_id:
            raise NotFound(f"no upload {upload_id[:64]} of this device")
        if self._expired(info, self.clock.now()):
            self.store.finish_upload(upload_id)
            raise UploadExpired(
                f"upload {upload_id} expired {self.quota.ttl_s:g} s after it began; begin a new one"
            )
        return info
