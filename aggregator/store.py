"""Durable state behind one interface: embedded SQLite (WAL) plus files under a data dir.

Files hold bytes (model versions in the wire format, raw accepted updates, server
optimizer state); SQLite holds everything else and the pointers, changed only inside
transactions. A file is written to a temporary name, fsynced and renamed before the
transaction that refers to it commits, so after `kill -9` at any point every row points
at a whole file; files no row points at are removed at start-up.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, settings TEXT NOT NULL, bundle_dir TEXT NOT NULL,
    model_id TEXT NOT NULL, specs TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    task_id TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL,
    created REAL NOT NULL, metrics TEXT NOT NULL, PRIMARY KEY (task_id, version));
CREATE TABLE IF NOT EXISTS coordinators (task_id TEXT PRIMARY KEY, snapshot TEXT NOT NULL,
    optimizer_state TEXT);
CREATE TABLE IF NOT EXISTS updates (
    idempotency_key TEXT PRIMARY KEY, task_id TEXT NOT NULL, round_id INTEGER NOT NULL,
    device_id TEXT NOT NULL, version_from INTEGER NOT NULL, weight REAL NOT NULL,
    staleness INTEGER NOT NULL, path TEXT NOT NULL, received REAL NOT NULL,
    metrics TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS updates_by_task ON updates (task_id, received);
CREATE TABLE IF NOT EXISTS ledger (
    idempotency_key TEXT PRIMARY KEY, task_id TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, population TEXT NOT NULL, public_key BLOB NOT NULL,
    token_hash TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, task_id TEXT NOT NULL,
    size INTEGER NOT NULL, sha256 TEXT NOT NULL, received INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    task_id TEXT NOT NULL, version INTEGER NOT NULL, device_id TEXT NOT NULL,
    sums TEXT NOT NULL, PRIMARY KEY (task_id, version, device_id));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, at REAL NOT NULL,
    doc TEXT NOT NULL);
"""


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    settings: dict
    bundle_dir: str
    model_id: str
    specs: list


@dataclass(frozen=True)
class PendingUpdate:
    idempotency_key: str
    round_id: int
    device_id: str
    version_from: int
    weight: float
    staleness: int
    path: Path


@dataclass(frozen=True)
class Device:
    device_id: str
    population: str
    public_key: bytes


class Store(Protocol):
    """What the service needs from persistence (SqliteStore is the default)."""

    def add_task(self, record: TaskRecord, model_bytes: bytes, now: float) -> None: ...
    def tasks(self) -> list[TaskRecord]: ...
    def latest_model(self, task_id: str) -> tuple[int, Path]: ...
    def save_update(self, task_id: str, update: PendingUpdate, data: bytes, metrics: dict,
                    snapshot: dict, now: float) -> None: ...
    def commit_version(self, task_id: str, version: int, model_bytes: bytes,
                       optimizer_state: dict, snapshot: dict, metrics: dict, now: float) -> None: ...


CRASH_POINTS = ("update_file_written", "model_file_written", "version_committed",
                "snapshot_saved")


class SqliteStore:
    """`crash_hook(point)` is called at the CRASH_POINTS (tests kill the process there)."""

    def __init__(self, data_dir: str | Path, crash_hook=None):
        self.root = Path(data_dir)
        self._crash = crash_hook or (lambda point: None)
        for sub in ("models", "updates", "state", "partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "aggregator.db", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives power loss
        self._db.executescript(_SCHEMA)
        self._remove_orphans()

    # -- files -------------------------------------------------------------------------------
    def _write_file(self, relative: str, data: bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself is durable
        finally:
            os.close(dir_fd)
        return path

    def _remove_orphans(self) -> None:
        with self._lock:
            referenced = {r[0] for r in self._db.execute("SELECT path FROM models")}
            referenced |= {r[0] for r in self._db.execute("SELECT path FROM updates")}
            referenced |= {r[0] for r in self._db.execute(
                "SELECT optimizer_state FROM coordinators WHERE optimizer_state IS NOT NULL")}
        for sub in ("models", "updates", "state"):
            for path in (self.root / sub).rglob("*"):
                if path.is_file() and str(path.relative_to(self.root)) not in referenced:
                    path.unlink()

    @contextlib.contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- tasks and models ----------------------------------------------------------------------
    def add_task(self, record: TaskRecord, model_bytes: bytes, now: float) -> None:
        rel = f"models/{record.task_id}/v0.eflm"
        self._write_file(rel, model_bytes)
        with self._transaction() as db:
            db.execute("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)",
                       (record.task_id, json.dumps(record.settings), record.bundle_dir,
                        record.model_id, json.dumps(record.specs), now))
            db.execute("INSERT INTO models VALUES (?, 0, ?, ?, '{}')", (record.task_id, rel, now))

    def has_task(self, task_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM tasks WHERE task_id = ?",
                                    (task_id,)).fetchone() is not None

    def tasks(self) -> list[TaskRecord]:
        with self._lock:
            rows = self._db.execute("SELECT task_id, settings, bundle_dir, model_id, specs "
                                    "FROM tasks ORDER BY created").fetchall()
        return [TaskRecord(r[0], json.loads(r[1]), r[2], r[3], json.loads(r[4])) for r in rows]

    def latest_model(self, task_id: str) -> tuple[int, Path]:
        with self._lock:
            row = self._db.execute("SELECT version, path FROM models WHERE task_id = ? ORDER BY "
                                   "version DESC LIMIT 1", (task_id,)).fetchone()
        return int(row[0]), self.root / row[1]

    def model_path(self, task_id: str, version: int) -> Path | None:
        with self._lock:
            row = self._db.execute("SELECT path FROM models WHERE task_id = ? AND version = ?",
                                   (task_id, version)).fetchone()
        return None if row is None else self.root / row[0]

    def model_history(self, task_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT version, created, metrics FROM models WHERE "
                                    "task_id = ? ORDER BY version", (task_id,)).fetchall()
        return [{"version": v, "created": c, "metrics": json.loads(m)} for v, c, m in rows]

    # -- coordinator state ----------------------------------------------------------------
    def snapshot(self, task_id: str) -> tuple[dict | None, dict]:
        with self._lock:
            row = self._db.execute("SELECT snapshot, optimizer_state FROM coordinators WHERE "
                                   "task_id = ?", (task_id,)).fetchone()
        if row is None:
            return None, {}
        return json.loads(row[0]), self._read_arrays(row[1])

    def save_snapshot(self, task_id: str, snapshot: dict) -> None:
        with self._transaction() as db:
            self._put_snapshot(db, task_id, snapshot)
        self._crash("snapshot_saved")

    def _put_snapshot(self, db, task_id: str, snapshot: dict, state_path: str | None = None):
        db.execute("INSERT INTO coordinators (task_id, snapshot) VALUES (?, ?) ON CONFLICT(task_id) "
                   "DO UPDATE SET snapshot = excluded.snapshot", (task_id, json.dumps(snapshot)))
        if state_path is not None:
            db.execute("UPDATE coordinators SET optimizer_state = ? WHERE task_id = ?",
                       (state_path, task_id))

    # -- updates ------------------------------------------------------------------------------
    def seen_update(self, key: str) -> int | None:
        """The version an already-accepted update went into (None: never seen)."""
        with self._lock:
            row = self._db.execute("SELECT version FROM ledger WHERE idempotency_key = ?",
                                   (key,)).fetchone()
            if row is not None:
                return int(row[0])
            row = self._db.execute("SELECT 1 FROM updates WHERE idempotency_key = ?",
                                   (key,)).fetchone()
        return -1 if row is not None else None

    def save_update(self, task_id: str, update: PendingUpdate, data: bytes, metrics: dict,
                    snapshot: dict, now: float) -> None:
        """Durable before it returns: the raw bytes, the row, and the coordinator state."""
        digest = hashlib.sha256(update.idempotency_key.encode()).hexdigest()[:32]
        rel = f"updates/{task_id}/{digest}.eflu"
        self._write_file(rel, data)
        self._crash("update_file_written")
        with self._transaction() as db:
            db.execute("INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (update.idempotency_key, task_id, update.round_id, update.device_id,
                        update.version_from, update.weight, update.staleness, rel, now,
                        json.dumps(metrics)))
            self._put_snapshot(db, task_id, snapshot)

    def pending_updates(self, task_id: str) -> list[PendingUpdate]:
        with self._lock:
            rows = self._db.execute(
                "SELECT idempotency_key, round_id, device_id, version_from, weight, staleness, "
                "path FROM updates WHERE task_id = ? ORDER BY received", (task_id,)).fetchall()
        return [PendingUpdate(r[0], r[1], r[2], r[3], r[4], r[5], self.root / r[6]) for r in rows]

    def pending_metrics(self, task_id: str) -> list[dict]:
        with self._lock:
            return [json.loads(r[0]) for r in self._db.execute(
                "SELECT metrics FROM updates WHERE task_id = ?", (task_id,))]

    def commit_version(self, task_id: str, version: int, model_bytes: bytes,
                       optimizer_state: dict, snapshot: dict, metrics: dict, now: float) -> None:
        """One transaction: the new model, the coordinator's next state, and the consumed
        updates moved to the idempotency ledger. Their files go after it commits."""
        rel = f"models/{task_id}/v{version}.eflm"
        self._write_file(rel, model_bytes)
        state_rel = None
        if optimizer_state:
            state_rel = f"state/{task_id}/v{version}.npz"
            self._write_file(state_rel, _arrays_bytes(optimizer_state))
        with self._lock:
            files = [self.root / r[0] for r in self._db.execute(
                "SELECT path FROM updates WHERE task_id = ?", (task_id,))]
        self._crash("model_file_written")
        with self._transaction() as db:
            db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                       (task_id, version, rel, now, json.dumps(metrics)))
            db.execute("INSERT OR IGNORE INTO ledger SELECT idempotency_key, task_id, ? FROM "
                       "updates WHERE task_id = ?", (version, task_id))
            db.execute("DELETE FROM updates WHERE task_id = ?", (task_id,))
            old_state = db.execute("SELECT optimizer_state FROM coordinators WHERE task_id = ?",
                                   (task_id,)).fetchone()
            self._put_snapshot(db, task_id, snapshot, state_rel)
        self._crash("version_committed")
        for path in files + ([self.root / old_state[0]] if old_state and old_state[0] and state_rel else []):
            path.unlink(missing_ok=True)

    def drop_pending(self, task_id: str) -> None:
        """An abandoned round: its updates will never count."""
        with self._lock:
            files = [self.root / r[0] for r in self._db.execute(
                "SELECT path FROM updates WHERE task_id = ?", (task_id,))]
        with self._transaction() as db:
            db.execute("DELETE FROM updates WHERE task_id = ?", (task_id,))
        for path in files:
            path.unlink(missing_ok=True)

    # -- devices ---------------------------------------------------------------------------
    def add_device(self, device: Device, token_hash: str, now: float) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO devices VALUES (?, ?, ?, ?, ?)",
                       (device.device_id, device.population, device.public_key, token_hash, now))

    def device_by_token(self, token_hash: str) -> Device | None:
        with self._lock:
            row = self._db.execute("SELECT device_id, population, public_key FROM devices WHERE "
                                   "token_hash = ?", (token_hash,)).fetchone()
        return None if row is None else Device(row[0], row[1], bytes(row[2]))

    # -- federated evaluation ------------------------------------------------------------------
    def add_evaluation(self, task_id: str, version: int, device_id: str, sums: dict) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO evaluations VALUES (?, ?, ?, ?)",
                       (task_id, version, device_id, json.dumps(sums)))

    def has_evaluation(self, task_id: str, version: int, device_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM evaluations WHERE task_id = ? AND version = ? "
                                    "AND device_id = ?", (task_id, version, device_id)).fetchone() is not None

    def evaluation_totals(self, task_id: str) -> dict[int, dict]:
        with self._lock:
            rows = self._db.execute("SELECT version, sums FROM evaluations WHERE task_id = ?",
                                    (task_id,)).fetchall()
        totals: dict[int, dict] = {}
        for version, sums in rows:
            acc = totals.setdefault(version, {"devices": 0})
            acc["devices"] += 1
            for k, v in json.loads(sums).items():
                acc[k] = acc.get(k, 0.0) + v
        return totals

    # -- resumable uploads --------------------------------------------------------------------
    def begin_upload(self, upload_id: str, device_id: str, task_id: str, size: int,
                     sha256: str, now: float) -> None:
        (self.root / "partial" / upload_id).write_bytes(b"")
        with self._transaction() as db:
            db.execute("INSERT INTO uploads VALUES (?, ?, ?, ?, ?, 0, ?)",
                       (upload_id, device_id, task_id, size, sha256, now))

    def upload_info(self, upload_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT device_id, task_id, size, sha256, received FROM uploads "
                                   "WHERE upload_id = ?", (upload_id,)).fetchone()
        if row is None:
            return None
        return dict(zip(("device_id", "task_id", "size", "sha256", "received"), row))

    def append_upload(self, upload_id: str, offset: int, chunk: bytes) -> int:
        """Append `chunk` at `offset` (== bytes received so far); durable on return."""
        path = self.root / "partial" / upload_id
        with open(path, "r+b") as f:
            f.truncate(offset)  # bytes past the recorded count were never acknowledged
            f.seek(offset)
            f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        received = offset + len(chunk)
        with self._transaction() as db:
            db.execute("UPDATE uploads SET received = ? WHERE upload_id = ?", (received, upload_id))
        return received

    def read_upload(self, upload_id: str) -> bytes:
        return (self.root / "partial" / upload_id).read_bytes()

    def finish_upload(self, upload_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        (self.root / "partial" / upload_id).unlink(missing_ok=True)

    # -- events -----------------------------------------------------------------------------
    def add_events(self, task_id: str, events: list[dict]) -> None:
        if not events:
            return
        with self._transaction() as db:
            db.executemany("INSERT INTO events (task_id, at, doc) VALUES (?, ?, ?)",
                           [(task_id, e.get("at", 0.0), json.dumps(e)) for e in events])

    def events(self, task_id: str, limit: int = 200) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM events WHERE task_id = ? ORDER BY id DESC "
                                    "LIMIT ?", (task_id, limit)).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def _read_arrays(self, rel: str | None) -> dict:
        if not rel:
            return {}
        with np.load(self.root / rel, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _arrays_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
