"""How a task is doing, from its history: time and bytes per version, and how far it is
to its target (`TaskSettings.target`): the versions and time to go. Plain functions of
the documents /v1/status shows (`describe | history`); nothing here is stored."""

from __future__ import annotations

import math

__all__ = ["task_progress"]

RECENT = 10  # versions whose intervals make the time per version
TREND = 5  # evaluated versions whose trend extrapolates a metric to its target


def task_progress(doc: dict) -> dict:
    """{"progress": ...} for a task's document (not mutated); {} for a failed task."""
    if not isinstance(doc.get("versions"), list):
        return {}
    per_version = version_costs(doc["versions"], doc.get("events") or [])
    seconds = [v["seconds"] for v in per_version if v["seconds"] is not None][-RECENT:]
    spv = sum(seconds) / len(seconds) if seconds else None
    progress = {"versions": per_version, "seconds_per_version": spv}
    target = (doc.get("settings") or {}).get("target")
    if target:
        newest = per_version[-1] if per_version else None
        progress["target"] = target_progress(target, doc, spv, newest)
    return {"progress": progress}


def version_costs(versions: list[dict], events: list[dict]) -> list[dict]:
    """Per version: the seconds since the one before (None for the first) and the bytes
    up and down that made it (None where not recorded, e.g. before the server counted)."""
    published = {
        e["version"]: e for e in events if e.get("event") == "version_published" and "version" in e
    }
    out, before = [], None
    for v in versions:
        event = published.get(v["version"], {})
        out.append(
            {
                "version": v["version"],
                "created": v["created"],
                "seconds": None if before is None else v["created"] - before,
                "bytes_up": event.get("bytes_up"),
                "bytes_down": event.get("bytes_down"),
            }
        )
        before = v["created"]
    return out


def metric_series(doc: dict, metric: str) -> list[tuple[int, float]]:
    """(version, value) of `metric` ("heldout.accuracy", "training.mean_loss",
    "federated.correct_rate"), in version order."""
    source, _, name = metric.partition(".")
    rows = {
        "heldout": doc.get("heldout_evaluation") or [],
        "federated": doc.get("federated_evaluation") or [],
        "training": [
            {"version": v["version"]} | (v.get("metrics") or {}) for v in doc.get("versions") or []
        ],
    }.get(source, [])
    return sorted(
        (r["version"], float(r[name]))
        for r in rows
        if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])
    )


def target_progress(target: dict, doc: dict, spv: float | None, newest: dict | None) -> dict:
    """The target as set, and for each of its parts the versions and seconds to go
    (seconds: versions to go x the time per version, from the newest version)."""
    out = dict(target)
    version = doc.get("version", 0)
    if target.get("max_versions") is not None:
        to_go = max(0, target["max_versions"] - version)
        out["max_versions_to_go"] = _to_go(to_go, spv, newest)
    if target.get("metric"):
        out["metric_to_go"] = _metric_to_go(
            target, metric_series(doc, target["metric"]), spv, newest
        )
    return out


def _to_go(versions: int | None, spv: float | None, newest: dict | None) -> dict:
    seconds = None if versions is None or spv is None else versions * spv
    eta = None if seconds is None or newest is None else newest["created"] + seconds
    return {"versions": versions, "seconds": seconds, "eta": eta}


def _metric_to_go(
    target: dict, series: list[tuple[int, float]], spv: float | None, newest: dict | None
) -> dict:
    higher = target.get("at_least") is not None
    goal = target["at_least"] if higher else target["at_most"]
    if not series:
        return {
            "current": None,
            "reached_at": None,
            "trend_per_version": None,
            **_to_go(None, spv, newest),
        }
    met = [v for v, x in series if (x >= goal if higher else x <= goal)]
    current_version, current = series[-1]
    out = {
        "current": current,
        "current_version": current_version,
        "reached_at": met[0] if met else None,
    }
    recent = series[-TREND:]
    slope = _slope(recent) if len(recent) >= 2 else None
    out["trend_per_version"] = slope
    if met and met[-1] == current_version:
        return out | _to_go(0, spv, newest)
    toward = slope is not None and (slope > 0 if higher else slope < 0)
    # (less a rounding error: 0.25 / 0.125 is 2 versions, not 3)
    versions = math.ceil((goal - current) / slope - 1e-9) if toward else None
    if versions is not None and newest is not None:  # counted from the newest version
        versions = max(0, versions - (newest["version"] - current_version))
    return out | _to_go(versions, spv, newest)


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of value over version."""
    n = len(points)
    mx = sum(v for v, _ in points) / n
    my = sum(x for _, x in points) / n
    sxx = sum((v - mx) ** 2 for v, _ in points)
    if sxx == 0:
        return None
    return sum((v - mx) * (x - my) for v, x in points) / sxx
