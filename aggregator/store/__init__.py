"""Durable state behind one interface (`Store`): embedded SQLite plus files under a data
dir by default (`sqlite.py`), or PostgreSQL shared by several aggregator processes
(`postgres.py`, the `postgres` extra). The statements both run are in `rows.py`."""

from __future__ import annotations

from pathlib import Path

from .interface import CRASH_POINTS, AlreadyAggregated, Device, PendingUpdate, Store, TaskRecord
from .sqlite import SqliteStore


def open_store(data_dir: str | Path, store_url: str | None = None, crash_hook=None) -> Store:
    """SQLite under `data_dir` unless `store_url` names a PostgreSQL database (then
    `data_dir` holds only a cache of model files)."""
    if store_url is None:
        return SqliteStore(data_dir, crash_hook)
    try:
        from .postgres import PostgresStore
    except ImportError as e:
        raise RuntimeError(
            f"a postgresql:// store needs psycopg 3: pip install 'edge-fl[postgres]' ({e})"
        ) from None
    return PostgresStore(store_url, Path(data_dir) / "cache", crash_hook)


__all__ = [
    "CRASH_POINTS",
    "AlreadyAggregated",
    "Device",
    "PendingUpdate",
    "SqliteStore",
    "Store",
    "TaskRecord",
    "open_store",
]
