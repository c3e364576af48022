"""Memory of a process tree as the kernel accounts it: the sum of every process's PSS.

PSS (proportional set size, /proc/PID/smaps_rollup) charges each shared page to the
processes that map it in equal parts, so the sum over a tree counts shared libraries,
memory-mapped data and Ray's shared-memory object store once, where a sum of RSS would
count them once per process.

Ray's daemons (gcs_server, raylet, workers) are started by the driver's child but some
outlive or detach from it; the driver marks itself a child subreaper (prctl), so orphans
are re-parented to it instead of to init and stay in the tree it measures and cleans up.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def parent_map(proc: Path = Path("/proc")) -> dict[int, int]:
    """pid -> parent pid of every process now alive (those that vanish while read are
    left out)."""
    parents = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces or ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(root: int, parents: dict[int, int]) -> list[int]:
    """Every process below `root` (not root itself), breadth first."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, queue = [], list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        out.append(pid)
        queue.extend(children.get(pid, []))
    return out


def pss_kib(pid: int, proc: Path = Path("/proc")) -> int:
    """The process's PSS in KiB; 0 if it is gone (or a zombie, which maps nothing)."""
    try:
        text = (proc / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree_pss_kib(root: int, proc: Path = Path("/proc")) -> tuple[int, int]:
    """(PSS summed over every process below `root`, in KiB; how many processes)."""
    parts = tree_pss_parts(root, proc)
    return sum(kib for _, _, kib in parts), len(parts)


def tree_pss_parts(root: int, proc: Path = Path("/proc")) -> list[tuple[int, str, int]]:
    """(pid, command name, PSS in KiB) of every process below `root`."""
    return [
        (pid, _command(pid, proc), pss_kib(pid, proc))
        for pid in descendants(root, parent_map(proc))
    ]


def _command(pid: int, proc: Path) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


class PeakSampler:
    """Samples the PSS of the tree below `root` every `interval_s` on a thread and keeps
    the peak (the largest sum seen, with its process count)."""

    def __init__(self, root: int, interval_s: float = 0.25):
        self.root, self.interval_s = root, interval_s
        self.peak_kib, self.peak_processes, self.samples = 0, 0, 0
        self.peak_parts: list[tuple[int, str, int]] = []  # (pid, command, KiB) at the peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> None:
        parts = tree_pss_parts(self.root)
        kib = sum(k for _, _, k in parts)
        self.samples += 1
        if kib > self.peak_kib:
            self.peak_kib, self.peak_processes, self.peak_parts = kib, len(parts), parts

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux >= 3.4)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def end_descendants(grace_s: float = 5.0) -> list[int]:
    """SIGTERM every process below this one (what a child left behind: Ray's daemons),
    SIGKILL those still alive after `grace_s`, and reap them. Returns the pids ended."""
    me = os.getpid()
    pids = descendants(me, parent_map())
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _reap_alive(pids):
        time.sleep(0.1)
    for pid in _reap_alive(pids):
        _signal(pid, signal.SIGKILL)
    _reap_alive(pids)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap_alive(pids: list[int]) -> list[int]:
    """Reap those that exited (those that are our children); the ones still alive."""
    alive = []
    for pid in pids:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (its own parent reaps it) or reaped
            done = 0 if Path(f"/proc/{pid}").exists() and not _zombie(pid) else pid
        if not done:
            alive.append(pid)
    return alive


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


__all__ = [
    "PeakSampler",
    "become_subreaper",
    "descendants",
    "end_descendants",
    "parent_map",
    "pss_kib",
    "tree_pss_kib",
    "tree_pss_parts",
]
