"""What the views anyone may read (/v1/status, the dashboard's source) show of a task.
Task settings and differential-privacy figures (the privacy spent, the noise and clip
measurements, from which the noise multiplier follows) are the operator's: they appear
in the admin API, and publicly only when `ServerConfig.public_status_settings` is on.
The mode (sync or async) stays: the dashboard words its counts by it. So does the
task's `progress` (aggregator/progress.py), its target included: where a task is going
and when it will get there is what the dashboard is for."""

from __future__ import annotations

__all__ = ["public_task"]

_PRIVATE_TASK_KEYS = frozenset({"settings"})
_PRIVATE_VERSION_KEYS = frozenset({"epsilon", "delta", "measurements"})


def public_task(doc: dict, show_settings: bool) -> dict:
    """`doc` (a task's description and history, not mutated) as the public may see it."""
    if show_settings:
        return doc
    public = {k: v for k, v in doc.items() if k not in _PRIVATE_TASK_KEYS}
    if isinstance(doc.get("versions"), list):
        public["versions"] = [
            v
            | {"metrics": {k: m for k, m in v["metrics"].items() if k not in _PRIVATE_VERSION_KEYS}}
            if isinstance(v, dict) and isinstance(v.get("metrics"), dict)
            else v
            for v in doc["versions"]
        ]
    if isinstance(doc.get("events"), list):
        public["events"] = [
            {k: x for k, x in e.items() if k not in _PRIVATE_VERSION_KEYS}
            if isinstance(e, dict)
            else e
            for e in doc["events"]
        ]
    return public
