"""The on-device example store: embedded SQLite, one file the app owns.

The app logs examples (for the keyboard: committed sentences, tokenized on the device);
training streams them back page by page, so memory never grows with the store. Examples
never leave the device: there is no export, only iteration by the SDK's own trainer.
`wipe()` erases every example and all SDK state, for a user who opts out.

An example is a dict of numpy arrays, stored in edge_sdk.protocol.arrays' container.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .clock import Clock, SystemClock
from .errors import StoreError
from .protocol.arrays import decode_arrays, encode_arrays
from .protocol.errors import ProtocolError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    created REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_by_collection ON examples (collection, id);
CREATE INDEX IF NOT EXISTS examples_by_age ON examples (collection, created);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep at most `max_count` examples per collection, none older than `max_age_s`."""

    max_count: int | None = 10_000
    max_age_s: float | None = 30 * 24 * 3600

    def __post_init__(self):
        if self.max_count is not None and self.max_count < 1:
            raise ValueError(f"max_count must be >= 1 or None, got {self.max_count}")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0 or None, got {self.max_age_s}")


def encode_example(example: dict[str, np.ndarray]) -> bytes:
    return encode_arrays({k: np.asarray(v) for k, v in example.items()})


def decode_example(blob: bytes) -> dict[str, np.ndarray]:
    try:
        return decode_arrays(blob)
    except ProtocolError as e:
        raise StoreError(f"a stored example is corrupt: {e}") from None


class ExampleStore:
    """Thread-safe: one connection, serialized by a lock."""

    def __init__(
        self,
        path: str | Path,
        retention: RetentionPolicy = RetentionPolicy(),
        clock: Clock | None = None,
        cache_kib: int | None = None,
    ):
        """`cache_kib` caps SQLite's page cache for this store (default: SQLite's ~2 MB);
        a host with many stores open, like the fleet simulator, keeps it small."""
        self.path, self.retention = Path(path), retention
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if cache_kib is not None:
                self._db.execute(f"PRAGMA cache_size=-{max(1, int(cache_kib))}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open the example store {self.path}: {e}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- examples -------------------------------------------------------------------------
    def add(self, collection: str, example: dict[str, np.ndarray]) -> None:
        self.add_many(collection, [example])

    def add_many(self, collection: str, examples: Iterable[dict[str, np.ndarray]]) -> int:
        now = self.clock.now()
        rows = [(collection, now, encode_example(e)) for e in examples]
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT INTO examples (collection, created, payload) VALUES (?, ?, ?)", rows
            )
            self._enforce(collection, now)
        return len(rows)

    def count(self, collection: str) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM examples WHERE collection = ?", (collection,)
            ).fetchone()[0]

    def collections(self) -> list[str]:
        with self._lock:
            return [
                r[0]
                for r in self._db.execute(
                    "SELECT DISTINCT collection FROM examples ORDER BY collection"
                )
            ]

    def iter_examples(
        self,
        collection: str,
        *,
        shuffle_rng: np.random.Generator | None = None,
        limit: int | None = None,
        page: int = 256,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Stream a collection's examples, `page` rows per query: in insertion order, or
        in a seeded random order when `shuffle_rng` is given (only the row ids, a few bytes
        each, are held to shuffle). `limit` caps how many are yielded (per-task selection)."""
        if shuffle_rng is None:
            yield from self._iter_in_order(collection, limit, page)
            return
        with self._lock:
            ids = np.array(
                [
                    r[0]
                    for r in self._db.execute(
                        "SELECT id FROM examples WHERE collection = ?", (collection,)
                    )
                ],
                dtype=np.int64,
            )
        ids = shuffle_rng.permutation(ids)[:limit]
        for start in range(0, len(ids), page):
            chunk = [int(i) for i in ids[start : start + page]]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = dict(
                    self._db.execute(
                        f"SELECT id, payload FROM examples WHERE id IN ({marks})", chunk
                    ).fetchall()
                )
            for i in chunk:
                if i in rows:  # a row removed by retention meanwhile is skipped
                    yield decode_example(rows[i])

    def _iter_in_order(self, collection, limit, page):
        last, yielded = -1, 0
        while limit is None or yielded < limit:
            size = page if limit is None else min(page, limit - yielded)
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, payload FROM examples WHERE collection = ? AND id > ? "
                    "ORDER BY id LIMIT ?",
                    (collection, last, size),
                ).fetchall()
            if not rows:
                return
            for rowid, payload in rows:
                yield decode_example(payload)
            yielded += len(rows)
            last = rows[-1][0]

    def enforce_retention(self) -> None:
        now = self.clock.now()
        with self._lock, self._transaction():
            for collection in self.collections():
                self._enforce(collection, now)

    def _enforce(self, collection: str, now: float) -> None:
        policy = self.retention
        if policy.max_age_s is not None:
            self._db.execute(
                "DELETE FROM examples WHERE collection = ? AND created < ?",
                (collection, now - policy.max_age_s),
            )
        if policy.max_count is not None:
            self._db.execute(
                "DELETE FROM examples WHERE collection = ? AND id NOT IN (SELECT id FROM "
                "examples WHERE collection = ? ORDER BY id DESC LIMIT ?)",
                (collection, collection, policy.max_count),
            )

    # -- SDK state (checkpoints, error-feedback residuals, participation history) ---------
    def put_state(self, key: str, value: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) "
                "DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_state(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def delete_state(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM state WHERE key = ?", (key,))

    # -- opt-out -------------------------------------------------------------------------
    def wipe_collection(self, collection: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM examples WHERE collection = ?", (collection,))
            self._compact()

    def wipe(self) -> None:
        """Erase every example and all SDK state, and compact the file so nothing of them
        remains on disk (the WAL is truncated too)."""
        with self._lock:
            self._db.execute("DELETE FROM examples")
            self._db.execute("DELETE FROM state")
            self._compact()

    def _compact(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextlib.contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
