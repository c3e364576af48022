"""The aggregator's use cases, between the HTTP edge and the coordinators, one module a
concern:

    tasks.py          which tasks exist and which this process leads; loading one
    commits.py        accepted updates -> a model version (optimizer, finite check, DP)
    admin.py          create, pause, resume and describe tasks
    devices.py        enrollment and authentication
    participation.py  check-in, failure reports, models, updates, evaluation sums
    secure.py         the steps of a securely aggregated round

`AggregatorService` puts them together and is what the app, the in-process transport
and the simulator call: every call runs on one thread (the app's service thread)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from edge_sdk.protocol import DecodeLimits, UpdateMeta
from edge_sdk.protocol.messages import AssignedPlan

from ..errors import NotLeader, StoreUnavailable
from ..store import Store
from ..uploads import UploadQuota, UploadSessions
from .admin import TASK_ID, Administration
from .commits import Commits
from .devices import Devices
from .participation import Participation
from .secure import SecureSteps
from .tasks import LedTask, TaskTable

# the public calls, by concern: `service.<prefix><method>` is `service.<concern>.<method>`
_PUBLIC_CALLS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("table", "", ("recover", "leads", "knows", "spread_check_in")),
    ("admin", "", ("create_task", "set_paused", "describe", "history", "record_heldout")),
    ("devices", "", ("enroll", "authenticate", "known_device")),
    (
        "participation",
        "",
        (
            "check_in",
            "report_failure",
            "model_file",
            "submit_update",
            "submit_evaluation",
            "begin_upload",
            "upload_status",
            "append_chunk",
            "commit_upload",
            "expire_uploads",
        ),
    ),
    ("secure", "secagg_", ("state", "advertise", "share", "masked_input", "reveal")),
)


@dataclass(frozen=True)
class AssignmentTerms:
    """What every assignment of a task carries (secagg: its settings as JSON, or None)."""

    model_id: str
    plan: AssignedPlan
    secagg: dict | None


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
        self.store, self.clock = store, clock
        self.commits = Commits(store, clock)
        self.table = TaskTable(store, clock, rng, limits, address, self.commits.maybe_commit)
        self.admin = Administration(store, clock, self.table)
        self.devices = Devices(store, clock, enrollment_secrets)
        uploads = UploadSessions(store, clock, upload_quota, limits.max_message_bytes)
        self.participation = Participation(self.table, self.commits, uploads)
        self.secure = SecureSteps(clock, self.table, self.commits)
        for concern, prefix, methods in _PUBLIC_CALLS:
            for method in methods:
                setattr(self, prefix + method, getattr(getattr(self, concern), method))
        self._terms: dict[str, tuple[object, AssignmentTerms]] = {}  # task: (settings, terms)

    # -- queries ------------------------------------------------------------------------------
    @property
    def tasks(self) -> dict[str, LedTask]:
        """The tasks led here (for tests and tools that look inside; the app asks the
        query calls)."""
        return self.table.tasks

    @property
    def records(self) -> dict:
        """Every task, led here or not."""
        return self.table.records

    @property
    def address(self) -> str | None:
        return self.table.address

    @property
    def enrollment_secrets(self) -> dict[str, str]:
        return self.devices.enrollment_secrets

    def task_ids(self) -> list[str]:
        """Every task this process knows, led here or not."""
        return list(self.table.records)

    def describe_tasks(self, with_history: bool) -> list[dict]:
        """describe() of every task, with history() when asked."""
        return [
            self.describe(t) | (self.history(t) if with_history else {}) for t in self.task_ids()
        ]

    def led_task_ids(self) -> list[str]:
        """The tasks this process leads (their coordinators run here)."""
        return list(self.table.tasks)

    def current_version(self, task_id: str) -> int:
        """The model version a task led here trains now."""
        return self.table.task(task_id).coordinator.version

    def current_parameters(self, task_id: str) -> dict[str, np.ndarray]:
        """The parameters (float32 arrays; do not mutate) of a task led here, at its
        current version."""
        return self.table.task(task_id).parameters

    def dropouts(self, task_id: str) -> dict[str, int]:
        """Devices dropped from a task led here, by reason, since it started."""
        return dict(self.table.task(task_id).coordinator.funnel.dropped)

    def heldout_results(self, task_id: str) -> dict[int, dict]:
        """version -> the held-out evaluator's metrics of that version."""
        self.table.record(task_id)
        return self.store.heldout_results(task_id)

    def assignment_terms(self, task_id: str) -> AssignmentTerms:
        """What an assignment of a task led here carries besides its round: the model id,
        the plan and the secure aggregation settings (built once per loaded settings:
        every check-in asks)."""
        task = self.table.task(task_id)
        cached = self._terms.get(task_id)
        if cached is None or cached[0] is not task.settings:
            settings = task.settings.to_json()
            terms = AssignmentTerms(
                task.record.model_id,
                AssignedPlan.from_json(settings["plan"]),
                settings.get("secagg"),
            )
            cached = self._terms[task_id] = (task.settings, terms)
        return cached[1]

    def close(self) -> None:
        """Close the store (the service is not used afterwards)."""
        self.store.close()

    def leader_url(self, task_id: str) -> str | None:
        """Where the process leading `task_id` is reached (None: unknown)."""
        return self.store.leader_url(task_id)

    def upload_task(self, upload_id: str) -> str | None:
        info = self.store.upload_info(upload_id)
        return None if info is None else info["task_id"]

    @property
    def leads_every_task(self) -> bool:
        """One process owns the store (SQLite): no call is ever forwarded."""
        return not self.store.shared

    # -- durable writes: grouped commits (app_state.ServiceWorker) -------------------------
    def group_commits(self, on: bool) -> None:
        self.store.group_commits(on)

    def open_group(self) -> int | None:
        """The group holding this thread's writes not yet committed (None: all are)."""
        return self.store.open_group()

    def flush(self) -> None:
        """Commit the open group; if that fails, reload what is durable and raise."""
        try:
            self.store.flush()
        except BaseException:
            self.forget_unflushed()
            raise

    # -- housekeeping -------------------------------------------------------------------------
    def tick(self) -> None:
        """Keep leadership, and advance the deadlines of the tasks led here (called
        periodically by the app)."""
        self.table.keep_leadership()
        self.expire_uploads()
        for task in list(self.table.tasks.values()):
            with contextlib.suppress(NotLeader, StoreUnavailable), self.table.owning(task):
                task.coordinator.tick(self.clock.now())
                self.commits.after_change(task)

    def forget_unflushed(self) -> None:
        """A grouped commit failed, so the store lost writes this process made in memory
        too: drop the tasks and the device cache and load them again from the store."""
        self.devices.forget()
        self.table.reload()


__all__ = ["TASK_ID", "AggregatorService", "AssignmentTerms", "UpdateMeta"]
