"""Prometheus metrics of the aggregator (one registry per app, so tests stay isolated).

Every label value goes through `vocabulary.safe_text` on its way in: labels come from
task ids, reasons and codes, some of which a device or an old data dir supplied, and one
value Prometheus's text format cannot encode (a lone surrogate) would make every later
scrape fail. /metrics shows counts only: no task settings, no DP parameters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .vocabulary import safe_text

__all__ = ["Metrics"]

_LABEL_CHARS = 128


class _SafeLabels:
    """A labelled metric whose label values are made safe before use."""

    def __init__(self, metric):
        self._metric = metric

    def labels(self, *values):
        return self._metric.labels(*(safe_text(v, _LABEL_CHARS) for v in values))


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.check_ins = _SafeLabels(
            Counter("edgefl_check_ins", "device check-ins", ["task"], registry=r)
        )
        self.selections = _SafeLabels(
            Counter("edgefl_selections", "assignments handed out", ["task"], registry=r)
        )
        self.uploads = Counter("edgefl_uploads", "update uploads received", registry=r)
        self.accepted = _SafeLabels(
            Counter("edgefl_updates_accepted", "updates accepted", ["task"], registry=r)
        )
        self.rejected = _SafeLabels(
            Counter("edgefl_updates_rejected", "updates rejected", ["reason"], registry=r)
        )
        self.bytes_in = Counter("edgefl_bytes_in", "request body bytes", registry=r)
        self.bytes_out = Counter("edgefl_bytes_out", "model bytes served", registry=r)
        self.model_version = _SafeLabels(
            Gauge("edgefl_model_version", "current model version", ["task"], registry=r)
        )
        self.dropouts = _SafeLabels(
            Gauge("edgefl_dropouts", "devices dropped, by reason", ["task", "reason"], registry=r)
        )
        self.heldout = _SafeLabels(
            Gauge(
                "edgefl_heldout_metric",
                "the newest evaluated version's metric on the server's held-out set",
                ["task", "metric"],
                registry=r,
            )
        )
        self.request_seconds = _SafeLabels(
            Histogram("edgefl_request_seconds", "request latency", ["route"], registry=r)
        )
