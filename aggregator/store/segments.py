"""Accepted updates' bytes as append-only segment files, one sequence per task, for the
SQLite store: `segments/<task>/<number>.seg` under the data dir.

An update's bytes are appended to its task's open segment and its row in the database
says where they are (segment, offset, length). `sync()` makes everything appended
durable and is called before every commit, so a committed row always points at durable
bytes; a crash before the commit leaves bytes no row points at, which do no harm. A
segment is closed once it holds `SEGMENT_BYTES` and removed once no row points into it
(after the commit that dropped its last rows, or at start-up). Writing the bytes once,
sequentially, costs a fraction of the CPU of writing them into the database (the WAL, the
checkpoint, then freeing the pages): docs/benchmarks.md, the HTTP path.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SEGMENT_BYTES", "UpdateSegments"]

SEGMENT_BYTES = 64 << 20
"""A segment takes no more appends once it holds this many bytes (a few hundred updates
of a keyboard model: a version or two)."""


class UpdateSegments:
    """Not thread-safe: the store calls it under its lock."""

    def __init__(self, data_dir: Path):
        self.root = data_dir / "segments"
        self.root.mkdir(parents=True, exist_ok=True)
        numbers = [_number(p) for p in self.root.glob("*/*.seg")]
        self._next = max(numbers, default=0) + 1  # never append to a segment of before
        self._open: dict[str, tuple[str, int, int]] = {}  # task -> (name, fd, size)
        self._unsynced: dict[str, int] = {}  # name -> fd, appended to since the last sync
        self._new_dirs: set[Path] = set()  # directories whose new entries need an fsync

    def append(self, task_id: str, data: bytes) -> tuple[str, int]:
        """(segment, offset) of `data`, appended to the task's open segment (not durable
        before `sync`)."""
        name, fd, size = self._open.get(task_id) or self._create(task_id)
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], size + written)
        self._open[task_id] = (name, fd, size + len(data))
        self._unsynced[name] = fd
        return name, size

    def sync(self) -> None:
        """Everything appended so far durable (the files, then new directory entries);
        segments that are full are closed."""
        for fd in self._unsynced.values():
            os.fsync(fd)
        self._unsynced.clear()
        for path in self._new_dirs:
            _fsync_dir(path)
        self._new_dirs.clear()
        for task_id, (_, fd, size) in list(self._open.items()):
            if size >= SEGMENT_BYTES:
                os.close(fd)
                del self._open[task_id]

    def read(self, name: str, offset: int, length: int) -> bytes:
        with open(self.root / name, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise OSError(f"segment {name} holds {len(data)} of the {length} bytes at {offset}")
        return data

    def remove_unreferenced(self, live: set[str]) -> None:
        """Remove every closed segment no row points into (`live`: the ones rows do)."""
        open_names = {name for name, _, _ in self._open.values()}
        for path in self.root.glob("*/*.seg"):
            name = f"{path.parent.name}/{path.name}"
            if name not in live and name not in open_names:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        for _, fd, _ in self._open.values():
            os.close(fd)
        self._open.clear()
        self._unsynced.clear()

    def _create(self, task_id: str) -> tuple[str, int, int]:
        folder = self.root / task_id
        if not folder.exists():
            folder.mkdir()
            self._new_dirs.add(self.root)
        name = f"{task_id}/{self._next:08d}.seg"
        self._next += 1
        fd = os.open(self.root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._new_dirs.add(folder)
        self._open[task_id] = (name, fd, 0)
        return self._open[task_id]


def _number(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
