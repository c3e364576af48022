"""Enrollment and authentication: a population's secret buys a device id and a bearer
token; only the token's hash is stored, and tokens seen before are answered from memory."""

from __future__ import annotations

import hashlib
import secrets

from ..errors import BadRequest, EnrollmentClosed, Forbidden, Unauthorized
from ..store import Device, Store

KNOWN_DEVICES = 100_000  # tokens whose device is kept in memory


class Devices:
    def __init__(self, store: Store, clock, enrollment_secrets: dict[str, str]):
        self.store, self.clock = store, clock
        self.enrollment_secrets = enrollment_secrets
        self._known: dict[str, Device] = {}  # token hash -> device

    def enroll(self, population: str, secret: str, public_key: bytes) -> dict:
        if not self.enrollment_secrets:
            raise EnrollmentClosed(
                "this server enrolls no devices: no enrollment secret is "
                "configured; start edge-fl serve with --enrollment-secret "
                "POPULATION=SECRET (or enrollment_secrets in --config)"
            )
        expected = self.enrollment_secrets.get(population)
        # bytes: compare_digest refuses str with non-ASCII characters
        if expected is None or not secrets.compare_digest(expected.encode(), secret.encode()):
            raise Forbidden("wrong enrollment secret for this population")
        if len(public_key) != 32:
            raise BadRequest("public_key must be a raw 32-byte Ed25519 key (base64)")
        device_id = "dev-" + secrets.token_hex(8)
        token = secrets.token_urlsafe(32)
        self.store.add_device(
            Device(device_id, population, public_key), token_hash(token), self.clock.now()
        )
        return {"device_id": device_id, "token": token}

    def authenticate(self, token: str | None) -> Device:
        device = self.known_device(token)
        if device is None and token:
            device = self.store.device_by_token(token_hash(token))
            if device is not None:
                if len(self._known) >= KNOWN_DEVICES:
                    self._known.clear()  # cheaper than LRU order; a miss costs one read
                self._known[token_hash(token)] = device
        if device is None:
            raise Unauthorized("unknown or missing device token")
        return device

    def known_device(self, token: str | None) -> Device | None:
        """The device of a token seen before, from memory: safe from any thread (a token
        never changes its device), so the app answers most authentications without a
        trip to the service's thread. None: ask `authenticate`."""
        return self._known.get(token_hash(token)) if token else None

    def forget(self) -> None:
        """Drop the tokens kept in memory (the store may have lost some enrollments)."""
        self._known.clear()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
