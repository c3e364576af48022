"""The default store: embedded SQLite (WAL, synchronous=FULL) plus files under a data dir.

Files hold the large bytes that are written rarely (model versions in the wire format,
server optimizer state, partial uploads), each written to a temporary name, fsynced and
renamed before the transaction that refers to it commits; the raw accepted updates
(written at every upload) are appended to segment files (segments.py), fsynced before
every commit, one fsync for all of a group's. SQLite holds everything else, the paths
and where each update's bytes are, changed only inside transactions. After `kill -9` at
any point every row points at whole bytes; files no row points at are removed at
start-up. One process owns a data dir and leads every task.

Grouped commits (`group_commits(True)`, what `edge-fl serve` runs): the writes of many
calls share one transaction, each in a savepoint of its own (a call that fails undoes
only its writes), and `flush()` commits them with one fsync. Only the newest coordinator
snapshot of a group is written, at its commit. Nothing is acknowledged before the flush
that made it durable (the app waits for it), so a crash loses only unacknowledged work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

from ..errors import StoreUnavailable
from .interface import Snapshot
from .rows import SCHEMA, RowStore, migrate, write_snapshot
from .segments import UpdateSegments

log = logging.getLogger(__name__)


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
        # big pages for a new database (an existing one keeps its own): an update's bytes
        # span a few overflow pages instead of dozens, so writing, checkpointing and
        # freeing them walks a short chain (docs/benchmarks.md, the HTTP path)
        self._db.execute("PRAGMA page_size=65536")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives power loss
        self._db.executescript(
            SCHEMA.format(real="REAL", blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT")
        )
        # where each update's bytes are (segments.py); update_bytes: where a data dir of
        # before the segments held them (read, and freed with their updates)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS update_segments (path TEXT PRIMARY KEY, "
            "segment TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS update_bytes (path TEXT PRIMARY KEY, data BLOB NOT NULL)"
        )
        self._segments = UpdateSegments(self.root)
        self._grouping = False
        self._group: int | None = None  # the open group's number
        self._groups = 0
        # task -> newest snapshot of the group (or what takes it, at the commit)
        self._group_snapshots: dict[str, Snapshot] = {}
        self._group_after: list = []  # what waits for the group's commit
        with self._transaction() as tx:
            migrate(tx, self._columns, "REAL")
        self._led: set[str] = set()
        self._remove_orphans()
        # update bytes are in segments; a data dir of before may still hold some as files
        self._update_files = any(p.is_file() for p in (self.root / "updates").rglob("*"))
        # and some as update_bytes rows (nothing adds any now: once empty, never asked)
        self._update_rows = self._one("SELECT 1 FROM update_bytes LIMIT 1") is not None

    # -- connection -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        with self._lock:
            if not self._grouping:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield _Tx(self._db)
                    self._segments.sync()  # the update bytes its rows point at
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return
            if self._group is None:
                self._db.execute("BEGIN IMMEDIATE")
                self._groups += 1
                self._group = self._groups
            elif not self._db.in_transaction:  # SQLite undid the group after an I/O error
                raise _group_lost()
            self._db.execute("SAVEPOINT call")
            try:
                yield _Tx(self._db)
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK TO call")
                    self._db.execute("RELEASE call")
                raise
            self._db.execute("RELEASE call")

    def _after_commit(self, actions: list) -> None:
        with self._lock:
            if self._group is not None:
                self._group_after.extend(actions)
                return
        super()._after_commit(actions)

    def _stage_snapshot(
        self, tx, task_id: str, snapshot: Snapshot, state_path: str | None = None
    ) -> None:
        if self._group is not None and state_path is None:
            self._group_snapshots[task_id] = snapshot
            return
        self._group_snapshots.pop(task_id, None)  # older than this one
        super()._stage_snapshot(tx, task_id, snapshot, state_path)

    # -- grouped commits ---------------------------------------------------------------------
    def group_commits(self, on: bool) -> None:
        with self._lock:
            if not on:
                self.flush()
            self._grouping = on

    def open_group(self) -> int | None:
        return self._group

    def flush(self) -> int | None:
        with self._lock:
            group = self._group
            if group is None:
                return None
            snapshots, self._group_snapshots = self._group_snapshots, {}
            after, self._group_after = self._group_after, []
            self._group = None
            try:
                if not self._db.in_transaction:
                    raise _group_lost()
                for task_id, snapshot in snapshots.items():
                    write_snapshot(self._db, task_id, snapshot)
                self._segments.sync()  # the update bytes the group's rows point at
                self._crash("group_written")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        for action in after:
            action()
        return group

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

    # -- blobs are files, an update's bytes a stretch of a segment --------------------------
    def _put_blob(self, tx, path: str, data: bytes) -> None:
        if _is_update(path):
            segment, offset = self._segments.append(path.split("/")[1], data)
            tx.execute(
                "INSERT OR REPLACE INTO update_segments VALUES (?, ?, ?, ?)",
                (path, segment, offset, len(data)),
            )
        else:
            _write_durably(self.root / path, data)

    def _read_blob(self, path: str) -> bytes:
        if _is_update(path):
            row = self._one(
                "SELECT segment, offset, length FROM update_segments WHERE path = ?", (path,)
            )
            if row is not None:
                with self._lock:
                    return self._segments.read(*row)
            row = self._update_rows and self._one(
                "SELECT data FROM update_bytes WHERE path = ?", (path,)
            )
            if row:
                return bytes(row[0])  # else a file, from a data dir of before the table
        return (self.root / path).read_bytes()

    def _blob_file(self, path: str) -> Path:
        return self.root / path

    def _drop_blobs(self, tx, paths: list[str]) -> None:
        rows = [(p,) for p in paths if _is_update(p)]
        if rows:
            tx.db.executemany("DELETE FROM update_segments WHERE path = ?", rows)
            if self._update_rows:
                tx.db.executemany("DELETE FROM update_bytes WHERE path = ?", rows)
            tx.deferred.append(self._free_segments)  # once no committed row points there
        for path in paths:  # after the commit: a crash before it leaves only orphans
            if self._update_files or not _is_update(path):
                tx.deferred.append(lambda p=self.root / path: p.unlink(missing_ok=True))

    def _free_segments(self) -> None:
        """After a commit: a segment that could not be removed is garbage, not a failed
        commit (start-up tries again)."""
        with self._lock:
            live = {r[0] for r in self._db.execute("SELECT DISTINCT segment FROM update_segments")}
            try:
                self._segments.remove_unreferenced(live)
            except OSError as e:
                log.warning("update segments not removed yet: %s", e)

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
        with self._transaction() as tx:  # update bytes whose update left (see _drop_blobs)
            for table in ("update_segments", "update_bytes"):
                tx.execute(f"DELETE FROM {table} WHERE path NOT IN (SELECT path FROM updates)")
        self._free_segments()
        referenced = {r[0] for r in self._query("SELECT path FROM models")}
        referenced |= {r[0] for r in self._query("SELECT path FROM updates")}
        referenced |= {
            r[0]
            for r in self._query(
                "SELECT optimizer_state FROM coordinators WHERE optimizer_state IS NOT NULL"
            )
        }
        referenced |= {f"partial/{r[0]}" for r in self._query("SELECT upload_id FROM uploads")}
        models = {r[0] for r in self._query("SELECT path FROM models")}
        for sub in ("models", "updates", "state", "partial"):
            for path in (self.root / sub).rglob("*"):
                rel = str(path.relative_to(self.root))
                # "<model>.<encoding>": a download encoding of a kept model (its cache)
                if (
                    path.is_file()
                    and rel not in referenced
                    and not (path.suffix != ".tmp" and rel.rsplit(".", 1)[0] in models)
                ):
                    path.unlink()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._segments.close()


def _group_lost() -> StoreUnavailable:
    return StoreUnavailable(
        "the database undid the writes not yet committed after an I/O error", retry_after_s=1
    )


def _is_update(path: str) -> bool:
    return path.startswith("updates/")


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
