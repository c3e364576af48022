"""One synchronous round under secure aggregation (Bonawitz et al. 2017), as a state
machine given `now`; it knows neither HTTP nor storage.

    advertising -> sharing -> masking -> unmasking -> done      (or failed)

advertising: selected devices that finished training send two public keys; it closes
  when `goal` devices advertised, or at the round's report deadline (the coordinator
  calls `close_advertising`) with at least the round's minimum.
sharing: each sends its encrypted Shamir shares for every peer (routed, never opened).
masking: each fetches the shares addressed to it and sends its masked input; the masked
  inputs are summed as they arrive (mod 2^32) and never kept one by one.
unmasking: survivors learn who sent an input and who did not, and reveal for each peer
  the self-mask share (sent) or the key share (did not); with `threshold` reveals the
  server removes the masks and has the sum.

A phase also closes `phase_timeout_s` after it opened, going on with those who answered
when at least `threshold` did; otherwise the round fails and the coordinator abandons it.
Nothing here is persisted: a restart loses the round and it is re-run, so no device's
contribution, masked or not, ever reaches the disk.
"""

from __future__ import annotations

import math

import numpy as np

from edge_sdk.protocol.errors import BadPayload
from edge_sdk.protocol.secagg import FixedPoint, SecAggServer

from .config import SecAggSettings
from .errors import BadRequest, RoundClosed

PHASES = ("advertising", "sharing", "masking", "unmasking", "done", "failed")


class SecureRound:
    def __init__(self, settings: SecAggSettings, length: int, goal: int, now: float):
        self.settings, self.length, self.goal = settings, length, goal
        self.codec = FixedPoint(settings.clip, settings.frac_bits)
        self.phase, self.phase_started = "advertising", now
        self.index: dict[str, int] = {}  # device -> Shamir x-coordinate (1..n)
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.server: SecAggServer | None = None
        self.reveals: dict[int, dict[int, tuple[str, int]]] = {}
        self.failure: str | None = None
        self._sum: np.ndarray | None = None

    # -- reading ---------------------------------------------------------------------------
    @property
    def threshold(self) -> int:
        return max(2, math.ceil(self.settings.threshold_fraction * len(self.keys)))

    def view_for(self, device_id: str) -> dict:
        """What the device needs for its next step (JSON-ready; bytes as bytes)."""
        doc = {
            "phase": self.phase,
            "index": self.index.get(device_id),
            "retry_after_s": min(1.0, self.settings.phase_timeout_s / 20),
        }
        if self.phase in ("sharing", "masking", "unmasking"):
            doc["threshold"] = self.threshold
            doc["peers"] = self.keys
        if self.phase == "masking" and device_id in self.index:
            doc["shares"] = self.server.shares_for(self.index[device_id])
        if self.phase == "unmasking":
            doc["survivors"] = sorted(self.server.survivors)
            doc["dropped"] = sorted(self.server.shared - self.server.survivors)
        if self.phase == "failed":
            doc["reason"] = self.failure
        return doc

    def participants(self) -> int:
        return 0 if self.server is None else len(self.server.survivors)

    # -- device steps ----------------------------------------------------------------------
    def advertise(self, device_id: str, c_public: bytes, s_public: bytes, now: float) -> int:
        self._expect("advertising")
        if device_id in self.index:
            return self.index[device_id]  # a retry
        if len(c_public) != 32 or len(s_public) != 32:
            raise BadRequest("secagg public keys are 32-byte X25519 keys")
        x = len(self.index) + 1
        self.index[device_id] = x
        self.keys[x] = (c_public, s_public)
        if len(self.index) >= self.goal:
            self._close_advertising(now)
        return x

    def share(self, device_id: str, ciphertexts: dict[int, bytes], now: float) -> None:
        self._expect("sharing")
        x = self._member(device_id)
        if set(ciphertexts) != set(self.keys) - {x}:
            raise BadRequest("shares go to every other advertised device, one each")
        self.server.route_shares(x, ciphertexts)
        if self.server.shared == set(self.keys):
            self._open("masking", now)

    def masked_input(self, device_id: str, y: np.ndarray, now: float) -> None:
        self._expect("masking")
        x = self._member(device_id)
        if x in self.server.survivors:
            return  # a retry: already counted once
        try:
            self.server.collect_masked(x, y)
        except BadPayload as e:
            raise BadRequest(str(e)) from None
        if self.server.survivors == self.server.shared:
            self._open("unmasking", now)

    def reveal(self, device_id: str, shares: dict[int, tuple[str, int]], now: float) -> None:
        self._expect("unmasking")
        x = self._member(device_id)
        if x not in self.server.survivors:
            raise BadRequest("only devices whose input was summed reveal shares")
        expected = self.server.shared - {x}
        if not set(shares) <= expected | {x}:
            raise BadRequest("reveals name devices outside this group")
        self.reveals[x] = shares
        if set(self.reveals) == self.server.survivors:
            self._unmask(now)

    # -- time --------------------------------------------------------------------------------
    def close_advertising(self, now: float, minimum: int) -> None:
        """The round's report deadline: go on with the advertised devices, or fail."""
        if self.phase != "advertising":
            return
        if len(self.keys) < max(2, minimum):
            self._fail(f"only {len(self.keys)} devices advertised keys", now)
        else:
            self._close_advertising(now)

    def tick(self, now: float) -> None:
        if (
            self.phase not in ("sharing", "masking", "unmasking")
            or now < self.phase_started + self.settings.phase_timeout_s
        ):
            return
        answered = {
            "sharing": lambda: len(self.server.shared),
            "masking": lambda: len(self.server.survivors),
            "unmasking": lambda: len(self.reveals),
        }[self.phase]()
        if answered < self.threshold:
            self._fail(
                f"{answered} devices answered in {self.phase}, the threshold is {self.threshold}",
                now,
            )
        elif self.phase == "sharing":
            self._open("masking", now)
        elif self.phase == "masking":
            self._open("unmasking", now)
        else:
            self._unmask(now)

    # -- the result ------------------------------------------------------------------------
    def result(self) -> np.ndarray:
        """float32 [length]: the sum of the survivors' vectors."""
        if self.phase != "done":
            raise RoundClosed("the secure round has no result yet")
        return self._sum

    # -- internals ---------------------------------------------------------------------------
    def _close_advertising(self, now: float) -> None:
        self.server = SecAggServer(self.threshold, self.codec)
        self.server.collect_keys(self.keys)
        self._open("sharing", now)

    def _unmask(self, now: float) -> None:
        try:
            self._sum = self.server.unmask(self.reveals, self.length)
        except BadPayload as e:
            self._fail(f"unmasking failed: {e}", now)
            return
        self._open("done", now)

    def _open(self, phase: str, now: float) -> None:
        self.phase, self.phase_started = phase, now

    def _fail(self, reason: str, now: float) -> None:
        self.failure = reason
        self._open("failed", now)

    def _expect(self, phase: str) -> None:
        if self.phase != phase:
            raise RoundClosed(f"the secure round is in phase {self.phase!r}, not {phase!r}")

    def _member(self, device_id: str) -> int:
        if device_id not in self.index:
            raise BadRequest("this device did not advertise keys in this secure round")
        return self.index[device_id]
