"""The task state machine: who trains, when a round or buffer is complete, what weight an
update gets. Synchronous, deterministic, and given `now`; it knows neither HTTP nor
storage (the service persists what it decides and replays accepted updates on restart).

Sync rounds (Bonawitz et al. 2019): SELECTING (check-ins are assigned until goal x
overselect are) -> REPORTING; the round is ready to commit when `goal` updates arrived,
or at the report deadline with at least min_fraction x goal; with fewer it is abandoned
and a new round starts from the same model. Devices that never report are recorded as
dropped, by reason.

Buffered async (FedBuff, Nguyen et al. 2022): up to `concurrency` devices in flight, each
trained from the version current when it checked in; an update of staleness s = current
- its version is refused beyond max_staleness, and its delta is discounted by
staleness(s) before it joins the example-weighted mean, so a buffer aggregates
sum n_i staleness(s_i) d_i / sum n_i: as in FedBuff (which divides the discounted sum by
K), stale deltas move the model less in absolute terms, not only relative to fresh ones.
Every `buffer_size` accepted updates make a new version.

Model buffers (BatchNorm running statistics) with the plan's `buffers: "local"` (FedBN,
Li et al. 2021): each device keeps its own, so the closed aggregate holds zeros for them
whatever devices sent, and the server optimizer (every one maps a zero mean to no change)
leaves the global model's buffers as they were.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from edge_sdk.protocol import UpdateMeta
from edge_sdk.protocol.secagg import split_secagg_sum

from .config import TaskSettings
from .errors import NotSelected, RoundClosed, StaleVersion, TaskPaused
from .numerics import STALENESS, Delta, scaled_delta
from .secure_round import SecureRound
from .stages import Stage, stateful_stages


@dataclass(frozen=True)
class Assignment:
    task_id: str
    round_id: int
    model_version: int
    deadline: float


@dataclass(frozen=True)
class EvalAssignment:
    """Federated evaluation: evaluate `model_version` on local data and report metric sums."""

    task_id: str
    model_version: int
    deadline: float


@dataclass(frozen=True)
class ComeBackLater:
    retry_at: float


@dataclass(frozen=True)
class Admission:
    weight: float  # the update's share of the mean: its example count
    staleness: int


@dataclass(frozen=True)
class Outcome:
    status: str  # "accepted" | "duplicate"
    model_version: int  # the version it was computed from
    weight: float
    staleness: int
    ready_to_commit: bool


@dataclass
class Funnel:
    """Participation counts for /metrics, /v1/status and the dashboard (no personal data).

    Each outcome is counted once, here, where it is decided. An upload that reaches a
    decision is `reported`: `accepted`, or `rejected` by reason (reported = accepted +
    the rejected). A selected device that never reported is `dropped` by reason (it gave
    up, or its round closed or its deadline passed without its update), and a device
    that reported is never also dropped. An upload from a device already counted as
    dropped is refused (409 round_closed) and counted in `late_after_drop` only, not as
    a second outcome of that device."""

    checked_in: int = 0
    selected: int = 0
    reported: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    late_after_drop: int = 0

    def to_json(self) -> dict:
        return {
            "checked_in": self.checked_in,
            "selected": self.selected,
            "reported": self.reported,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "dropped": dict(self.dropped),
            "late_after_drop": self.late_after_drop,
        }

    @classmethod
    def from_json(cls, doc: dict) -> Funnel:
        return cls(
            doc["checked_in"],
            doc["selected"],
            doc["reported"],
            doc["accepted"],
            Counter(doc["rejected"]),
            Counter(doc["dropped"]),
            doc.get("late_after_drop", 0),
        )  # absent from older snapshots


class TaskCoordinator:
    def __init__(
        self,
        task_id: str,
        settings: TaskSettings,
        model_version: int,
        stage: Stage,
        rng: np.random.Generator,
        now: float,
        shapes: dict[str, tuple[int, ...]] | None = None,
        buffers: frozenset[str] = frozenset(),
    ):
        """shapes: the model's tensor shapes, needed with secure aggregation (the sum
        arrives as one vector). buffers: the names of the model's buffers."""
        if settings.secagg is not None and shapes is None:
            raise ValueError("secure aggregation needs the model's shapes")
        self.task_id, self.settings, self.stage, self.rng = task_id, settings, stage, rng
        self.shapes = shapes
        # the tensors the aggregate never moves: buffers each device keeps (FedBN)
        self.kept_on_devices = buffers if settings.plan.buffers == "local" else frozenset()
        self.version = model_version
        self.paused = False
        self.round_id = 0
        self.funnel = Funnel()
        self.events: list[dict] = []
        # devices counted as dropped in this round/buffer or the one before -> its round id
        self.dropped_devices: dict[str, int] = {}
        # assigned devices whose upload was rejected: they reported, so are never dropped
        self.refused_devices: set[str] = set()
        # bytes of updates received and models served to devices since the last version
        self.traffic = {"bytes_up": 0, "bytes_down": 0}
        self.evaluators: dict[str, tuple[int, float]] = {}  # device -> (version, deadline)
        self._open_round(now)

    # -- rounds / buffers ------------------------------------------------------------------
    def _open_round(self, now: float) -> None:
        # devices of the round that just ended: their uploads are late, not unknown
        self.previous_devices = set(getattr(self, "assigned", {}))
        self.round_id += 1
        # devices dropped from the round that just ended: their uploads are late, not unknown
        self.dropped_devices = {
            d: r for d, r in self.dropped_devices.items() if r >= self.round_id - 1
        }
        # async: devices in flight carry on into the next buffer, and so does their refusal
        self.refused_devices = (
            self.refused_devices & self.previous_devices if self.settings.mode == "async" else set()
        )
        self.phase = "selecting"
        self.round_started = now
        self.assigned: dict[str, tuple[int, float]] = {}  # device -> (version, deadline)
        # no deadline in `assigned` is earlier (async): a tick before it has nothing to
        # expire, so check-ins and uploads do not each walk every device in flight
        self._earliest_deadline = -math.inf
        # (device, idempotency key) -> outcome: a key is the device's own, per task
        self.outcomes: dict[tuple[str, str], Outcome] = {}
        self.reported_devices: set[str] = set()
        self.accepted = 0
        self.accumulator = self.stage.start()
        self.secure = (
            None
            if self.settings.secagg is None
            else SecureRound(
                self.settings.secagg,
                sum(int(np.prod(v)) for v in self.shapes.values()) + 1,
                self._sync.goal,
                now,
            )
        )
        self.events.append(
            {"event": "round_started", "round": self.round_id, "version": self.version, "at": now}
        )

    @property
    def _sync(self):
        return self.settings.sync

    def _target(self) -> int:
        return math.ceil(self._sync.goal * self._sync.overselect)

    def _minimum(self) -> int:
        return math.ceil(self._sync.goal * self._sync.min_fraction)

    def ready_to_commit(self) -> bool:
        if self.secure is not None:
            return self.secure.phase == "done"
        if self.settings.mode == "async":
            return self.accepted >= self.settings.async_.buffer_size
        return self.accepted >= self._sync.goal or (
            self.phase == "closing" and self.accepted >= self._minimum()
        )

    # -- devices -----------------------------------------------------------------------------
    def check_in(self, device_id: str, now: float) -> Assignment | EvalAssignment | ComeBackLater:
        self.funnel.checked_in += 1
        self.tick(now)
        if self.paused:
            return self._later(now)
        if device_id in self.assigned:  # a device asking again keeps its assignment
            version, deadline = self.assigned[device_id]
            return Assignment(self.task_id, self.round_id, version, deadline)
        if self.settings.mode == "async":
            if len(self.assigned) >= self.settings.async_.concurrency:
                return self._spare(device_id, now)
            deadline = now + self.settings.async_.report_deadline_s
        else:
            if self.phase != "selecting" or len(self.assigned) >= self._target():
                return self._spare(device_id, now)
            deadline = (
                self.round_started + self._sync.selection_timeout_s + self._sync.report_deadline_s
            )
        self.assigned[device_id] = (self.version, deadline)
        self._earliest_deadline = min(self._earliest_deadline, deadline)
        self.funnel.selected += 1
        if self.settings.mode == "sync" and len(self.assigned) >= self._target():
            self.phase = "reporting"
        return Assignment(self.task_id, self.round_id, self.version, deadline)

    def _spare(self, device_id: str, now: float) -> EvalAssignment | ComeBackLater:
        """A device training does not need: evaluate the current model, or come back."""
        if self.settings.eval_fraction and self.rng.random() < self.settings.eval_fraction:
            deadline = now + self.settings.sync.report_deadline_s
            self.evaluators[device_id] = (self.version, deadline)
            return EvalAssignment(self.task_id, self.version, deadline)
        return self._later(now)

    def record_evaluation(self, device_id: str, model_version: int, now: float) -> None:
        """Check that an evaluation report is owed; the service stores its sums."""
        owed = self.evaluators.get(device_id)
        if owed is None or owed[0] != model_version:
            raise NotSelected(f"device {device_id} holds no evaluation of version {model_version}")
        if now > owed[1]:
            del self.evaluators[device_id]
            raise RoundClosed("the evaluation deadline has passed")
        del self.evaluators[device_id]

    def _later(self, now: float) -> ComeBackLater:
        """Pace steering: a random retry time spreads reconnections (no thundering herd)."""
        s = self.settings
        return ComeBackLater(now + float(self.rng.uniform(s.retry_min_s, s.retry_max_s)))

    def admit(self, meta: UpdateMeta, now: float) -> Admission | Outcome:
        """Decide whether an update may join the current round/buffer, without changing
        the aggregate: an Admission (its weight), the first Outcome for a retried
        idempotency key, or an error saying why not. The service persists the update
        between admit and accept, so an accepted update is durable before it counts."""
        first = self.outcomes.get((meta.device_id, meta.idempotency_key))
        if first is not None:  # a retry: the first outcome stands
            return Outcome(
                "duplicate",
                first.model_version,
                first.weight,
                first.staleness,
                self.ready_to_commit(),
            )
        self.tick(now)
        device = meta.device_id
        assigned = self.assigned.get(device)
        if assigned is None and device in self.dropped_devices:
            self.funnel.late_after_drop += 1  # its outcome, dropped, is already counted
            raise RoundClosed(
                f"round {self.dropped_devices[device]} closed without this device's update",
                round=self.round_id,
            )
        if self.paused:
            self._reject("paused", device)
            raise TaskPaused(f"task {self.task_id} is paused")
        if assigned is None and device in self.previous_devices:  # e.g. its version was refused
            self._reject("late")
            raise RoundClosed(f"round {self.round_id - 1} has closed", round=self.round_id)
        once_per_round = self.settings.mode == "sync" and device in self.reported_devices
        if assigned is None or once_per_round:
            self._reject("not_selected")
            raise NotSelected(
                f"device {device} holds no open assignment in round {self.round_id}",
                round=self.round_id,
            )
        version, deadline = assigned
        if now > deadline:
            self._reject("late", device)
            raise RoundClosed("the reporting deadline has passed", round=self.round_id)
        if self.settings.mode == "sync":
            if meta.model_version != self.version:
                self._reject("stale", device)
                raise StaleVersion(
                    f"round {self.round_id} trains version {self.version}",
                    current_version=self.version,
                )
            return Admission(self._weight(meta), 0)
        staleness = self.version - meta.model_version
        if staleness < 0 or staleness > self.settings.async_.max_staleness:
            self._reject("stale")  # its assignment ends with this outcome
            del self.assigned[device]
            raise StaleVersion(
                f"computed from version {meta.model_version}; current is "
                f"{self.version}, at most {self.settings.async_.max_staleness} "
                f"behind is accepted",
                current_version=self.version,
            )
        return Admission(self._weight(meta), staleness)

    def _weight(self, meta: UpdateMeta) -> float:
        """The example count a device claims, capped per task: one device cannot outweigh
        the others by claiming more."""
        return float(min(meta.num_examples, self.settings.max_examples))

    def refuse_update(self, reason: str, device_id: str | None = None) -> None:
        """An update that arrived but is refused before admission (its contents are not
        finite, or over the task's norm bound): counted (the device keeps its assignment: a
        correct update may follow)."""
        self._reject(reason, device_id)

    def count_bytes(self, up: int = 0, down: int = 0) -> None:
        """Bytes of updates received and of models served to devices, counted toward the
        next version (abandoned rounds included): its `version_published` event holds them."""
        self.traffic["bytes_up"] += up
        self.traffic["bytes_down"] += down

    def discount(self, staleness: int) -> float:
        """The factor a delta of this staleness is scaled by (1 in sync rounds)."""
        if self.settings.mode == "sync":
            return 1.0
        return STALENESS[self.settings.async_.staleness](staleness)

    def accept(self, meta: UpdateMeta, delta: Delta, admission: Admission) -> Outcome:
        """Add an admitted update to the aggregate (also used to replay durable updates
        after a restart, with the weight and staleness they were admitted with)."""
        factor = self.discount(admission.staleness)
        if factor != 1.0:  # free for decoded parts: the factor joins their multiplier
            delta = scaled_delta(delta, factor)
        self.accumulator.add(delta, admission.weight)
        self.accepted += 1
        self.funnel.accepted += 1
        self.funnel.reported += 1
        self.reported_devices.add(meta.device_id)
        if self.settings.mode == "async":
            self.assigned.pop(meta.device_id, None)
        outcome = Outcome(
            "accepted",
            meta.model_version,
            admission.weight,
            admission.staleness,
            self.ready_to_commit(),
        )
        self.outcomes[(meta.device_id, meta.idempotency_key)] = outcome
        return outcome

    def _reject(self, reason: str, device_id: str | None = None) -> None:
        """An upload refused; `device_id`: its device holds an assignment (it reported)."""
        self.funnel.reported += 1
        self.funnel.rejected[reason] += 1
        if device_id is not None and device_id in self.assigned:
            self.refused_devices.add(device_id)

    def _drop(self, device_id: str, reason: str) -> None:
        self.funnel.dropped[reason] += 1
        self.dropped_devices[device_id] = self.round_id

    def report_failure(self, device_id: str, reason: str, now: float) -> None:
        """A device says it gave up (eligibility lost, training failed): a dropout state."""
        if self.assigned.pop(device_id, None) is not None:
            self._drop(device_id, reason)

    def secure_round(self, device_id: str, now: float, joining: bool = False) -> SecureRound:
        """The round's secure aggregation, for a device's next step. Joining (advertising
        keys) needs an open assignment of this round before its deadline."""
        self.tick(now)
        if self.secure is None:
            raise RoundClosed(f"task {self.task_id} does not use secure aggregation")
        if self.paused:
            raise TaskPaused(f"task {self.task_id} is paused")
        if joining:
            assigned = self.assigned.get(device_id)
            if assigned is None:
                raise NotSelected(
                    f"device {device_id} holds no open assignment in round {self.round_id}",
                    round=self.round_id,
                )
            if now > assigned[1]:
                raise RoundClosed("the reporting deadline has passed", round=self.round_id)
        return self.secure

    # -- time -------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Advance deadlines: end selection, close or abandon a round, expire assignments."""
        if self.settings.mode == "async":
            if now <= self._earliest_deadline:
                return
            earliest = math.inf
            for device, (_, deadline) in list(self.assigned.items()):
                if now > deadline:
                    del self.assigned[device]
                    if device not in self.refused_devices:  # it reported: not dropped
                        self._drop(device, "deadline")
                else:
                    earliest = min(earliest, deadline)
            self._earliest_deadline = earliest
            return
        s = self._sync
        if self.phase == "selecting" and now >= self.round_started + s.selection_timeout_s:
            if len(self.assigned) < self._minimum():
                self._abandon(now, "too_few_selected")
                return
            self.phase = "reporting"
        deadline_passed = now >= self.round_started + s.selection_timeout_s + s.report_deadline_s
        if self.secure is not None:
            if deadline_passed and self.phase == "reporting":
                self.secure.close_advertising(now, self._minimum())
            self.secure.tick(now)
            if self.secure.phase == "failed":
                self._abandon(now, "secagg_failed")
            return
        if self.phase == "reporting" and deadline_passed:
            if self.accepted >= self._minimum():
                self.phase = "closing"  # ready_to_commit is now true
            else:
                self._abandon(now, "too_few_reports")

    def _abandon(self, now: float, reason: str) -> None:
        self._drop_unreported("round_abandoned")
        self.events.append(
            {
                "event": "round_abandoned",
                "round": self.round_id,
                "reason": reason,
                "accepted": self.accepted,
                "at": now,
            }
        )
        self._open_round(now)

    def _drop_unreported(self, reason: str) -> None:
        """Selected devices that never reported, recorded by why the round ended."""
        for device in sorted(set(self.assigned) - self.reported_devices - self.refused_devices):
            self._drop(device, reason)

    # -- commit -----------------------------------------------------------------------------
    def take_aggregate(self, now: float) -> tuple[Delta, dict]:
        """Close the ready round/buffer: (mean delta, measurements); opens the next one
        for version + 1 (the caller applies the server optimizer and stores the model)."""
        mean, measurements = self.close_aggregate()
        self.publish(now)
        return mean, measurements

    def close_aggregate(self) -> tuple[Delta, dict]:
        """The ready round/buffer's (mean delta, measurements). Follow with `publish`
        (the caller stored the new model) or `refuse_version` (it must not be)."""
        if not self.ready_to_commit():
            raise RoundClosed("the round is not ready to commit")
        # stateful stages move on in result(); kept to be put back if refused
        self._stage_states = [s.state() for s in stateful_stages(self.stage)]
        if self.secure is not None:  # the one sum the server ever learns
            sums, weight = split_secagg_sum(self.secure.result(), self.shapes)
            self.accumulator.add({k: v / np.float32(weight) for k, v in sums.items()}, weight)
            self.accepted = self.secure.participants()
            self.funnel.accepted += self.accepted
            self.funnel.reported += self.accepted
            self.reported_devices = {
                d for d, x in self.secure.index.items() if x in self.secure.server.survivors
            }
        mean, measurements = self.accumulator.result()
        if self.kept_on_devices:
            mean = {
                k: np.zeros_like(v) if k in self.kept_on_devices else v for k, v in mean.items()
            }
        return mean, measurements

    def publish(self, now: float) -> None:
        """The closed aggregate became version + 1: open the next round/buffer."""
        if self.settings.mode == "sync":
            # past the deadline they are stragglers; before it, the goal was met without them
            self._drop_unreported("deadline" if self.phase == "closing" else "round_full")
        keep = self.assigned  # async: devices in flight continue (they will be stale by one)
        self.events.append(
            {
                "event": "version_published",
                "round": self.round_id,
                "version": self.version + 1,
                "accepted": self.accepted,
                "at": now,
            }
            | self.traffic
        )
        self.traffic = {"bytes_up": 0, "bytes_down": 0}
        self.version += 1
        self._open_round(now)
        if self.settings.mode == "async":
            self.assigned = keep
            self._earliest_deadline = -math.inf  # the next tick looks at every deadline
        target = self.settings.target
        if (
            target is not None
            and target.max_versions is not None
            and self.version >= target.max_versions
        ):
            self.paused = True
            self.events.append(
                {
                    "event": "max_versions_reached",
                    "version": self.version,
                    "round": self.round_id,
                    "at": now,
                }
            )

    def refuse_version(self, reason: str, now: float) -> None:
        """The closed aggregate must not become a version (e.g. it is not finite): the
        model stays at this version, stateful stages go back to where they were, and a
        new round/buffer starts without the updates of this one (the caller drops them)."""
        for stage, state in zip(stateful_stages(self.stage), self._stage_states):
            stage.load_state(state)
        if self.settings.mode == "sync":
            self._drop_unreported("version_refused")
        keep = self.assigned
        self.events.append(
            {
                "event": "version_refused",
                "round": self.round_id,
                "version": self.version + 1,
                "accepted": self.accepted,
                "reason": reason,
                "at": now,
            }
        )
        self._open_round(now)
        if self.settings.mode == "async":
            self.assigned = keep
            self._earliest_deadline = -math.inf  # the next tick looks at every deadline

    # -- persistence ------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Plain data: everything but the accumulator, which the service rebuilds by
        replaying the round's durable updates."""
        return {
            "version": self.version,
            "paused": self.paused,
            "round_id": self.round_id,
            "phase": self.phase,
            "round_started": self.round_started,
            "assigned": {d: list(v) for d, v in self.assigned.items()},
            "funnel": self.funnel.to_json(),
            "dropped_devices": dict(self.dropped_devices),
            "refused_devices": sorted(self.refused_devices),
            "traffic": dict(self.traffic),
            "stages": [s.state() for s in stateful_stages(self.stage)],
        }

    def restore(self, snap: dict) -> None:
        self.version, self.paused = snap["version"], snap["paused"]
        self.round_id, self.phase = snap["round_id"], snap["phase"]
        self.round_started = snap["round_started"]
        self.assigned = {d: (int(v[0]), float(v[1])) for d, v in snap["assigned"].items()}
        self._earliest_deadline = -math.inf
        self.funnel = Funnel.from_json(snap["funnel"])
        # absent from older snapshots
        self.dropped_devices = {d: int(r) for d, r in snap.get("dropped_devices", {}).items()}
        self.refused_devices = set(snap.get("refused_devices", []))
        self.traffic = {
            k: int(snap.get("traffic", {}).get(k, 0)) for k in ("bytes_up", "bytes_down")
        }
        for stage, state in zip(stateful_stages(self.stage), snap.get("stages", [])):
            stage.load_state(state)
        self.outcomes, self.reported_devices, self.accepted = {}, set(), 0
        self.accumulator = self.stage.start()
        self.events = []
        if self.settings.secagg is not None and self.phase != "selecting":
            # a secure round lives in memory only: after a restart it is re-run
            self._abandon(self.round_started, "secagg_restarted")
