"""Which tasks exist, which of them this process leads (each with its coordinator,
rebuilt from the store), and which did not load. Loading a task is the one path for a
start-up, a restart after a crash, a lead taken over from another process, and a failed
grouped commit: settings, model, optimizer state, coordinator snapshot, then a replay
of the open round's durable updates.

With a shared store (PostgreSQL) several processes serve one fleet; each task's
coordinator runs in the one process that leads it (`store.try_lead`), and a process that
loses the lead, or cannot tell whether a write took effect, drops its coordinator and
loads it again when it leads again."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge_sdk.protocol import DecodeLimits, decode_parameters, decode_update
from edge_sdk.protocol.typedjson import BadField

from ..aggregation import build_aggregation
from ..config import TaskSettings
from ..coordinator import Admission, TaskCoordinator
from ..errors import NotFound, NotLeader, StoreUnavailable, TaskFailed
from ..store import Store, TaskRecord
from .text import printable

log = logging.getLogger("aggregator.service")


@dataclass
class LedTask:
    """A task this process leads: its record, settings, live coordinator and model."""

    record: TaskRecord
    settings: TaskSettings
    coordinator: TaskCoordinator
    parameters: dict[str, np.ndarray]
    optimizer_state: dict


class TaskTable:
    """`settle(task)` runs once a task is loaded (it commits a version its replayed
    updates complete)."""

    def __init__(
        self,
        store: Store,
        clock,
        rng: np.random.Generator,
        limits: DecodeLimits,
        address: str | None,
        settle: Callable[[LedTask], object],
    ):
        self.store, self.clock, self.rng, self.limits = store, clock, rng, limits
        self.address, self._settle = address, settle
        self.records: dict[str, TaskRecord] = {}  # every task
        self.tasks: dict[str, LedTask] = {}  # the tasks this process leads
        self.failed: dict[str, str] = {}  # tasks whose stored state did not load here: why

    def recover(self) -> None:
        """Load every task this process may lead, restore its coordinator and replay its
        durable updates. A task whose stored state no longer loads is marked failed (with
        the reason, in the store, the admin API and the log) and the others serve."""
        failed_before = self.store.failures()
        for record in self.store.tasks():
            self.records[record.task_id] = record
            if self.lead(record) and record.task_id in failed_before:
                self.store.clear_failed(record.task_id)  # repaired since: it serves again

    def lead(self, record: TaskRecord) -> bool:
        if not self.store.try_lead(record.task_id, self.address, self.clock.now()):
            return False
        try:
            self._load(record)
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
        reason = printable(
            str(error) if isinstance(error, TaskFailed) else f"{type(error).__name__}: {error}"
        )
        self.tasks.pop(task_id, None)
        self.failed[task_id] = reason
        log.error("task %r does not load and is not served: %s", task_id, reason, exc_info=error)
        try:
            self.store.mark_failed(task_id, reason, self.clock.now())
        except Exception:  # noqa: BLE001 - shown in memory anyway
            log.exception("could not record the failure of task %r", task_id)

    def keep_leadership(self) -> None:
        """Drop coordinators whose lead was lost; lead (and so load) tasks nobody leads."""
        if self.store.shared:
            for task_id in set(self.tasks) - self.store.leading():
                del self.tasks[task_id]
            for record in self.store.tasks():
                self.records.setdefault(record.task_id, record)
        for task_id, record in list(self.records.items()):
            if task_id not in self.tasks and task_id not in self.failed:
                self.lead(record)

    def reload(self) -> None:
        """Drop every coordinator and load them again from the store (what is in memory
        may hold writes the store lost)."""
        self.tasks.clear()
        self.keep_leadership()

    @contextlib.contextmanager
    def owning(self, task: LedTask):
        """A coordinator write that the store refused, or whose outcome is unknown, leaves
        the coordinator in memory out of step with the store: drop it (reloaded when led)."""
        try:
            yield
        except (NotLeader, StoreUnavailable):
            self.tasks.pop(task.record.task_id, None)
            raise

    # -- queries ------------------------------------------------------------------------------
    def leads(self, task_id: str) -> bool:
        """The task's calls are answered here (a task that failed here: with TaskFailed)."""
        return task_id in self.tasks or task_id in self.failed

    def knows(self, task_id: str) -> bool:
        try:
            self.record(task_id)
        except NotFound:
            return False
        return True

    def spread_check_in(self) -> str | None:
        """For a check-in naming no task, when other processes lead some: a task drawn
        from all of them (None: every task is led here, so choose among these)."""
        serving = set(self.records) - set(self.failed)
        if serving <= set(self.tasks):
            return None
        ids = sorted(serving)
        return ids[int(self.rng.integers(len(ids)))]

    def task(self, task_id: str) -> LedTask:
        """A task led here (NotLeader: it exists, another process runs it)."""
        task = self.tasks.get(task_id)
        if task is None:
            self.record(task_id)
            if task_id in self.failed:
                raise TaskFailed(
                    f"task {task_id!r} is not served: its stored state did not "
                    f"load ({self.failed[task_id]}); see GET /v1/admin/tasks/"
                    f"{task_id}",
                    task_id=task_id,
                )
            raise NotLeader(f"another process leads task {task_id!r}", retry_after_s=1)
        return task

    def record(self, task_id: str) -> TaskRecord:
        record = self.records.get(task_id)
        if record is None and self.store.shared and self.store.has_task(task_id):
            record = self.records[task_id] = next(
                r for r in self.store.tasks() if r.task_id == task_id
            )  # made elsewhere
        if record is None:
            raise NotFound(f"unknown task {task_id!r}")
        return record

    # -- loading ------------------------------------------------------------------------------
    def _load(self, record: TaskRecord) -> LedTask:
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
                record.task_id,
                settings,
                version,
                stage,
                self.rng,
                now,
                shapes=shapes,
                buffers=frozenset(s["name"] for s in record.specs if s.get("buffer")),
            )
            snapshot = self.store.snapshot(record.task_id)
            if snapshot is not None:
                coordinator.restore(snapshot)
            coordinator.version = version  # the stored model is the truth for the version
        task = LedTask(record, settings, coordinator, params, opt_state)
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
            self._settle(task)
        return task


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
