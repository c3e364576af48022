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
import math
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.protocol import (DecodeLimits, NonFinite, UpdateMeta, decode_parameters,
                               decode_update, encode_parameters, open_update)
from edge_sdk.protocol.secagg import decode_masked_input

from .config import TaskSettings
from .coordinator import (Admission, Assignment, ComeBackLater, EvalAssignment, Funnel,
                          Outcome, TaskCoordinator)
from .errors import (BadRequest, Forbidden, NotFound, NotLeader, PayloadTooLarge, RoundClosed,
                     StoreUnavailable, Unauthorized, UpdateNormExceeded, UpdateNotFinite,
                     UploadOffsetMismatch)
from .numerics import all_finite, dense_delta, norm_over
from .server_optimizers import build_server_optimizer
from .privacy import PrivacyAccountant
from .stages import build_aggregation
from .store import AlreadyAggregated, Device, PendingUpdate, Store, TaskRecord


@dataclass
class _Task:
    record: TaskRecord
    settings: TaskSettings
    coordinator: TaskCoordinator
    parameters: dict[str, np.ndarray]
    optimizer_state: dict


class AggregatorService:
    def __init__(self, store: Store, clock, rng: np.random.Generator,
                 enrollment_secrets: dict[str, str], limits: DecodeLimits = DecodeLimits(),
                 address: str | None = None):
        """address: where the other processes sharing the store reach this one."""
        self.store, self.clock, self.rng = store, clock, rng
        self.enrollment_secrets, self.limits = enrollment_secrets, limits
        self.address = address
        self.records: dict[str, TaskRecord] = {}  # every task
        self.tasks: dict[str, _Task] = {}  # the tasks this process leads, with coordinators
        self.counters: dict[str, int] = {}

    # -- start-up and leadership ------------------------------------------------------------
    def recover(self) -> None:
        """Load every task this process may lead, restore its coordinator and replay its
        durable updates."""
        for record in self.store.tasks():
            self.records[record.task_id] = record
            self._lead(record)

    def _lead(self, record: TaskRecord) -> bool:
        if not self.store.try_lead(record.task_id, self.address, self.clock.now()):
            return False
        try:
            self._load_task(record)
        except (NotLeader, StoreUnavailable):
            self.tasks.pop(record.task_id, None)  # tried again at the next tick
            return False
        return True

    def _keep_leadership(self) -> None:
        """Drop coordinators whose lead was lost; lead (and so load) tasks nobody leads."""
        if self.store.shared:
            for task_id in set(self.tasks) - self.store.leading():
                del self.tasks[task_id]
            for record in self.store.tasks():
                self.records.setdefault(record.task_id, record)
        for task_id, record in list(self.records.items()):
            if task_id not in self.tasks:
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
        return task_id in self.tasks

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
        if set(self.records) <= set(self.tasks):
            return None
        ids = sorted(self.records)
        return ids[int(self.rng.integers(len(ids)))]

    def _load_task(self, record: TaskRecord) -> _Task:
        settings = TaskSettings.from_json(record.settings)
        version, path = self.store.latest_model(record.task_id)
        _, params = decode_parameters(path.read_bytes(), record.specs)
        stage = build_aggregation(settings.aggregation(), self.rng)
        now = self.clock.now()
        coordinator = TaskCoordinator(record.task_id, settings, version, stage, self.rng, now,
                                      shapes={s["name"]: tuple(s["shape"]) for s in record.specs})
        snapshot = self.store.snapshot(record.task_id)
        opt_state = self.store.optimizer_state(record.task_id)
        if snapshot is not None:
            coordinator.restore(snapshot)
        coordinator.version = version  # the stored model is the truth for the version
        task = _Task(record, settings, coordinator, params, opt_state)
        self.tasks[record.task_id] = task
        stale = False
        for update in self.store.pending_updates(record.task_id):
            if update.round_id != coordinator.round_id:
                stale = True  # from an abandoned round
                continue
            decoded = decode_update(self.store.update_bytes(update), record.specs, public_key=None,
                                    limits=self.limits, keep_parts=True)
            coordinator.accept(decoded.meta, decoded.tensors,
                               Admission(update.weight, update.staleness))
        if stale and not coordinator.accepted:
            self.store.drop_pending(record.task_id)
        self._maybe_commit(task)
        return task

    # -- administration ------------------------------------------------------------------------
    def create_task(self, task_id: str, bundle_dir: str, settings: TaskSettings) -> dict:
        if task_id in self.records or self.store.has_task(task_id):
            raise BadRequest(f"task {task_id!r} exists")
        bundle = Path(bundle_dir)
        try:
            manifest = json.loads((bundle / "manifest.json").read_text())
            with np.load(bundle / manifest.get("parameters_file", "parameters.npz"),
                         allow_pickle=False) as npz:
                params = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, KeyError) as e:
            raise BadRequest(f"cannot read the bundle at {bundle_dir}: {e}") from None
        specs = [{"name": p["name"], "shape": p["shape"]} for p in manifest["parameters"]]
        record = TaskRecord(task_id, settings.to_json(), str(bundle), manifest["model_id"], specs)
        model = encode_parameters(params, specs, manifest["model_id"], 0)
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
        """The live coordinator's state where it runs; elsewhere, as last stored."""
        task = self.tasks.get(task_id)
        if task is None:
            return self._describe_stored(self._record(task_id))
        c = task.coordinator
        return {"task_id": task_id, "mode": task.settings.mode, "model_id": task.record.model_id,
                "version": c.version, "round": c.round_id, "phase": c.phase,
                "paused": c.paused, "in_flight": len(c.assigned), "accepted": c.accepted,
                "funnel": c.funnel.to_json(), "settings": task.settings.to_json(),
                "led_here": True}

    def _describe_stored(self, record: TaskRecord) -> dict:
        snap = self.store.snapshot(record.task_id) or {}
        round_id = snap.get("round_id", 1)
        accepted = sum(u.round_id == round_id for u in self.store.pending_updates(record.task_id))
        settings = TaskSettings.from_json(record.settings)
        return {"task_id": record.task_id, "mode": settings.mode, "model_id": record.model_id,
                "version": snap.get("version", 0), "round": round_id,
                "phase": snap.get("phase", "selecting"), "paused": snap.get("paused", False),
                "in_flight": len(snap.get("assigned", {})), "accepted": accepted,
                "funnel": snap.get("funnel") or Funnel().to_json(),
                "settings": settings.to_json(), "led_here": False}

    def history(self, task_id: str) -> dict:
        self._record(task_id)
        evaluations = []
        for version, sums in sorted(self.store.evaluation_totals(task_id).items()):
            count = sums.get("count", 0.0)
            rates = {f"{k}_rate": sums[k] / count for k in ("correct", "correct_top3")
                     if k in sums and count}
            evaluations.append({"version": version, **sums, **rates})
        heldout = [{"version": v, **m} for v, m in self.store.heldout_results(task_id).items()]
        return {"versions": self.store.model_history(task_id),
                "events": self.store.events(task_id), "federated_evaluation": evaluations,
                "heldout_evaluation": heldout}

    def record_heldout(self, task_id: str, version: int, doc: dict) -> dict:
        """One model version's metrics on a held-out set, from the evaluator that runs
        beside the server (server_eval/): the aggregator itself never runs a model."""
        self._record(task_id)
        if self.store.model_path(task_id, version) is None:
            raise NotFound(f"task {task_id} has no model version {version}")
        metrics = doc.get("metrics") if isinstance(doc, dict) else None
        if not isinstance(metrics, dict) or not 0 < len(metrics) <= 32 or not all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, (int, float))
                and not isinstance(v, bool) and np.isfinite(v) for k, v in metrics.items()):
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
        if not isinstance(sums, dict) or not sums or set(sums) - allowed or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                and v >= 0 for v in sums.values()):
            raise BadRequest(f"sums must map some of {sorted(allowed)} to finite non-negative numbers")
        if self.store.has_evaluation(task_id, version, device.device_id):
            return {"status": "duplicate"}  # a retry of a recorded report
        with self._owning(task):
            task.coordinator.record_evaluation(device.device_id, version, self.clock.now())
            self.store.add_evaluation(task_id, version, device.device_id, sums)
        return {"status": "recorded"}

    # -- devices ------------------------------------------------------------------------------
    def enroll(self, population: str, secret: str, public_key: bytes) -> dict:
        expected = self.enrollment_secrets.get(population)
        if expected is None or not secrets.compare_digest(expected, secret):
            raise Forbidden("wrong enrollment secret for this population")
        if len(public_key) != 32:
            raise BadRequest("public_key must be a raw 32-byte Ed25519 key (base64)")
        device_id = "dev-" + secrets.token_hex(8)
        token = secrets.token_urlsafe(32)
        self.store.add_device(Device(device_id, population, public_key), _hash(token),
                              self.clock.now())
        return {"device_id": device_id, "token": token}

    def authenticate(self, token: str | None) -> Device:
        device = self.store.device_by_token(_hash(token)) if token else None
        if device is None:
            raise Unauthorized("unknown or missing device token")
        return device

    def check_in(self, device: Device, task_id: str | None) -> Assignment | EvalAssignment | ComeBackLater:
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
            task.coordinator.report_failure(device.device_id, reason, self.clock.now())
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
            raise BadRequest("this task uses secure aggregation: devices send masked inputs "
                             "(/secagg), never an individual update")
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
            decoded = decode_update(checked, task.record.specs, public_key=device.public_key,
                                    limits=self.limits, keep_parts=True)
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
                self.store.save_update(task_id, PendingUpdate(
                    meta.idempotency_key, c.round_id, meta.device_id, meta.model_version,
                    admission.weight, admission.staleness), data, meta.metrics, c.snapshot(), now)
            except AlreadyAggregated:  # the store, not this process's memory, decides
                seen = self.store.seen_update(task_id, meta.device_id, meta.idempotency_key)
                if seen is not None and seen >= 0:
                    return {"status": "duplicate", "aggregated_into": seen}
                return {"status": "duplicate", "version": c.version}  # pending
            outcome = c.accept(meta, decoded.tensors, admission)
            del decoded
            self._maybe_commit(task)
        return {"status": "accepted", "weight": outcome.weight, "staleness": outcome.staleness,
                "version": c.version}

    def _check_norm(self, task: _Task, delta) -> None:
        """Refuse an update over the task's L2 norm bound (counted, nothing stored)."""
        bound = task.settings.max_update_norm
        if bound is None:
            return
        norm = norm_over(delta, bound)
        if norm is not None:
            task.coordinator.refuse_update("norm_exceeded")
            raise UpdateNormExceeded(f"the update's L2 norm {norm:.6g} exceeds this task's "
                                     f"max_update_norm {bound:g}", norm=_json_number(norm),
                                     max_update_norm=bound)

    # -- resumable uploads --------------------------------------------------------------------
    def begin_upload(self, device: Device, task_id: str, size: int, sha256: str) -> dict:
        self._task(task_id)
        if not 0 < size <= self.limits.max_message_bytes:
            raise PayloadTooLarge(f"an update may be at most {self.limits.max_message_bytes} bytes",
                                  max_bytes=self.limits.max_message_bytes)
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BadRequest("sha256 must be 64 lowercase hex digits")
        upload_id = secrets.token_hex(16)
        self.store.begin_upload(upload_id, device.device_id, task_id, size, sha256, self.clock.now())
        return {"upload_id": upload_id, "received": 0, "size": size}

    def _upload(self, device: Device, upload_id: str) -> dict:
        info = self.store.upload_info(upload_id)
        if info is None or info["device_id"] != device.device_id:
            raise NotFound(f"no upload {upload_id} of this device")
        return info

    def upload_status(self, device: Device, upload_id: str) -> dict:
        info = self._upload(device, upload_id)
        return {"upload_id": upload_id, "received": info["received"], "size": info["size"]}

    def append_chunk(self, device: Device, upload_id: str, offset: int, chunk: bytes) -> dict:
        """Idempotent: a chunk already received is acknowledged again; a gap is refused
        with the count received, from which the device resumes."""
        info = self._upload(device, upload_id)
        received = info["received"]
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

    def commit_upload(self, device: Device, upload_id: str) -> dict:
        info = self._upload(device, upload_id)
        if info["received"] != info["size"]:
            raise UploadOffsetMismatch("the upload is incomplete", received=info["received"])
        data = self.store.read_upload(upload_id)
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            self.store.finish_upload(upload_id)
            raise BadRequest("the uploaded bytes do not match the declared sha256")
        result = self.submit_update(device, info["task_id"], data)
        self.store.finish_upload(upload_id)
        return result

    # -- commits ---------------------------------------------------------------------------
    # -- secure aggregation (sync rounds; see secure_round.py) ----------------------------------
    def _secure(self, device: Device, task_id: str, round_id: int, joining: bool = False):
        task = self._task(task_id)
        c = task.coordinator
        secure = c.secure_round(device.device_id, self.clock.now(), joining)
        if round_id != c.round_id:
            raise RoundClosed(f"round {round_id} is over; the current round is {c.round_id}",
                              round=c.round_id)
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

    def secagg_advertise(self, device: Device, task_id: str, round_id: int,
                         c_public: bytes, s_public: bytes) -> dict:
        task, secure = self._secure(device, task_id, round_id, joining=True)
        secure.advertise(device.device_id, c_public, s_public, self.clock.now())
        return self._secure_step(task, device)

    def secagg_share(self, device: Device, task_id: str, round_id: int,
                     shares: dict[int, bytes]) -> dict:
        task, secure = self._secure(device, task_id, round_id)
        secure.share(device.device_id, shares, self.clock.now())
        return self._secure_step(task, device)

    def secagg_masked_input(self, device: Device, task_id: str, round_id: int, data: bytes) -> dict:
        task, secure = self._secure(device, task_id, round_id)
        y = decode_masked_input(data, secure.length)  # a ProtocolError is a 400 with its code
        secure.masked_input(device.device_id, y, self.clock.now())
        return self._secure_step(task, device)

    def secagg_reveal(self, device: Device, task_id: str, round_id: int,
                      shares: dict[int, tuple[str, int]]) -> dict:
        task, secure = self._secure(device, task_id, round_id)
        secure.reveal(device.device_id, shares, self.clock.now())
        return self._secure_step(task, device)

    def tick(self) -> None:
        """Keep leadership, and advance the deadlines of the tasks led here (called
        periodically by the app)."""
        self._keep_leadership()
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
        optimizer = build_server_optimizer(task.settings.server_optimizer,
                                           lr=task.settings.server_lr_at(c.version))
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
        delta = dp.get("target_delta", 1e-5)
        epsilon = PrivacyAccountant(dp["noise_multiplier"], task.settings.sampling_rate(),
                                    delta).epsilon(task.coordinator.version)
        budget = dp.get("epsilon_budget")
        if budget is not None and epsilon >= budget:
            task.coordinator.paused = True
            task.coordinator.events.append({"event": "privacy_budget_reached",
                                            "epsilon": _json_number(epsilon),
                                            "round": task.coordinator.round_id,
                                            "at": self.clock.now()})
        return {"epsilon": _json_number(epsilon), "delta": delta}

    def _flush_events(self, task: _Task) -> None:
        self.store.add_events(task.record.task_id, task.coordinator.events)
        task.coordinator.events = []

    def _task(self, task_id: str) -> _Task:
        """A task led here (NotLeader: it exists, another process runs it)."""
        task = self.tasks.get(task_id)
        if task is None:
            self._record(task_id)
            raise NotLeader(f"another process leads task {task_id!r}", retry_after_s=1)
        return task

    def _record(self, task_id: str) -> TaskRecord:
        record = self.records.get(task_id)
        if record is None and self.store.shared and self.store.has_task(task_id):
            record = self.records[task_id] = next(
                r for r in self.store.tasks() if r.task_id == task_id)  # made elsewhere
        if record is None:
            raise NotFound(f"unknown task {task_id!r}")
        return record


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
