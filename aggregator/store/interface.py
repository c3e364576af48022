"""What the service needs from persistence: the records it reads and writes and the one
`Store` interface both backends implement (SqliteStore, PostgresStore)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Union

# Where a write may be cut short (crash tests make the process exit there, as kill -9):
# after an update's bytes are written and before its row commits; after a new model's
# bytes are written and before the version commits; right after each of those commits;
# and, with grouped commits, after a group's writes and before its one commit.
CRASH_POINTS = (
    "update_file_written",
    "model_file_written",
    "version_committed",
    "snapshot_saved",
    "group_written",
)


Snapshot = Union[dict, Callable[[], dict]]
"""A coordinator's state to store: the plain data, or the function that takes it (e.g.
`coordinator.snapshot`), which a grouping store calls only at the group's commit, once,
for the newest state of the group, instead of at every call."""


class AlreadyAggregated(KeyError):
    """`save_update` of a (task, device, key) the store holds: it counts once already."""


@dataclass(frozen=True)
class TaskRecord:
    """A task as stored; `settings` and `specs` are None when the stored JSON no longer
    parses (the task is then marked failed at start-up)."""

    task_id: str
    settings: dict | None
    bundle_dir: str
    model_id: str
    specs: list | None


@dataclass(frozen=True)
class PendingUpdate:
    """An accepted update not yet aggregated into a version. `path` names its bytes in
    the store (read them with `Store.update_bytes`); it is empty before they are saved."""

    idempotency_key: str  # the device's own, per task
    round_id: int
    device_id: str
    version_from: int
    weight: float
    staleness: int
    path: str = ""


@dataclass(frozen=True)
class Device:
    device_id: str
    population: str
    public_key: bytes


class Store(Protocol):
    """Every call the service makes. Writes are durable when they return, unless the
    store groups commits (`group_commits(True)`): then a write is durable once `flush()`
    has returned, and the caller acknowledges nothing before that (see docs/aggregator.md,
    "Durable writes").

    Coordinator writes (`save_update`, `commit_version`, `save_snapshot`,
    `drop_pending`) are made only by the process leading the task (`try_lead`); a store
    shared by several processes refuses them with `NotLeader` once another process has
    taken the task over, so a process that lost its lead cannot change what it no longer
    owns. A store that is not `shared` has one process, which leads every task."""

    shared: bool  # other processes may read and write the same state

    # tasks and models; model bytes are served from local files
    def add_task(self, record: TaskRecord, model_bytes: bytes, now: float) -> None: ...
    def has_task(self, task_id: str) -> bool: ...
    def tasks(self) -> list[TaskRecord]: ...
    def latest_model(self, task_id: str) -> tuple[int, Path]: ...
    def model_path(self, task_id: str, version: int) -> Path | None: ...
    def model_history(self, task_id: str) -> list[dict]: ...

    # tasks that no longer load (bad stored state): why, until they load again
    def mark_failed(self, task_id: str, error: str, now: float) -> None: ...
    def clear_failed(self, task_id: str) -> None: ...
    def failures(self) -> dict[str, str]: ...

    # leadership of a task's coordinator
    def try_lead(self, task_id: str, url: str | None, now: float) -> bool: ...
    def leading(self) -> set[str]: ...
    def leader_url(self, task_id: str) -> str | None: ...

    # coordinator state
    def snapshot(self, task_id: str) -> dict | None: ...
    def optimizer_state(self, task_id: str) -> dict: ...
    def save_snapshot(self, task_id: str, snapshot: Snapshot) -> None: ...

    # updates and versions
    def seen_update(self, task_id: str, device_id: str, key: str) -> int | None: ...
    def save_update(
        self,
        task_id: str,
        update: PendingUpdate,
        data: bytes,
        metrics: dict,
        snapshot: Snapshot,
        now: float,
    ) -> None: ...
    def pending_updates(self, task_id: str) -> list[PendingUpdate]: ...
    def update_bytes(self, update: PendingUpdate) -> bytes: ...
    def pending_metrics(self, task_id: str) -> list[dict]: ...
    def commit_version(
        self,
        task_id: str,
        version: int,
        model_bytes: bytes,
        optimizer_state: dict,
        snapshot: Snapshot,
        metrics: dict,
        now: float,
    ) -> None: ...
    def drop_pending(self, task_id: str) -> None: ...

    # devices
    def add_device(self, device: Device, token_hash: str, now: float) -> None: ...
    def device_by_token(self, token_hash: str) -> Device | None: ...

    # federated evaluation
    def add_evaluation(self, task_id: str, version: int, device_id: str, sums: dict) -> None: ...
    def has_evaluation(self, task_id: str, version: int, device_id: str) -> bool: ...
    def evaluation_totals(self, task_id: str) -> dict[int, dict]: ...

    # server-side evaluation on a held-out set (any process may record it)
    def add_heldout(self, task_id: str, version: int, metrics: dict, now: float) -> bool: ...
    def heldout_results(self, task_id: str) -> dict[int, dict]: ...

    # resumable uploads: upload_info and device_uploads give dicts of upload_id,
    # device_id, task_id, size, sha256, received, created
    def begin_upload(
        self, upload_id: str, device_id: str, task_id: str, size: int, sha256: str, now: float
    ) -> None: ...
    def upload_info(self, upload_id: str) -> dict | None: ...
    def device_uploads(self, device_id: str) -> list[dict]: ...
    def uploads_begun_before(self, cutoff: float) -> list[str]: ...
    def append_upload(self, upload_id: str, offset: int, chunk: bytes) -> int: ...
    def read_upload(self, upload_id: str) -> bytes: ...
    def finish_upload(self, upload_id: str) -> None: ...

    # events
    def add_events(self, task_id: str, events: list[dict]) -> None: ...
    def events(self, task_id: str, limit: int = 200) -> list[dict]: ...

    # -- grouped commits (a store that cannot group commits each write alone) ------------
    def group_commits(self, on: bool) -> None: ...
    def open_group(self) -> int | None:
        """The number of the group holding writes not yet committed (None: all are)."""

    def flush(self) -> int | None:
        """Commit the open group, durably (one fsync for all its writes); return its
        number. If this raises, none of the group's writes happened."""

    def close(self) -> None: ...
