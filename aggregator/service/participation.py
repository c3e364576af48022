"""What a device does in a task: check in for work, report a failure, fetch a model,
send its update (whole, or through a resumable upload) and its evaluation sums.

Order of an upload: peek the header (cheap) -> authorize -> decode and verify (one update
in memory) -> the norm bound -> coordinator.admit -> store.save_update (durable) ->
coordinator.accept -> commit a version when the round/buffer is ready -> acknowledge.
After a crash, the task table replays every durable update of the open rounds, so each
acknowledged update counts exactly once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sdk.protocol import NonFinite, decode_update, open_update
from edge_sdk.protocol.model_encoding import DEFAULT_ENCODING

from ..coordinator import Assignment, ComeBackLater, EvalAssignment, Outcome
from ..errors import BadRequest, Forbidden, NotFound, UpdateNormExceeded, UpdateNotFinite
from ..numerics import norm_over
from ..store import AlreadyAggregated, Device, PendingUpdate
from ..uploads import UploadSessions
from ..vocabulary import failure_reason
from .commits import Commits, json_number
from .encoded_models import encoded_difference_file, encoded_model_file
from .tasks import LedTask, TaskTable

MAX_DIFFERENCE_VERSIONS = 8
"""How many versions past its base a device may get a difference download: beyond, the
difference is nearly as large as the whole model, and the device takes a new base."""


class Participation:
    def __init__(self, table: TaskTable, commits: Commits, uploads: UploadSessions):
        """The store, clock, rng and decode limits are the task table's."""
        self.store, self.clock, self.rng, self.limits = (
            table.store,
            table.clock,
            table.rng,
            table.limits,
        )
        self.table, self.commits, self.uploads = table, commits, uploads

    def check_in(
        self, device: Device, task_id: str | None
    ) -> Assignment | EvalAssignment | ComeBackLater:
        tasks = [self.table.task(task_id)] if task_id else list(self.table.tasks.values())
        if not tasks:
            return ComeBackLater(self.clock.now() + 60.0)
        task = tasks[int(self.rng.integers(len(tasks)))]
        now = self.clock.now()
        with self.table.owning(task):
            result = task.coordinator.check_in(device.device_id, now)
            self.commits.after_change(task)
        return result

    def report_failure(self, device: Device, task_id: str, reason: str) -> None:
        task = self.table.task(task_id)
        with self.table.owning(task):
            # a fixed vocabulary: reasons become metric labels and stored counters
            task.coordinator.report_failure(
                device.device_id, failure_reason(reason), self.clock.now()
            )
            self.commits.after_change(task)

    def model_file(
        self,
        task_id: str,
        version: int | None,
        to_device: bool = False,
        encoding: str = DEFAULT_ENCODING,
        base: int | None = None,
    ) -> tuple[int, Path]:
        """Any process serves models: they are in the store, and never change. Bytes
        served `to_device` count toward the task's next version where it is led. An
        `encoding` other than float32 (edge_sdk.protocol.ENCODINGS) is served from a file
        derived from the float32 one on its first request (see encoded_model_file); a
        device that holds the whole download of version `base` in that encoding gets the
        difference from it when base < version <= base + MAX_DIFFERENCE_VERSIONS, else
        the whole model (the frame's header says which)."""
        record = self.table.record(task_id)
        if version is None:
            task = self.table.tasks.get(task_id)
            if task is None:
                version, path = self.store.latest_model(task_id)
            else:
                version = task.coordinator.version
                path = self.store.model_path(task_id, version)
        else:
            path = self.store.model_path(task_id, version)
        if path is None:
            raise NotFound(f"task {task_id} has no model version {version}")
        if encoding != DEFAULT_ENCODING:
            base_path = None
            if base is not None and base < version <= base + MAX_DIFFERENCE_VERSIONS:
                base_path = self.store.model_path(task_id, base)
            if base_path is None:
                path = encoded_model_file(path, record.specs, encoding)
            else:
                path = encoded_difference_file(path, base_path, base, record.specs, encoding)
        if to_device and task_id in self.table.tasks:
            self.table.tasks[task_id].coordinator.count_bytes(down=path.stat().st_size)
        return version, path

    def submit_update(self, device: Device, task_id: str, data: bytes) -> dict:
        task = self.table.task(task_id)
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
        task.coordinator.count_bytes(up=len(data))
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
            c.refuse_update("not_finite", meta.device_id)
            raise UpdateNotFinite(f"the update is not finite: {e}") from None
        self._check_norm(task, decoded.tensors, meta.device_id)
        now = self.clock.now()
        with self.table.owning(task):
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
                    c.snapshot,  # taken at the group's commit
                    now,
                )
            except AlreadyAggregated:  # the store, not this process's memory, decides
                seen = self.store.seen_update(task_id, meta.device_id, meta.idempotency_key)
                if seen is not None and seen >= 0:
                    return {"status": "duplicate", "aggregated_into": seen}
                return {"status": "duplicate", "version": c.version}  # pending
            outcome = c.accept(meta, decoded.tensors, admission)
            del decoded
            self.commits.maybe_commit(task)
        return {
            "status": "accepted",
            "weight": outcome.weight,
            "staleness": outcome.staleness,
            "version": c.version,
        }

    def _check_norm(self, task: LedTask, delta, device_id: str) -> None:
        """Refuse an update over the task's L2 norm bound (counted, nothing stored)."""
        bound = task.settings.max_update_norm
        if bound is None:
            return
        norm = norm_over(delta, bound)
        if norm is not None:
            task.coordinator.refuse_update("norm_exceeded", device_id)
            raise UpdateNormExceeded(
                f"the update's L2 norm {norm:.6g} exceeds this task's max_update_norm {bound:g}",
                norm=json_number(norm),
                max_update_norm=bound,
            )

    # -- resumable uploads (uploads.py) -----------------------------------------------------
    def begin_upload(self, device: Device, task_id: str, size: int, sha256: str) -> dict:
        self.table.task(task_id)
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

    def submit_evaluation(self, device: Device, task_id: str, doc: dict) -> dict:
        """A device's metric sums for one model version, from its local examples."""
        task = self.table.task(task_id)
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
        with self.table.owning(task):
            task.coordinator.record_evaluation(device.device_id, version, self.clock.now())
            self.store.add_evaluation(task_id, version, device.device_id, sums)
        return {"status": "recorded"}
