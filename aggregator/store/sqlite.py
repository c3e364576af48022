"""The default store: embedded SQLite (WAL, synchronous=FULL) plus files under a data dir.

Files hold bytes (model versions in the wire format, raw accepted updates, server
optimizer state, partial uploads); SQLite holds everything else and the paths, changed
only inside transactions. A file is written to a temporary name, fsynced and renamed
before the transaction that refers to it commits, so after `kill -9` at any point every
row points at a whole file; files no row points at are removed at start-up. One process
owns a data dir and leads every task.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

from .rows import SCHEMA, RowStore, migrate


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db, self.deferred = db, []

    def execute(self, sql: str, params: tuple = ()):
        return self.db.execute(sql, params)


class SqliteStore(RowStore):
    """`crash_hook(point)` is called at the CRASH_POINTS (tests kill the process there)."""

    shared = False

    def __init__(self, data_dir: str | Path, crash_hook=None):
        super().__init__(crash_hook)
        self.root = Path(data_dir)
        for sub in ("models", "updates", "state", "partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.root / "aggregator.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives power loss
        self._db.executescript(
            SCHEMA.format(real="REAL", blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT")
        )
        with self._transaction() as tx:
            migrate(tx, self._columns, "REAL")
        self._led: set[str] = set()
        self._remove_orphans()

    # -- connection -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    # -- leadership: one process, which leads every task ---------------------------------
    def try_lead(self, task_id: str, url: str | None, now: float) -> bool:
        self._led.add(task_id)
        return True

    def leading(self) -> set[str]:
        return set(self._led)

    def leader_url(self, task_id: str) -> str | None:
        return None

    # -- blobs are files --------------------------------------------------------------------
    def _put_blob(self, tx, path: str, data: bytes) -> None:
        _write_durably(self.root / path, data)

    def _read_blob(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def _blob_file(self, path: str) -> Path:
        return self.root / path

    def _drop_blobs(self, tx, paths: list[str]) -> None:
        for path in paths:  # after the commit: a crash before it leaves only orphans
            tx.deferred.append(lambda p=self.root / path: p.unlink(missing_ok=True))

    def _partial(self, upload_id: str) -> Path:
        return self.root / "partial" / upload_id

    def _begin_upload_bytes(self, tx, upload_id: str) -> None:
        self._partial(upload_id).write_bytes(b"")

    def _append_upload_bytes(self, tx, upload_id: str, offset: int, chunk: bytes) -> None:
        with open(self._partial(upload_id), "r+b") as f:
            f.truncate(offset)  # bytes past the recorded count were never acknowledged
            f.seek(offset)
            f.write(chunk)
            f.flush()
            os.fsync(f.fileno())

    def read_upload(self, upload_id: str) -> bytes:
        info = self.upload_info(upload_id)
        return self._partial(upload_id).read_bytes()[: info["received"] if info else None]

    def _drop_upload_bytes(self, tx, upload_id: str) -> None:
        tx.deferred.append(lambda: self._partial(upload_id).unlink(missing_ok=True))

    def _remove_orphans(self) -> None:
        referenced = {r[0] for r in self._query("SELECT path FROM models")}
        referenced |= {r[0] for r in self._query("SELECT path FROM updates")}
        referenced |= {
            r[0]
            for r in self._query(
                "SELECT optimizer_state FROM coordinators WHERE optimizer_state IS NOT NULL"
            )
        }
        referenced |= {f"partial/{r[0]}" for r in self._query("SELECT upload_id FROM uploads")}
        for sub in ("models", "updates", "state", "partial"):
            for path in (self.root / sub).rglob("*"):
                if path.is_file() and str(path.relative_to(self.root)) not in referenced:
                    path.unlink()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _write_durably(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the directory: the whole file or none of it."""
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
