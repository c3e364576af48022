"""The serve log's line per committed version, with the participation funnel since the
previous one:

    task kb v12: 40 checked in, 32 assigned, 30 uploaded, 28 accepted, 2 late, 1 rejected; loss 3.21, 4.1 s

The coordinator's funnel counts from the task's creation; the line shows the difference
from the last version committed by this process (the first after a start says "since
created", and has no time). Numbers only: no device ids, nothing personal.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger("aggregator.rounds")


def funnel_text(funnel: dict) -> str:
    """`40 checked in, 32 assigned, 30 uploaded, 28 accepted, 2 late, 1 rejected` of a
    coordinator funnel (counts; `rejected` and `dropped` by reason; "late" is the late
    rejections), with the drops when there are any."""
    rejected = dict(funnel.get("rejected") or {})
    late = rejected.pop("late", 0)
    dropped = sum((funnel.get("dropped") or {}).values())
    parts = [
        f"{funnel.get('checked_in', 0)} checked in",
        f"{funnel.get('selected', 0)} assigned",
        f"{funnel.get('reported', 0)} uploaded",
        f"{funnel.get('accepted', 0)} accepted",
        f"{late} late",
        f"{sum(rejected.values())} rejected",
    ]
    if dropped:
        parts.append(f"{dropped} dropped")
    return ", ".join(parts)


def funnel_difference(after: dict, before: dict) -> dict:
    """The counts of `after` less those of `before` (two funnels of one task)."""
    out = {
        k: after.get(k, 0) - before.get(k, 0)
        for k in ("checked_in", "selected", "reported", "accepted")
    }
    for k in ("rejected", "dropped"):
        a, b = after.get(k) or {}, before.get(k) or {}
        out[k] = {r: n - b.get(r, 0) for r, n in a.items() if n - b.get(r, 0)}
    return out


class CommitLog:
    """Remembers each task's funnel and time at its last commit, to log the next one."""

    def __init__(self, logger: logging.Logger = log):
        self.logger = logger
        self._last: dict[str, tuple[dict, float]] = {}

    def committed(self, task_id: str, version: int, funnel: dict, metrics: dict, now: float) -> str:
        """Log (INFO) and return the line of `version` of `task_id`, just committed.
        `metrics`: the version's mean training metrics (`mean_loss` is shown)."""
        before = self._last.get(task_id)
        self._last[task_id] = (funnel, now)
        counts = funnel if before is None else funnel_difference(funnel, before[0])
        line = f"task {task_id} v{version}: {funnel_text(counts)}"
        if before is None:
            line += " (since created)"
        extras = []
        loss = metrics.get("mean_loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            extras.append(f"loss {loss:.3g}")
        if before is not None:
            extras.append(f"{now - before[1]:.1f} s")
        if extras:
            line += "; " + ", ".join(extras)
        self.logger.info("%s", line)
        return line

    def refused(self, task_id: str, version: int, reason: str) -> None:
        self.logger.warning(
            "task %s v%d refused: %s; the model stays at v%d", task_id, version, reason, version - 1
        )
