"""Prometheus metrics of the aggregator (one registry per app, so tests stay isolated).

Participation counts are not counted here a second time: at each scrape they are read
from the tasks' funnels (`coordinator.Funnel`, where each outcome is counted once, as
it is decided), the same documents /v1/status and the dashboard show, so the three
agree. What only the HTTP layer sees (requests refused before they reach a task, bytes,
latency) is counted here.

Every label value goes through `vocabulary.safe_text` on its way in: labels come from
task ids, reasons and codes, some of which a device or an old data dir supplied, and one
value Prometheus's text format cannot encode (a lone surrogate) would make every later
scrape fail. /metrics shows counts only: no task settings, no DP parameters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .vocabulary import safe_text

__all__ = ["Metrics"]

_LABEL_CHARS = 128
HELDOUT_GAUGES = ("accuracy", "top3_accuracy", "mean_loss")


def _label(value) -> str:
    return safe_text(value, _LABEL_CHARS)


class _SafeLabels:
    """A labelled metric whose label values are made safe before use."""

    def __init__(self, metric):
        self._metric = metric

    def labels(self, *values):
        return self._metric.labels(*(_label(v) for v in values))


class _TaskCollector:
    """The tasks' funnels, model versions and newest held-out metrics, as last observed."""

    def __init__(self):
        self.tasks: list[dict] = []
        self.heldout: dict[str, dict] = {}

    def collect(self):
        counters = {
            key: CounterMetricFamily(name, text, labels=["task"])
            for key, name, text in (
                ("checked_in", "edgefl_check_ins", "device check-ins"),
                ("selected", "edgefl_selections", "assignments handed out"),
                (
                    "reported",
                    "edgefl_updates_reported",
                    "uploads that reached a decision (accepted + rejected)",
                ),
                ("accepted", "edgefl_updates_accepted", "updates accepted"),
                (
                    "late_after_drop",
                    "edgefl_late_after_drop",
                    "uploads from devices already counted as dropped (not counted again)",
                ),
            )
        }
        rejected = CounterMetricFamily(
            "edgefl_updates_rejected", "uploads refused, by reason", labels=["task", "reason"]
        )
        dropped = GaugeMetricFamily(
            "edgefl_dropouts",
            "selected devices that never reported, by reason",
            labels=["task", "reason"],
        )
        version = GaugeMetricFamily(
            "edgefl_model_version", "current model version", labels=["task"]
        )
        heldout = GaugeMetricFamily(
            "edgefl_heldout_metric",
            "the newest evaluated version's metric on the server's held-out set",
            labels=["task", "metric"],
        )
        for doc in self.tasks:
            task, funnel = _label(doc["task_id"]), doc["funnel"]
            for key, family in counters.items():
                family.add_metric([task], funnel.get(key, 0))
            for reason, count in funnel["rejected"].items():
                rejected.add_metric([task, _label(reason)], count)
            for reason, count in funnel["dropped"].items():
                dropped.add_metric([task, _label(reason)], count)
            version.add_metric([task], doc["version"])
            for name, value in self.heldout.get(doc["task_id"], {}).items():
                heldout.add_metric([task, _label(name)], value)
        yield from (*counters.values(), rejected, dropped, version, heldout)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.refused = _SafeLabels(
            Counter(
                "edgefl_requests_refused",
                "requests refused (a protocol error, 403, 409), by error code",
                ["code"],
                registry=r,
            )
        )
        self.uploads = Counter("edgefl_uploads", "update uploads received", registry=r)
        self.bytes_in = Counter("edgefl_bytes_in", "request body bytes", registry=r)
        self.bytes_out = Counter("edgefl_bytes_out", "model bytes served", registry=r)
        self.request_seconds = _SafeLabels(
            Histogram("edgefl_request_seconds", "request latency", ["route"], registry=r)
        )
        self._tasks = _TaskCollector()
        r.register(self._tasks)

    def observe(self, tasks: list[dict], heldout: dict[str, dict[int, dict]]) -> None:
        """Before a scrape: `tasks`, the descriptions of the tasks led here (as
        `AggregatorService.describe` gives them, not mutated); `heldout`, per task, the
        held-out metrics by version (the newest version's are exported)."""
        self._tasks.tasks = [t for t in tasks if "funnel" in t]  # a failed task has none
        self._tasks.heldout = {
            task: {k: float(v) for k, v in results[max(results)].items() if k in HELDOUT_GAUGES}
            for task, results in heldout.items()
            if results
        }
