"""Prometheus metrics of the aggregator (one registry per app, so tests stay isolated)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.check_ins = Counter("edgefl_check_ins", "device check-ins", ["task"], registry=r)
        self.selections = Counter("edgefl_selections", "assignments handed out", ["task"], registry=r)
        self.uploads = Counter("edgefl_uploads", "update uploads received", registry=r)
        self.accepted = Counter("edgefl_updates_accepted", "updates accepted", ["task"], registry=r)
        self.rejected = Counter("edgefl_updates_rejected", "updates rejected", ["reason"], registry=r)
        self.bytes_in = Counter("edgefl_bytes_in", "request body bytes", registry=r)
        self.bytes_out = Counter("edgefl_bytes_out", "model bytes served", registry=r)
        self.model_version = Gauge("edgefl_model_version", "current model version", ["task"], registry=r)
        self.dropouts = Gauge("edgefl_dropouts", "devices dropped, by reason", ["task", "reason"], registry=r)
        self.heldout = Gauge("edgefl_heldout_metric", "the newest evaluated version's metric "
                             "on the server's held-out set", ["task", "metric"], registry=r)
        self.request_seconds = Histogram("edgefl_request_seconds", "request latency", ["route"], registry=r)
