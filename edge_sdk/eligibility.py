"""Eligibility as data: pure predicates over a device-state snapshot the app provides.

A `Policy` is all-of its predicates and returns a `Decision` naming every failing reason
(with a stable code for reporting). Nothing here reads a sensor or a clock: the snapshot
carries the local time, and the participation history is passed in.

    decision = policy.decide(state, context)
    # Decision(allowed=False, reasons=("battery 0.21 < 0.30",), codes=("battery_low",))
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Protocol

NETWORKS = ("unmetered", "metered", "none")
THERMAL = ("nominal", "fair", "serious", "critical")


@dataclass(frozen=True)
class DeviceState:
    """A snapshot of the device, taken by the app. local_time is the device's wall clock."""

    charging: bool
    battery_level: float
    network: str
    idle: bool
    thermal: str
    free_storage_bytes: int
    local_time: datetime

    def __post_init__(self):
        if not 0.0 <= self.battery_level <= 1.0:
            raise ValueError(f"battery_level is a fraction in [0, 1], got {self.battery_level}")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {self.network!r}")
        if self.thermal not in THERMAL:
            raise ValueError(f"thermal must be one of {THERMAL}, got {self.thermal!r}")
        if self.free_storage_bytes < 0:
            raise ValueError("free_storage_bytes must be >= 0")


@dataclass(frozen=True)
class ParticipationHistory:
    """Start times (unix seconds) of past participations, newest last; serializable so the
    SDK can keep it in the example store's state table."""

    started: tuple[float, ...] = ()

    def record(self, when: float, keep: int = 64) -> ParticipationHistory:
        return ParticipationHistory((self.started + (when,))[-keep:])

    def to_bytes(self) -> bytes:
        return json.dumps({"started": list(self.started)}).encode()

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> ParticipationHistory:
        if not blob:
            return cls()
        try:
            return cls(tuple(float(t) for t in json.loads(blob)["started"]))
        except (ValueError, KeyError, TypeError):
            return cls()  # unreadable history: count as none rather than block forever


@dataclass(frozen=True)
class Context:
    """What the decision needs beyond the device: the local example count, the
    participation history, and now (unix seconds, for cooldowns)."""

    now: float
    local_examples: int = 0
    history: ParticipationHistory = field(default_factory=ParticipationHistory)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()

    @classmethod
    def ok(cls) -> Decision:
        return cls(True)

    @classmethod
    def deny(cls, code: str, reason: str) -> Decision:
        return cls(False, (reason,), (code,))


class Predicate(Protocol):
    def __call__(self, state: DeviceState, context: Context) -> Decision: ...


@dataclass(frozen=True)
class MinBattery:
    level: float = 0.3

    def __call__(self, state, context):
        if state.battery_level >= self.level:
            return Decision.ok()
        return Decision.deny("battery_low", f"battery {state.battery_level:.2f} < {self.level:.2f}")


@dataclass(frozen=True)
class RequireCharging:
    def __call__(self, state, context):
        return Decision.ok() if state.charging else Decision.deny("not_charging", "not charging")


@dataclass(frozen=True)
class RequireUnmetered:
    def __call__(self, state, context):
        if state.network == "unmetered":
            return Decision.ok()
        return Decision.deny(
            "metered_network" if state.network == "metered" else "no_network",
            f"network is {state.network}",
        )


@dataclass(frozen=True)
class RequireIdle:
    def __call__(self, state, context):
        return Decision.ok() if state.idle else Decision.deny("not_idle", "device in use")


@dataclass(frozen=True)
class MaxThermal:
    worst: str = "fair"

    def __call__(self, state, context):
        if THERMAL.index(state.thermal) <= THERMAL.index(self.worst):
            return Decision.ok()
        return Decision.deny("too_hot", f"thermal state {state.thermal} above {self.worst}")


@dataclass(frozen=True)
class MinFreeStorage:
    bytes_: int = 100 * 2**20

    def __call__(self, state, context):
        if state.free_storage_bytes >= self.bytes_:
            return Decision.ok()
        return Decision.deny(
            "low_storage", f"free storage {state.free_storage_bytes} B < {self.bytes_} B"
        )


@dataclass(frozen=True)
class MinLocalExamples:
    count: int = 20

    def __call__(self, state, context):
        if context.local_examples >= self.count:
            return Decision.ok()
        return Decision.deny(
            "too_few_examples", f"{context.local_examples} local examples < {self.count}"
        )


@dataclass(frozen=True)
class Cooldown:
    seconds: float = 6 * 3600

    def __call__(self, state, context):
        if not context.history.started:
            return Decision.ok()
        since = context.now - context.history.started[-1]
        if since >= self.seconds:
            return Decision.ok()
        return Decision.deny(
            "cooldown", f"last participation {since:.0f}s ago < {self.seconds:.0f}s"
        )


@dataclass(frozen=True)
class DailyQuota:
    """At most `max_per_day` participations in the device's current local day."""

    max_per_day: int = 2

    def __call__(self, state, context):
        local_midnight = datetime.combine(state.local_time.date(), time())
        day_start = context.now - (state.local_time - local_midnight).total_seconds()
        today = sum(1 for t in context.history.started if t >= day_start)
        if today < self.max_per_day:
            return Decision.ok()
        return Decision.deny("daily_quota", f"{today} participations today >= {self.max_per_day}")


@dataclass(frozen=True)
class LocalTimeWindow:
    """Allowed while the local time is in [start, end); a window may wrap past midnight
    (e.g. 22:00-06:00)."""

    start: time = time(22, 0)
    end: time = time(6, 0)

    def __call__(self, state, context):
        now = state.local_time.time()
        inside = (
            (self.start <= now < self.end)
            if self.start <= self.end
            else (now >= self.start or now < self.end)
        )
        if inside:
            return Decision.ok()
        return Decision.deny(
            "outside_window", f"local time {now:%H:%M} outside {self.start:%H:%M}-{self.end:%H:%M}"
        )


@dataclass(frozen=True)
class Policy:
    """All of `predicates` must allow; every failing one is reported."""

    predicates: tuple[Predicate, ...]

    def decide(self, state: DeviceState, context: Context) -> Decision:
        failed = [d for d in (p(state, context) for p in self.predicates) if not d.allowed]
        if not failed:
            return Decision.ok()
        return Decision(
            False,
            tuple(r for d in failed for r in d.reasons),
            tuple(c for d in failed for c in d.codes),
        )


def default_policy() -> Policy:
    """Keyboard-app defaults after Bonawitz et al. 2019: charging, unmetered, idle, cool,
    some battery and storage, enough local data, spaced participations."""
    return Policy(
        (
            RequireCharging(),
            RequireUnmetered(),
            RequireIdle(),
            MinBattery(0.3),
            MaxThermal("fair"),
            MinFreeStorage(),
            MinLocalExamples(20),
            Cooldown(6 * 3600),
            DailyQuota(2),
        )
    )


class ReasonCounter:
    """Tallies of denial codes (no personal data) to report to the server."""

    def __init__(self):
        self._counts: Counter[str] = Counter()

    def record(self, decision: Decision) -> None:
        self._counts.update(decision.codes)

    def export(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))

    def reset(self) -> None:
        self._counts.clear()


def stop_check(policy: Policy, snapshot, context, counter: ReasonCounter | None = None):
    """A trainer stop check that re-asks `policy` with fresh `snapshot()` and `context()`
    (both callables the app supplies); returns the first denial code, or None to go on."""

    def check() -> str | None:
        decision = policy.decide(snapshot(), context())
        if decision.allowed:
            return None
        if counter is not None:
            counter.record(decision)
        return decision.codes[0]

    return check
