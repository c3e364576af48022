"""The aggregator's use cases, between the HTTP edge and the coordinator: enrollment,
check-in, upload, commit, task administration, and recovery at start-up.

Order of an upload: peek the header (cheap) -> authorize -> decode and verify (one update
in memory) -> coordinator.admit -> store.save_update (durable) -> coordinator.accept ->
commit a version when the round/buffer is ready -> acknowledge. After a crash,
`recover()` replays every durable update of the open rounds, so each acknowledged update
counts exactly once.

With a shared store (PostgreSQL) several processes serve one fleet: any of them enrolls,
authenticates and serves models; each task's coordinator runs in the one process that
leads it (`store.try_lead`), and a process that loses the lead, or cannot tell whether a
write took effect, drops its coordinator and reloads it from the store when it leads
again: the same path as a restart after a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.protocol import (
    DecodeLimits,
    NonFinite,
    UpdateMeta,
    decode_parameters,
    decode_update,
    encode_parameters,
    open_update,
)
from edge_sdk.protocol.secagg import decode_masked_input
from edge_sdk.protocol.typedjson import BadField

from .aggregation import build_aggregation
from .config import TaskSettings
from .coordinator import (
    Admission,
    Assignment,
    ComeBackLater,
    EvalAssignment,
    Funnel,
    Outcome,
    TaskCoordinator,
)
from .errors import (
    BadRequest,
    EnrollmentClosed,
    Forbidden,
    NotFound,
    NotLeader,
    RoundClosed,
    StoreUnavailable,
    TaskFailed,
    Unauthorized,
    UpdateNormExceeded,
    UpdateNotFinite,
)
from .numerics import all_finite, dense_delta, norm_over
from .privacy import PrivacyAccountant
from .server_optimizers import build_server_optimizer
from .store import AlreadyAggregated, Device, PendingUpdate, Store, TaskRecord
from .uploads import UploadQuota, UploadSessions
from .vocabulary import failure_reason

log = logging.getLogger(__name__)

TASK_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A task id: 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit (it names
files and URL paths, so never '.', '/' or anything a path could interpret)."""


@dataclass
class _Task:
    record: TaskRecord
    settings: TaskSettings
    coordinator: TaskCoordinator
    parameters: dict[str, np.ndarray]
    optimizer_state: dict


class AggregatorService:
    def __init__(
        self,
        store: Store,
        clock,
        rng: np.random.Generator,
        enrollment_secrets: dict[str, str],
        limits: DecodeLimits = DecodeLimits(),
        address: str | None = None,
        upload_quota: UploadQuota = UploadQuota(),
    ):
        """address: where the other processes sharing the store reach this one."""
        self.store, self.clock, self.rng = store, clock, rng
        self.uploads = UploadSessions(store, clock, upload_quota, limits.max_message_bytes)
        self.enrollment_secrets, self.limits = enrollment_secrets, limits
        self.address = address
        self.records: dict[str, TaskRecord] = {}  # every task
        self.tasks: dict[str, _Task] = {}  # the tasks this process leads, with coordinators
        self.failed: dict[str, str] = {}  # tasks whose stored state did not load here: why
        self.counters: dict[str, int] = {}
        self._devices: dict[str, Device] = {}  # token hash -> device (authenticate)

    # -- start-up and leadership ------------------------------------------------------------
    def recover(self) -> None:
        """Load every task this process may lead, restore its coordinator and replay its
        durable updates. A task whose stored state no longer loads is marked failed (with
        the reason, in the store, the admin API and the log) and the others serve."""
        failed_before = self.store.failures()
        for record in self.store.tasks():
            self.records[record.task_id] = record
            if self._lead(record) and record.task_id in failed_before:
                self.store.clear_failed(record.task_id)  # repaired since: it serves again

    def _lead(self, record: TaskRecord) -> bool:
        if not self.store.try_lead(record.task_id, self.address, self.clock.now()):
            return False
        try:
            self._load_task(record)
        except (NotLeader, StoreUnavailable):
            self.tasks.pop(record.task_id, None)  # tried again at the next tick
            return False
        except Exception as e:  # noqa: BLE001 - stored state must never stop the server
            self._fail(record.task_id, e)
            return False
        return True

    def _fail(self, task_id: str, error: Exception) -> None:
        """Stop serving a task whose stored state does not load; say why, durably. It is
        not retried until the next start (after the operator repaired it)."""
        reason = _printable(
            str(error) if isinstance(error, TaskFailed) else f"{type(error).__name__}: {error}"
        )
        self.tasks.pop(task_id, None)
        self.failed[task_id] = reason
        log.error("task %r does not load and is not served: %s", task_id, reason, exc_info=error)
        try:
            self.store.mark_failed(task_id, reason, self.clock.now())
        except Exception:  # noqa: BLE001 - shown in memory anyway
            log.exception("could not record the failure of task %r", task_id)

    def _keep_leadership(self) -> None:
        """Drop coordinators whose lead was lost; lead (and so load) tasks nobody leads."""
        if self.store.shared:
            for task_id in set(self.tasks) - self.store.leading():
                del self.tasks[task_id]
            for record in self.store.tasks():
                self.records.setdefault(record.task_id, record)
        for task_id, record in list(self.records.items()):
            if task_id not in self.tasks and task_id not in self.failed:
                self._lead(record)

    @contextlib.contextmanager
    def _owning(self, task: _Task):
        """A coordinator write that the store refused, or whose outcome is unknown, leaves
        the coordinator in memory out of step with the store: drop it (reloaded when led)."""
        try:
            yield
        except (NotLeader, StoreUnavailable):
            self.tasks.pop(task.record.task_id, None)
            raise

    def leads(self, task_id: str) -> bool:
        """The task's calls are answered here (a task that failed here: with TaskFailed)."""
        return task_id in self.tasks or task_id in self.failed

    def knows(self, task_id: str) -> bool:
        try:
            self._record(task_id)
        except NotFound:
            return False
        return True

    def leader_url(self, task_id: str) -> str | None:
        """Where the process leading `task_id` is reached (None: unknown)."""
        return self.store.leader_url(task_id)

    def upload_task(self, upload_id: str) -> str | None:
        info = self.store.upload_info(upload_id)
        return None if info is None else info["task_id"]

    def spread_check_in(self) -> str | None:
        """For a check-in naming no task, when other processes lead some: a task drawn
        from all of them (None: every task is led here, so choose among these)."""
        serving = set(self.records) - set(self.failed)
        if serving <= set(self.tasks):
            return None
        ids = sorted(serving)
        return ids[int(self.rng.integers(len(ids)))]

    def _load_task(self, record: TaskRecord) -> _Task:
        """The task's coordinator rebuilt from the store. Any part that does not load
        raises TaskFailed naming the part (NotLeader, StoreUnavailable pass through)."""
        with _loading("stored settings"):
            settings = TaskSettings.from_json(record.settings)
            if not isinstance(record.specs, list):
                raise ValueError("the stored parameter specs are not a JSON list")
            shapes = {s["name"]: tuple(s["shape"]) for s in record.specs}
        with _loading("model file"):
            version, path = self.store.latest_model(record.task_id)
            _, params = decode_parameters(path.read_bytes(), record.specs)  # finite, checked
        with _loading("optimizer state"):
            opt_state = self.store.optimizer_state(record.task_id)
            _check_optimizer_state(opt_state, params)
        with _loading("coordinator snapshot"):
            stage = build_aggregation(settings.aggregation(), self.rng)
            now = self.clock.now()
            coordinator = TaskCoordinator(
                record.task_id, settings, version, stage, self.rng, now, shapes=shapes
            )
            snapshot = self.store.snapshot(record.task_id)
            if snapshot is not None:
                coordinator.restore(snapshot)
            coordinator.version = version  # the stored model is the truth for the version
        task = _Task(record, settings, coordinator, params, opt_state)
        stale = False
        with _loading("pending update"):
            for update in self.store.pending_updates(record.task_id):
                if update.round_id != coordinator.round_id:
                    stale = True  # from an abandoned round
                    continue
                decoded = decode_update(
                    self.store.update_bytes(update),
                    record.specs,
                    public_key=None,
                    limits=self.limits,
                    keep_parts=True,
                )
                coordinator.accept(
                    decoded.meta, decoded.tensors, Admission(update.weight, update.staleness)
                )
        self.tasks[record.task_id] = task
        if stale and not coordinator.accepted:
            self.store.drop_pending(record.task_id)
        with _loading("commit of the replayed updates"):
            self._maybe_commit(task)
        return task

    # -- administration ------------------------------------------------------------------------
    def create_task(self, task_id: str, bundle_dir: str, settings: TaskSettings | dict) -> dict:
        """Everything is checked before the store is touched (nothing of a refused request
        is written): the task id, the settings (JSON is checked with its paths), the
        bundle and its initial parameters against its manifest. BadRequest names the
        field."""
        if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
            raise BadRequest(
                f"task_id must be 1 to 64 of a-z, 0-9, '_', '-', starting with a "
                f"letter or digit, got {task_id!r}",
                field="task_id",
            )
        if isinstance(settings, dict):
            settings = TaskSettings.from_json(settings)  # BadField: 400 naming the field
        elif not isinstance(settings, TaskSettings):
            raise BadRequest("settings must be an object", field="settings")
        if task_id in self.records or self.store.has_task(task_id):
            raise BadRequest(f"task {task_id!r} exists", field="task_id")
        if not isinstance(bundle_dir, str) or not bundle_dir:
            raise BadRequest("bundle_dir must name a bundle directory", field="bundle_dir")
        try:
            model_id, specs, params = _read_bundle(Path(bundle_dir))
            model = encode_parameters(params, specs, model_id, 0)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BadRequest(
                f"cannot use the bundle at {bundle_dir}: {e}", field="bundle_dir"
            ) from None
        record = TaskRecord(task_id, settings.to_json(), bundle_dir, model_id, specs)
        self.store.add_task(record, model, self.clock.now())
        self.records[task_id] = record
        if self._lead(record):  # else another process took it first and runs it
            task = self.tasks[task_id]
            with self._owning(task):
                self.store.save_snapshot(task_id, task.coordinator.snapshot())
        return self.describe(task_id)

    def set_paused(self, task_id: str, paused: bool) -> dict:
        task = self._task(task_id)
        with self._owning(task):
            task.coordinator.paused = paused
            self.store.save_snapshot(task_id, task.coordinator.snapshot())
        return self.describe(task_id)

    def describe(self, task_id: str) -> dict:
        """The live coordinator's state where it runs; elsewhere, as last stored. `state`
        is "active", "paused" or "failed" (then `error` says why it does not load)."""
        task = self.tasks.get(task_id)
        if task is None:
            return self._describe_stored(self._record(task_id))
        c = task.coordinator
        return {
            "task_id": task_id,
            "state": "paused" if c.paused else "active",
            "mode": task.settings.mode,
            "model_id": task.record.model_id,
            "version": c.version,
            "round": c.round_id,
            "phase": c.phase,
            "paused": c.paused,
            "in_flight": len(c.assigned),
            "accepted": c.accepted,
            "funnel": c.funnel.to_json(),
            "settings": task.settings.to_json(),
            "led_here": True,
        }

    def _describe_stored(self, record: TaskRecord) -> dict:
        error = self.failed.get(record.task_id) or self.store.failures().get(record.task_id)
        try:
            settings = TaskSettings.from_json(record.settings)
            snap = self.store.snapshot(record.task_id) or {}
        except ValueError as e:  # BadField included
            error = error or _printable(f"stored settings: {e}")
        if error is not None:
            return {
                "task_id": record.task_id,
                "state": "failed",
                "error": error,
                "model_id": record.model_id,
                "led_here": record.task_id in self.failed,
            }
        round_id = snap.get("round_id", 1)
        accepted = sum(u.round_id == round_id for u in self.store.pending_updates(record.task_id))
        return {
            "task_id": record.task_id,
            "state": "paused" if snap.get("paused", False) else "active",
            "mode": settings.mode,
            "model_id": record.model_id,
            "version": snap.get("version", 0),
            "round": round_id,
            "phase": snap.get("phase", "selecting"),
            "paused": snap.get("paused", False),
            "in_flight": len(snap.get("assigned", {})),
            "accepted": accepted,
            "funnel": snap.get("funnel") or Funnel().to_json(),
            "settings": settings.to_json(),
            "led_here": False,
        }

    def history(self, task_id: str) -> dict:
        self._record(task_id)
        evaluations = []
        for version, sums in sorted(self.store.evaluation_totals(task_id).items()):
            count = sums.get("count", 0.0)
            rates = {
                f"{k}_rate": sums[k] / count
                for k in ("correct", "correct_top3")
                if k in sums and count
            }
            evaluations.append({"version": version, **sums, **rates})
        heldout = [{"version": v, **m} for v, m in self.store.heldout_results(task_id).items()]
        return {
            "versions": self.store.model_history(task_id),
            "events": self.store.events(task_id),
            "federated_evaluation": evaluations,
            "heldout_evaluation": heldout,
        }

    def record_heldout(self, task_id: str, version: int, doc: dict) -> dict:
        """One model version's metrics on a held-out set, from the evaluator that runs
        beside the server (server_eval/): the aggregator itself never runs a model."""
        self._record(task_id)
        if self.store.model_path(task_id, version) is None:
            raise NotFound(f"task {task_id} has no model version {version}")
        metrics = doc.get("metrics") if isinstance(doc, dict) else None
        if (
            not isinstance(metrics, dict)
            or not 0 < len(metrics) <= 32
            or not all(
                isinstance(k, str)
                and len(k) <= 64
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
                and np.isfinite(v)
                for k, v in metrics.items()
            )
        ):
            raise BadRequest("metrics must map 1 to 32 names (<= 64 characters) to finite numbers")
        recorded = self.store.add_heldout(task_id, version, metrics, self.clock.now())
        return {"status": "recorded" if recorded else "duplicate"}

    def submit_evaluation(self, device: Device, task_id: str, doc: dict) -> dict:
        """A device's metric sums for one model version, from its local examples."""
        task = self._task(task_id)
        version, sums = doc.get("model_version"), doc.get("sums")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BadRequest("model_version must be an integer")
        allowed = {"loss_sum", "correct", "correct_top3", "count"}
        if (
            not isinstance(sums, dict)
            or not sums
            or set(sums) - allowed
            or not all(
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and np.isfinite(v)
                and v >= 0
                for v in sums.values()
            )
        ):
            raise BadRequest(
                f"sums must map some of {sorted(allowed)} to finite non-negative numbers"
            )
        if self.store.has_evaluation(task_id, version, device.device_id):
            return {"status": "duplicate"}  # a retry of a recorded report
        with self._owning(task):
            task.coordinator.record_evaluation(device.device_id, version, self.clock.now())
            self.store.add_evaluation(task_id, version, device.device_id, sums)
        return {"status": "recorded"}

    # -- devices ------------------------------------------------------------------------------
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
            Device(device_id, population, public_key), _hash(token), self.clock.now()
        )
        return {"device_id": device_id, "token": token}

    def authenticate(self, token: str | None) -> Device:
        device = self.known_device(token)
        if device is None and token:
            device = self.store.device_by_token(_hash(token))
            if device is not None:
                if len(self._devices) >= _KNOWN_DEVICES:
                    self._devices.clear()  # cheaper than LRU order; a miss costs one read
                self._devices[_hash(token)] = device
        if device is None:
            raise Unauthorized("unknown or missing device token")
        return device

    def known_device(self, token: str | None) -> Device | None:
        """The device of a token seen before, from memory: safe from any thread (a token
        never changes its device), so the app answers most authentications without a
        trip to the service's thread. None: ask `authenticate`."""
        return self._devices.get(_hash(token)) if token else None

    def check_in(
        self, device: Device, task_id: str | None
    ) -> Assignment | EvalAssignment | ComeBackLater:
        tasks = [self._task(task_id)] if task_id else list(self.tasks.values())
        if not tasks:
            return ComeBackLater(self.clock.now() + 60.0)
        task = tasks[int(self.rng.integers(len(tasks)))]
        now = self.clock.now()
        with self._owning(task):
            result = task.coordinator.check_in(device.device_id, now)
            self._after_change(task)
        return result

    def report_failure(self, device: Device, task_id: str, reason: str) -> None:
        task = self._task(task_id)
        with self._owning(task):
            # a fixed vocabulary: reasons become metric labels and stored counters
            task.coordinator.report_failure(
                device.device_id, failure_reason(reason), self.clock.now()
            )
            self._after_change(task)

    def model_file(self, task_id: str, version: int | None) -> tuple[int, Path]:
        """Any process serves models: they are in the store, and never change."""
        self._record(task_id)
        if version is None:
            task = self.tasks.get(task_id)
            if task is None:
                return self.store.latest_model(task_id)
            version = task.coordinator.version
        path = self.store.model_path(task_id, version)
        if path is None:
            raise NotFound(f"task {task_id} has no model version {version}")
        return version, path

    def submit_update(self, device: Device, task_id: str, data: bytes) -> dict:
        task = self._task(task_id)
        if task.settings.secagg is not None:
            raise BadRequest(
                "this task uses secure aggregation: devices send masked inputs "
                "(/secagg), never an individual update"
            )
        checked = open_update(data, self.limits)  # the checksum is computed once, here
        meta = checked.meta
        if meta.device_id != device.device_id:
            raise Forbidden("an update may only be sent by the device that made it")
        if meta.task_id != task_id or meta.model_id != task.record.model_id:
            raise BadRequest("the update is for another task or model")
        # keys are the device's own, per task: nobody else's update can shadow this one
        seen = self.store.seen_update(task_id, meta.device_id, meta.idempotency_key)
        if seen is not None and seen >= 0:  # already aggregated into a published version
            return {"status": "duplicate", "aggregated_into": seen}
        c = task.coordinator
        try:
            decoded = decode_update(
                checked,
                task.record.specs,
                public_key=device.public_key,
                limits=self.limits,
                keep_parts=True,
            )
        except NonFinite as e:
            c.refuse_update("not_finite")
            raise UpdateNotFinite(f"the update is not finite: {e}") from None
        self._check_norm(task, decoded.tensors)
        now = self.clock.now()
        with self._owning(task):
            admission = c.admit(meta, now)
            if isinstance(admission, Outcome):
                return {"status": "duplicate", "version": c.version}
            try:
                self.store.save_update(
                    task_id,
                    PendingUpdate(
                        meta.idempotency_key,
                        c.round_id,
                        meta.device_id,
                        meta.model_version,
                        admission.weight,
                        admission.staleness,
                    ),
                    data,
                    meta.metrics,
                    c.snapshot(),
                    now,
                )
            except AlreadyAggregated:  # the store, not this process's memory, decides
                seen = self.store.seen_update(task_id, meta.device_id, meta.idempotency_key)
                if seen is not None and seen >= 0:
                    return {"status": "duplicate", "aggregated_into": seen}
                return {"status": "duplicate", "version": c.version}  # pending
            outcome = c.accept(meta, decoded.tensors, admission)
            del decoded
            self._maybe_commit(task)
        return {
            "status": "accepted",
            "weight": outcome.weight,
            "staleness": outcome.staleness,
            "version": c.version,
        }

    def _check_norm(self, task: _Task, delta) -> None:
        """Refuse an update over the task's L2 norm bound (counted, nothing stored)."""
        bound = task.settings.max_update_norm
        if bound is None:
            return
        norm = norm_over(delta, bound)
        if norm is not None:
            task.coordinator.refuse_update("norm_exceeded")
            raise UpdateNormExceeded(
                f"the update's L2 norm {norm:.6g} exceeds this task's max_update_norm {bound:g}",
                norm=_json_number(norm),
                max_update_norm=bound,
            )

    # -- resumable uploads (uploads.py) -----------------------------------------------------
    def begin_upload(self, device: Device, task_id: str, size: int, sha256: str) -> dict:
        self._task(task_id)
        return self.uploads.begin(device, task_id, size, sha256)

    def upload_status(self, device: Device, upload_id: str) -> dict:
        return self.uploads.status(device, upload_id)

    def append_chunk(self, device: Device, upload_id: str, offset: int, chunk: bytes) -> dict:
        return self.uploads.append(device, upload_id, offset, chunk)

    def commit_upload(self, device: Device, upload_id: str) -> dict:
        task_id, data = self.uploads.complete(device, upload_id)
        result = self.submit_update(device, task_id, data)
        self.uploads.finish(upload_id)
        return result

    def expire_uploads(self) -> int:
        """Remove resumable uploads past their time, with their bytes (the ticker calls
        this, and `make_service` at start-up)."""
        return self.uploads.expire()

    # -- commits ---------------------------------------------------------------------------
    # -- secure aggregation (sync rounds; see secure_round.py) ----------------------------------
    def _secure(self, device: Device, task_id: str, round_id: int, joining: bool = False):
        task = self._task(task_id)
        c = task.coordinator
        secure = c.secure_round(device.device_id, self.clock.now(), joining)
        if round_id != c.round_id:
            raise RoundClosed(
                f"round {round_id} is over; the current round is {c.round_id}", round=c.round_id
            )
        return task, secure

    def _secure_step(self, task: _Task, device: Device) -> dict:
        # read the device's view before committing: a commit opens the next round
        view = task.coordinator.secure.view_for(device.device_id)
        with self._owning(task):
            self._after_change(task)
        return view

    def secagg_state(self, device: Device, task_id: str, round_id: int) -> dict:
        task, secure = self._secure(device, task_id, round_id)
        return self._secure_step(task, device)

    def secagg_advertise(
        self, device: Device, task_id: str, round_id: int, c_public: bytes, s_public: bytes
    ) -> dict:
        task, secure = self._secure(device, task_id, round_id, joining=True)
        secure.advertise(device.device_id, c_public, s_public, self.clock.now())
        return self._secure_step(task, device)

    def secagg_share(
        self, device: Device, task_id: str, round_id: int, shares: dict[int, bytes]
    ) -> dict:
        task, secure = self._secure(device, task_id, round_id)
        secure.share(device.device_id, shares, self.clock.now())
        return self._secure_step(task, device)

    def secagg_masked_input(self, device: Device, task_id: str, round_id: int, data: bytes) -> dict:
        task, secure = self._secure(device, task_id, round_id)
        y = decode_masked_input(data, secure.length)  # a ProtocolError is a 400 with its code
        secure.masked_input(device.device_id, y, self.clock.now())
        return self._secure_step(task, device)

    def secagg_reveal(
        self, device: Device, task_id: str, round_id: int, shares: dict[int, tuple[str, int]]
    ) -> dict:
        task, secure = self._secure(device, task_id, round_id)
        secure.reveal(device.device_id, shares, self.clock.now())
        return self._secure_step(task, device)

    def tick(self) -> None:
        """Keep leadership, and advance the deadlines of the tasks led here (called
        periodically by the app)."""
        self._keep_leadership()
        self.expire_uploads()
        for task in list(self.tasks.values()):
            with contextlib.suppress(NotLeader, StoreUnavailable), self._owning(task):
                task.coordinator.tick(self.clock.now())
                self._after_change(task)

    def _after_change(self, task: _Task) -> None:
        events = task.coordinator.events
        if any(e["event"] == "round_abandoned" for e in events):
            self.store.drop_pending(task.record.task_id)
        if not self._maybe_commit(task):
            self.store.save_snapshot(task.record.task_id, task.coordinator.snapshot())
        self._flush_events(task)

    def _maybe_commit(self, task: _Task) -> bool:
        """Commit a version when the round/buffer is ready. An aggregate, model or server
        optimizer state that is not finite is never stored: the version is refused (an
        event says why), the previous model stays, and the round/buffer starts over
        without the updates that made it."""
        c = task.coordinator
        if not c.ready_to_commit():
            return False
        now = self.clock.now()
        task_id = task.record.task_id
        metrics = _mean_metrics(self.store.pending_metrics(task_id))
        mean, measurements = c.close_aggregate()
        optimizer = build_server_optimizer(
            task.settings.server_optimizer, lr=task.settings.server_lr_at(c.version)
        )
        params, state = optimizer.step(task.parameters, mean, task.optimizer_state)
        reason = _not_finite(mean, params, state)
        if reason is not None:
            c.refuse_version(reason, now)
            # the next round's state first: after a crash in between, the refused
            # round's updates are from an abandoned round and are dropped at start-up
            self.store.save_snapshot(task_id, c.snapshot())
            self.store.drop_pending(task_id)
            self._flush_events(task)
            return True
        c.publish(now)
        model = encode_parameters(params, task.record.specs, task.record.model_id, c.version)
        metrics |= {"measurements": _finite_json(measurements)} | self._privacy(task)
        self.store.commit_version(task_id, c.version, model, state, c.snapshot(), metrics, now)
        task.parameters, task.optimizer_state = params, state
        self._flush_events(task)
        return True

    def _privacy(self, task: _Task) -> dict:
        """(epsilon, delta) spent after this version; pause the task at its budget."""
        dp = task.settings.dp
        if dp is None:
            return {}
        delta = dp.target_delta
        epsilon = PrivacyAccountant(
            dp.noise_multiplier, task.settings.sampling_rate(), delta
        ).epsilon(task.coordinator.version)
        budget = dp.epsilon_budget
        if budget is not None and epsilon >= budget:
            task.coordinator.paused = True
            task.coordinator.events.append(
                {
                    "event": "privacy_budget_reached",
                    "epsilon": _json_number(epsilon),
                    "round": task.coordinator.round_id,
                    "at": self.clock.now(),
                }
            )
        return {"epsilon": _json_number(epsilon), "delta": delta}

    def _flush_events(self, task: _Task) -> None:
        self.store.add_events(task.record.task_id, task.coordinator.events)
        task.coordinator.events = []

    def _task(self, task_id: str) -> _Task:
        """A task led here (NotLeader: it exists, another process runs it)."""
        task = self.tasks.get(task_id)
        if task is None:
            self._record(task_id)
            if task_id in self.failed:
                raise TaskFailed(
                    f"task {task_id!r} is not served: its stored state did not "
                    f"load ({self.failed[task_id]}); see GET /v1/admin/tasks/"
                    f"{task_id}",
                    task_id=task_id,
                )
            raise NotLeader(f"another process leads task {task_id!r}", retry_after_s=1)
        return task

    # -- queries: what handlers and the simulator ask (they never index self.tasks) ---------
    def task_ids(self) -> list[str]:
        """Every task this process knows, led here or not."""
        return list(self.records)

    def describe_tasks(self, with_history: bool) -> list[dict]:
        """describe() of every task, with history() when asked."""
        return [
            self.describe(t) | (self.history(t) if with_history else {}) for t in self.task_ids()
        ]

    def led_task_ids(self) -> list[str]:
        """The tasks this process leads (their coordinators run here)."""
        return list(self.tasks)

    def current_version(self, task_id: str) -> int:
        """The model version a task led here trains now."""
        return self._task(task_id).coordinator.version

    def current_parameters(self, task_id: str) -> dict[str, np.ndarray]:
        """The parameters (float32 arrays; do not mutate) of a task led here, at its
        current version."""
        return self._task(task_id).parameters

    def dropouts(self, task_id: str) -> dict[str, int]:
        """Devices dropped from a task led here, by reason, since it started."""
        return dict(self._task(task_id).coordinator.funnel.dropped)

    def heldout_results(self, task_id: str) -> dict[int, dict]:
        """version -> the held-out evaluator's metrics of that version."""
        self._record(task_id)
        return self.store.heldout_results(task_id)

    def assignment_terms(self, task_id: str) -> tuple[str, dict]:
        """(model_id, settings as JSON) of a task led here: what an assignment carries."""
        task = self._task(task_id)
        return task.record.model_id, task.settings.to_json()

    def close(self) -> None:
        """Close the store (the service is not used afterwards)."""
        self.store.close()

    def _record(self, task_id: str) -> TaskRecord:
        record = self.records.get(task_id)
        if record is None and self.store.shared and self.store.has_task(task_id):
            record = self.records[task_id] = next(
                r for r in self.store.tasks() if r.task_id == task_id
            )  # made elsewhere
        if record is None:
            raise NotFound(f"unknown task {task_id!r}")
        return record


@contextlib.contextmanager
def _loading(part: str):
    """Name the part of a task's stored state that did not load (TaskFailed)."""
    try:
        yield
    except (NotLeader, StoreUnavailable):
        raise
    except Exception as e:  # noqa: BLE001 - any fault of stored state fails the task only
        detail = str(e) if isinstance(e, BadField) else f"{type(e).__name__}: {e}"
        raise TaskFailed(f"{part}: {detail}") from e


def _check_optimizer_state(state: dict, params: dict[str, np.ndarray]) -> None:
    """Server optimizer state holds `m.NAME` / `v.NAME` arrays shaped as the parameters."""
    for key, value in state.items():
        name = key.partition(".")[2]
        if name not in params or np.shape(value) != params[name].shape:
            raise ValueError(f"optimizer state {key!r} matches no parameter of the model")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"optimizer state {key!r} holds NaN or Inf")


def _read_bundle(bundle: Path) -> tuple[str, list[dict], dict[str, np.ndarray]]:
    """(model_id, parameter specs, initial parameters) of a training bundle, checked:
    the parameters file holds exactly the manifest's tensors, finite, of their shapes."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("model_id"), str)
        or not isinstance(manifest.get("parameters"), list)
        or not manifest["parameters"]
    ):
        raise ValueError("manifest.json needs a string model_id and a list of parameters")
    specs = []
    for p in manifest["parameters"]:
        if (
            not isinstance(p, dict)
            or not isinstance(p.get("name"), str)
            or not isinstance(p.get("shape"), list)
            or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31
                for d in p["shape"]
            )
        ):
            raise ValueError(f"manifest parameter {p!r} needs a name and a shape of integers")
        specs.append({"name": p["name"], "shape": p["shape"]})
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("manifest parameters repeat a name")
    parameters_file = manifest.get("parameters_file", "parameters.npz")
    if not isinstance(parameters_file, str) or Path(parameters_file).name != parameters_file:
        raise ValueError("parameters_file must name a file in the bundle directory")
    with np.load(bundle / parameters_file, allow_pickle=False) as npz:
        params = {k: npz[k] for k in npz.files}
    if set(params) != set(names):
        raise ValueError(
            f"{parameters_file} holds {sorted(params)}, the manifest names {sorted(names)}"
        )
    for s in specs:
        value = params[s["name"]]
        if value.shape != tuple(s["shape"]) or not np.issubdtype(value.dtype, np.floating):
            raise ValueError(
                f"parameter {s['name']!r} is {value.dtype} {value.shape}, the "
                f"manifest says float {tuple(s['shape'])}"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"parameter {s['name']!r} holds NaN or Inf")
    return manifest["model_id"], specs, params


def _printable(text: str, limit: int = 500) -> str:
    """Free text made safe to store and to send as JSON: no lone surrogates, bounded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


_KNOWN_DEVICES = 100_000  # tokens whose device is kept in memory


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _mean_metrics(rows: list[dict]) -> dict:
    """Each metric's mean over the updates that report it, in float64; a mean that is not
    finite is left out (the values were checked at the door, but a JSON document must
    never hold Infinity)."""
    out = {}
    for key in sorted({k for r in rows for k in r}):
        values = np.array([_float(r[key]) for r in rows if key in r], np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = float(np.mean(values))
        if math.isfinite(mean):
            out[key] = mean
    return out


def _float(value) -> float:
    """A stored metric value as a float (NaN for what is none: rows from before the
    door checked them must not stop a commit or a start-up)."""
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return math.nan


def _not_finite(mean, params: dict, state: dict) -> str | None:
    """Why a version must not be committed (None: it may)."""
    if not all_finite(dense_delta(mean)):
        return "aggregate_not_finite"
    if not all_finite(params):
        return "model_not_finite"
    if not all_finite(state):
        return "optimizer_state_not_finite"
    return None


def _json_number(x: float) -> float | None:
    """x, or None where JSON has no number for it (NaN, Infinity)."""
    return x if math.isfinite(x) else None


def _finite_json(doc):
    """doc with every non-finite float replaced by None (stage measurements)."""
    if isinstance(doc, dict):
        return {k: _finite_json(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_finite_json(v) for v in doc]
    if isinstance(doc, float):
        return _json_number(doc)
    return doc


__all__ = ["AggregatorService", "UpdateMeta"]
