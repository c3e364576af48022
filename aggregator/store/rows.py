"""The part both backends share: the schema and every statement, written once.

A backend supplies a connection (`_transaction`, `_query`), where blobs live (`_put_blob`
and friends: files under the data dir for SQLite, bytea rows for PostgreSQL) and how a
coordinator write proves its process still leads the task (`_fence`). Statements use `?`
placeholders; a backend rewrites them if its driver wants another style.

The ordering that makes `kill -9` safe is the same for both: a blob is durable before (or
in) the transaction whose rows point at it, and a blob is removed only after the
transaction that stopped pointing at it has committed (or in it).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from .interface import AlreadyAggregated, Device, PendingUpdate, Snapshot, TaskRecord

# {real}: a double; {blob}: bytes; {serial}: an auto-increasing integer key
SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, settings TEXT NOT NULL, bundle_dir TEXT NOT NULL,
    model_id TEXT NOT NULL, specs TEXT NOT NULL, created {real} NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    task_id TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL,
    created {real} NOT NULL, metrics TEXT NOT NULL, PRIMARY KEY (task_id, version));
CREATE TABLE IF NOT EXISTS coordinators (task_id TEXT PRIMARY KEY, snapshot TEXT NOT NULL,
    optimizer_state TEXT);
{updates}
CREATE INDEX IF NOT EXISTS updates_by_task ON updates (task_id, received);
{ledger}
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, population TEXT NOT NULL, public_key {blob} NOT NULL,
    token_hash TEXT NOT NULL UNIQUE, created {real} NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, task_id TEXT NOT NULL,
    size INTEGER NOT NULL, sha256 TEXT NOT NULL, received INTEGER NOT NULL,
    created {real} NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    task_id TEXT NOT NULL, version INTEGER NOT NULL, device_id TEXT NOT NULL,
    sums TEXT NOT NULL, PRIMARY KEY (task_id, version, device_id));
CREATE TABLE IF NOT EXISTS heldout_evaluations (
    task_id TEXT NOT NULL, version INTEGER NOT NULL, metrics TEXT NOT NULL,
    created {real} NOT NULL, PRIMARY KEY (task_id, version));
CREATE TABLE IF NOT EXISTS events (
    id {serial}, task_id TEXT NOT NULL, at {real} NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS task_failures (
    task_id TEXT PRIMARY KEY, error TEXT NOT NULL, at {real} NOT NULL);
"""


# Idempotency keys are scoped to (task, device): a device names its own updates, and can
# neither shadow another device's nor collide across tasks. Ledger rows migrated from
# data dirs of before that scoping have device_id '' (their device was not recorded):
# a key there counts for any device of its task.
_UPDATES = """CREATE TABLE IF NOT EXISTS {name} (
    task_id TEXT NOT NULL, device_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    round_id INTEGER NOT NULL, version_from INTEGER NOT NULL, weight {{real}} NOT NULL,
    staleness INTEGER NOT NULL, path TEXT NOT NULL, received {{real}} NOT NULL,
    metrics TEXT NOT NULL, PRIMARY KEY (task_id, device_id, idempotency_key));"""
_LEDGER = """CREATE TABLE IF NOT EXISTS {name} (
    task_id TEXT NOT NULL, device_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    version INTEGER NOT NULL, PRIMARY KEY (task_id, device_id, idempotency_key));"""
SCHEMA = SCHEMA.replace("{updates}", _UPDATES.format(name="updates")).replace(
    "{ledger}", _LEDGER.format(name="ledger")
)
_LEGACY = ""  # the device_id of migrated ledger rows

# from the layout keyed by idempotency_key alone: copy into new tables, swap them in
MIGRATE_SCOPED_KEYS = [
    _UPDATES.format(name="updates_scoped"),
    (
        "INSERT INTO updates_scoped (task_id, device_id, idempotency_key, round_id, "
        "version_from, weight, staleness, path, received, metrics) SELECT task_id, device_id, "
        "idempotency_key, round_id, version_from, weight, staleness, path, received, metrics "
        "FROM updates"
    ),
    "DROP TABLE updates",
    "ALTER TABLE updates_scoped RENAME TO updates",
    "CREATE INDEX IF NOT EXISTS updates_by_task ON updates (task_id, received)",
    _LEDGER.format(name="ledger_scoped"),
    (
        "INSERT INTO ledger_scoped (task_id, device_id, idempotency_key, version) "
        f"SELECT task_id, '{_LEGACY}', idempotency_key, version FROM ledger"
    ),
    "DROP TABLE ledger",
    "ALTER TABLE ledger_scoped RENAME TO ledger",
]


def migrate(tx, columns, real: str) -> None:
    """Bring a store made by an older version up to this schema, in the caller's
    transaction (after SCHEMA). `columns(table)` -> the set of that table's column
    names; `real` is the backend's double type."""
    if "device_id" not in columns("ledger"):
        for statement in MIGRATE_SCOPED_KEYS:
            tx.execute(statement.format(real=real))


class RowStore:
    """The Store interface over rows plus named blobs; see the module docstring."""

    shared = False

    def __init__(self, crash_hook=None):
        self._crash = crash_hook or (lambda point: None)

    # -- what a backend provides ----------------------------------------------------------
    def _transaction(self):  # a context manager yielding an object with execute(sql, params)
        raise NotImplementedError

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def _put_blob(self, tx, path: str, data: bytes) -> None:
        raise NotImplementedError

    def _read_blob(self, path: str) -> bytes:
        raise NotImplementedError

    def _blob_file(self, path: str) -> Path:
        """A local file holding the blob's bytes (served as is)."""
        raise NotImplementedError

    def _drop_blobs(self, tx, paths: list[str]) -> None:
        """In the transaction, or after it commits (`tx.deferred`), never before."""
        raise NotImplementedError

    def _begin_upload_bytes(self, tx, upload_id: str) -> None:
        raise NotImplementedError

    def _append_upload_bytes(self, tx, upload_id: str, offset: int, chunk: bytes) -> None:
        raise NotImplementedError

    def _drop_upload_bytes(self, tx, upload_id: str) -> None:
        raise NotImplementedError

    def _fence(self, tx, task_id: str) -> None:
        """Raise NotLeader, inside a coordinator write, if another process leads the task."""

    def _one(self, sql: str, params: tuple = ()):
        rows = self._query(sql, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def _writing(self, task_id: str | None = None):
        """A transaction (fenced for coordinator writes); deferred work runs after commit."""
        with self._transaction() as tx:
            if task_id is not None:
                self._fence(tx, task_id)
            yield tx
        self._after_commit(tx.deferred)

    def _after_commit(self, actions: list) -> None:
        """Run what waits for the transaction's commit (a grouping backend: for its group's)."""
        for action in actions:
            action()

    def _stage_snapshot(
        self, tx, task_id: str, snapshot: Snapshot, state_path: str | None = None
    ) -> None:
        """The task's coordinator snapshot, written in `tx` (a grouping backend may write
        only the newest of a group, at its commit)."""
        write_snapshot(tx, task_id, snapshot, state_path)

    # -- grouped commits: this backend commits every write alone ---------------------------
    def group_commits(self, on: bool) -> None:
        pass

    def open_group(self) -> int | None:
        return None

    def flush(self) -> int | None:
        return None

    # -- tasks and models ----------------------------------------------------------------------
    def add_task(self, record: TaskRecord, model_bytes: bytes, now: float) -> None:
        rel = f"models/{record.task_id}/v0.eflm"
        with self._writing() as tx:
            self._put_blob(tx, rel, model_bytes)
            tx.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.task_id,
                    json.dumps(record.settings),
                    record.bundle_dir,
                    record.model_id,
                    json.dumps(record.specs),
                    now,
                ),
            )
            tx.execute("INSERT INTO models VALUES (?, 0, ?, ?, '{}')", (record.task_id, rel, now))

    def has_task(self, task_id: str) -> bool:
        return self._one("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)) is not None

    def tasks(self) -> list[TaskRecord]:
        rows = self._query(
            "SELECT task_id, settings, bundle_dir, model_id, specs FROM tasks "
            "ORDER BY created, task_id"
        )
        # a row whose JSON no longer parses is still listed (None): its task is marked
        # failed at start-up, and the others serve
        return [
            TaskRecord(r[0], _json_or_none(r[1]), r[2], r[3], _json_or_none(r[4])) for r in rows
        ]

    def mark_failed(self, task_id: str, error: str, now: float) -> None:
        """Record why a task no longer loads (shown by the admin API until it loads again)."""
        with self._writing() as tx:
            tx.execute("DELETE FROM task_failures WHERE task_id = ?", (task_id,))
            tx.execute("INSERT INTO task_failures VALUES (?, ?, ?)", (task_id, error, now))

    def clear_failed(self, task_id: str) -> None:
        with self._writing() as tx:
            tx.execute("DELETE FROM task_failures WHERE task_id = ?", (task_id,))

    def failures(self) -> dict[str, str]:
        return dict(self._query("SELECT task_id, error FROM task_failures"))

    def latest_model(self, task_id: str) -> tuple[int, Path]:
        row = self._one(
            "SELECT version, path FROM models WHERE task_id = ? ORDER BY version DESC LIMIT 1",
            (task_id,),
        )
        return int(row[0]), self._blob_file(row[1])

    def model_path(self, task_id: str, version: int) -> Path | None:
        row = self._one(
            "SELECT path FROM models WHERE task_id = ? AND version = ?", (task_id, version)
        )
        return None if row is None else self._blob_file(row[0])

    def model_history(self, task_id: str) -> list[dict]:
        rows = self._query(
            "SELECT version, created, metrics FROM models WHERE task_id = ? ORDER BY version",
            (task_id,),
        )
        return [{"version": v, "created": c, "metrics": json.loads(m)} for v, c, m in rows]

    # -- coordinator state ----------------------------------------------------------------
    def snapshot(self, task_id: str) -> dict | None:
        row = self._one("SELECT snapshot FROM coordinators WHERE task_id = ?", (task_id,))
        return None if row is None else json.loads(row[0])

    def optimizer_state(self, task_id: str) -> dict:
        row = self._one("SELECT optimizer_state FROM coordinators WHERE task_id = ?", (task_id,))
        if row is None or not row[0]:
            return {}
        with np.load(io.BytesIO(self._read_blob(row[0])), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def save_snapshot(self, task_id: str, snapshot: Snapshot) -> None:
        with self._writing(task_id) as tx:
            self._stage_snapshot(tx, task_id, snapshot)
        self._crash("snapshot_saved")

    # -- updates ------------------------------------------------------------------------------
    def seen_update(self, task_id: str, device_id: str, key: str) -> int | None:
        """The version the device's update under `key` went into (-1: pending; None:
        never seen)."""
        # one statement (asked at every upload): a version in the ledger outranks -1
        row = self._one(
            "SELECT MAX(v) FROM (SELECT version AS v FROM ledger WHERE task_id = ? AND "
            "idempotency_key = ? AND device_id IN (?, ?) UNION ALL SELECT -1 FROM updates "
            "WHERE task_id = ? AND device_id = ? AND idempotency_key = ?) AS seen",
            (task_id, key, device_id, _LEGACY, task_id, device_id, key),
        )
        return None if row is None or row[0] is None else int(row[0])

    def save_update(
        self,
        task_id: str,
        update: PendingUpdate,
        data: bytes,
        metrics: dict,
        snapshot: Snapshot,
        now: float,
    ) -> None:
        """Durable before it returns: the raw bytes, the row, and the coordinator state.
        (task, device, key) is unique across pending updates and the ledger: a second
        insert fails (AlreadyAggregated), and its transaction, its bytes' row with it, is
        undone. Callers ask `seen_update` first, so that is the rare race, not the rule."""
        import hashlib

        digest = hashlib.sha256(
            f"{update.device_id}|{update.idempotency_key}".encode()
        ).hexdigest()[:32]
        rel = f"updates/{task_id}/{digest}.eflu"
        with self._writing(task_id) as tx:
            self._put_blob(tx, rel, data)
            self._crash("update_file_written")
            inserted = tx.execute(
                "INSERT INTO updates (task_id, device_id, idempotency_key, round_id, "
                "version_from, weight, staleness, path, received, metrics) "
                "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM ledger "
                "WHERE task_id = ? AND idempotency_key = ? AND device_id IN (?, ?)) "
                "ON CONFLICT DO NOTHING",
                (
                    task_id,
                    update.device_id,
                    update.idempotency_key,
                    update.round_id,
                    update.version_from,
                    update.weight,
                    update.staleness,
                    rel,
                    now,
                    json.dumps(metrics),
                    task_id,
                    update.idempotency_key,
                    update.device_id,
                    _LEGACY,
                ),
            ).rowcount
            if inserted != 1:
                raise AlreadyAggregated(update.idempotency_key)
            self._stage_snapshot(tx, task_id, snapshot)

    def pending_updates(self, task_id: str) -> list[PendingUpdate]:
        rows = self._query(
            "SELECT idempotency_key, round_id, device_id, version_from, weight, "
            "staleness, path FROM updates WHERE task_id = ? ORDER BY received, "
            "device_id, idempotency_key",
            (task_id,),
        )
        return [PendingUpdate(*r) for r in rows]

    def update_bytes(self, update: PendingUpdate) -> bytes:
        return self._read_blob(update.path)

    def pending_metrics(self, task_id: str) -> list[dict]:
        return [
            json.loads(r[0])
            for r in self._query("SELECT metrics FROM updates WHERE task_id = ?", (task_id,))
        ]

    def commit_version(
        self,
        task_id: str,
        version: int,
        model_bytes: bytes,
        optimizer_state: dict,
        snapshot: Snapshot,
        metrics: dict,
        now: float,
    ) -> None:
        """One transaction: the new model, the coordinator's next state, and the consumed
        updates moved to the idempotency ledger (a key already there fails the commit:
        nothing is aggregated twice). Their bytes go when it has committed."""
        rel = f"models/{task_id}/v{version}.eflm"
        state_rel = f"state/{task_id}/v{version}.npz" if optimizer_state else None
        with self._writing(task_id) as tx:
            self._put_blob(tx, rel, model_bytes)
            if state_rel:
                self._put_blob(tx, state_rel, _arrays_bytes(optimizer_state))
            consumed = [
                r[0]
                for r in tx.execute(
                    "SELECT path FROM updates WHERE task_id = ?", (task_id,)
                ).fetchall()
            ]
            self._crash("model_file_written")
            tx.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                (task_id, version, rel, now, json.dumps(metrics)),
            )
            tx.execute(
                "INSERT INTO ledger (task_id, device_id, idempotency_key, version) "
                "SELECT task_id, device_id, idempotency_key, ? FROM updates "
                "WHERE task_id = ?",
                (version, task_id),
            )
            tx.execute("DELETE FROM updates WHERE task_id = ?", (task_id,))
            old = tx.execute(
                "SELECT optimizer_state FROM coordinators WHERE task_id = ?", (task_id,)
            ).fetchone()
            self._stage_snapshot(tx, task_id, snapshot, state_rel)
            if state_rel and old and old[0]:
                consumed.append(old[0])
            self._drop_blobs(tx, consumed)
            tx.deferred.insert(0, lambda: self._crash("version_committed"))

    def drop_pending(self, task_id: str) -> None:
        """An abandoned round: its updates will never count."""
        with self._writing(task_id) as tx:
            paths = [
                r[0]
                for r in tx.execute(
                    "SELECT path FROM updates WHERE task_id = ?", (task_id,)
                ).fetchall()
            ]
            tx.execute("DELETE FROM updates WHERE task_id = ?", (task_id,))
            self._drop_blobs(tx, paths)

    # -- devices ---------------------------------------------------------------------------
    def add_device(self, device: Device, token_hash: str, now: float) -> None:
        with self._writing() as tx:
            tx.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?)",
                (device.device_id, device.population, device.public_key, token_hash, now),
            )

    def device_by_token(self, token_hash: str) -> Device | None:
        row = self._one(
            "SELECT device_id, population, public_key FROM devices WHERE token_hash = ?",
            (token_hash,),
        )
        return None if row is None else Device(row[0], row[1], bytes(row[2]))

    # -- federated evaluation ------------------------------------------------------------------
    def add_evaluation(self, task_id: str, version: int, device_id: str, sums: dict) -> None:
        with self._writing() as tx:
            tx.execute(
                "INSERT INTO evaluations VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (task_id, version, device_id, json.dumps(sums)),
            )

    def has_evaluation(self, task_id: str, version: int, device_id: str) -> bool:
        return (
            self._one(
                "SELECT 1 FROM evaluations WHERE task_id = ? AND version = ? AND device_id = ?",
                (task_id, version, device_id),
            )
            is not None
        )

    def evaluation_totals(self, task_id: str) -> dict[int, dict]:
        totals: dict[int, dict] = {}
        for version, sums in self._query(
            "SELECT version, sums FROM evaluations WHERE task_id = ?", (task_id,)
        ):
            acc = totals.setdefault(version, {"devices": 0})
            acc["devices"] += 1
            for k, v in json.loads(sums).items():
                acc[k] = acc.get(k, 0.0) + v
        return totals

    # -- server-side held-out evaluation --------------------------------------------------------
    def add_heldout(self, task_id: str, version: int, metrics: dict, now: float) -> bool:
        """Record a version's held-out metrics once; False when they were already there
        (the first report stands)."""
        if (
            self._one(
                "SELECT 1 FROM heldout_evaluations WHERE task_id = ? AND version = ?",
                (task_id, version),
            )
            is not None
        ):
            return False
        with self._writing() as tx:
            tx.execute(
                "INSERT INTO heldout_evaluations VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (task_id, version, json.dumps(metrics), now),
            )
        return True

    def heldout_results(self, task_id: str) -> dict[int, dict]:
        return {
            version: json.loads(metrics)
            for version, metrics in self._query(
                "SELECT version, metrics FROM heldout_evaluations WHERE task_id = ? ORDER BY version",
                (task_id,),
            )
        }

    # -- resumable uploads --------------------------------------------------------------------
    def begin_upload(
        self, upload_id: str, device_id: str, task_id: str, size: int, sha256: str, now: float
    ) -> None:
        with self._writing() as tx:
            self._begin_upload_bytes(tx, upload_id)
            tx.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, 0, ?)",
                (upload_id, device_id, task_id, size, sha256, now),
            )

    def upload_info(self, upload_id: str) -> dict | None:
        rows = self._query(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?", (upload_id,)
        )
        return _upload_dict(rows[0]) if rows else None

    def device_uploads(self, device_id: str) -> list[dict]:
        """The device's unfinished uploads, oldest first."""
        return [
            _upload_dict(r)
            for r in self._query(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE device_id = ? ORDER BY created",
                (device_id,),
            )
        ]

    def uploads_begun_before(self, cutoff: float) -> list[str]:
        return [
            r[0] for r in self._query("SELECT upload_id FROM uploads WHERE created < ?", (cutoff,))
        ]

    def append_upload(self, upload_id: str, offset: int, chunk: bytes) -> int:
        """Append `chunk` at `offset` if that is the count received so far (another
        request may have got there first); durable on return. Returns the count now held."""
        with self._writing() as tx:
            moved = tx.execute(
                "UPDATE uploads SET received = ? WHERE upload_id = ? AND received = ?",
                (offset + len(chunk), upload_id, offset),
            ).rowcount
            if moved == 1:
                self._append_upload_bytes(tx, upload_id, offset, chunk)
        if moved == 1:
            return offset + len(chunk)
        info = self.upload_info(upload_id)
        return -1 if info is None else int(info["received"])

    def finish_upload(self, upload_id: str) -> None:
        with self._writing() as tx:
            tx.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            self._drop_upload_bytes(tx, upload_id)

    # -- events -----------------------------------------------------------------------------
    def add_events(self, task_id: str, events: list[dict]) -> None:
        if not events:
            return
        with self._writing() as tx:
            for e in events:
                tx.execute(
                    "INSERT INTO events (task_id, at, doc) VALUES (?, ?, ?)",
                    (task_id, e.get("at", 0.0), json.dumps(e)),
                )

    def events(self, task_id: str, limit: int = 200) -> list[dict]:
        rows = self._query(
            "SELECT doc FROM events WHERE task_id = ? ORDER BY id DESC LIMIT ?", (task_id, limit)
        )
        return [json.loads(r[0]) for r in reversed(rows)]


_UPLOAD_COLUMNS = "upload_id, device_id, task_id, size, sha256, received, created"


def _upload_dict(row: tuple) -> dict:
    return dict(
        zip(("upload_id", "device_id", "task_id", "size", "sha256", "received", "created"), row)
    )


def write_snapshot(tx, task_id: str, snapshot: Snapshot, state_path: str | None = None) -> None:
    if callable(snapshot):
        snapshot = snapshot()
    tx.execute(
        "INSERT INTO coordinators (task_id, snapshot) VALUES (?, ?) ON CONFLICT (task_id) "
        "DO UPDATE SET snapshot = excluded.snapshot",
        (task_id, json.dumps(snapshot)),
    )
    if state_path is not None:
        tx.execute(
            "UPDATE coordinators SET optimizer_state = ? WHERE task_id = ?", (state_path, task_id)
        )


def _arrays_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None
