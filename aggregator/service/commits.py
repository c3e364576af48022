"""Turning a round's or a buffer's accepted updates into a model version: the server
optimizer step, the finite check, DP accounting, and the one store transaction that
publishes the version and moves its updates to the idempotency ledger."""

from __future__ import annotations

import math

import numpy as np

from edge_sdk.protocol import encode_parameters

from ..commit_log import CommitLog
from ..numerics import all_finite, dense_delta
from ..privacy import PrivacyAccountant
from ..server_optimizers import build_server_optimizer
from ..store import Store
from .tasks import LedTask


class Commits:
    """Every coordinator change ends here: pending updates of an abandoned round are
    dropped, a ready round or buffer becomes a version, and the coordinator's state and
    events are stored."""

    def __init__(self, store: Store, clock):
        self.store, self.clock = store, clock
        self.log = CommitLog()  # a line per committed version in the serve log

    def after_change(self, task: LedTask) -> None:
        events = task.coordinator.events
        if any(e["event"] == "round_abandoned" for e in events):
            self.store.drop_pending(task.record.task_id)
        if not self.maybe_commit(task):
            # taken at the group's commit (a grouping store), not at every call
            self.store.save_snapshot(task.record.task_id, task.coordinator.snapshot)
        self.flush_events(task)

    def maybe_commit(self, task: LedTask) -> bool:
        """Commit a version when the round/buffer is ready. An aggregate, model or server
        optimizer state that is not finite is never stored: the version is refused (an
        event says why), the previous model stays, and the round/buffer starts over
        without the updates that made it."""
        c = task.coordinator
        if not c.ready_to_commit():
            return False
        now = self.clock.now()
        task_id = task.record.task_id
        metrics = mean_metrics(self.store.pending_metrics(task_id))
        mean, measurements = c.close_aggregate()
        optimizer = build_server_optimizer(
            task.settings.server_optimizer, lr=task.settings.server_lr_at(c.version)
        )
        params, state = optimizer.step(task.parameters, mean, task.optimizer_state)
        reason = _not_finite(mean, params, state)
        if reason is not None:
            c.refuse_version(reason, now)
            self.log.refused(task_id, c.version + 1, reason)
            # the next round's state first: after a crash in between, the refused
            # round's updates are from an abandoned round and are dropped at start-up
            self.store.save_snapshot(task_id, c.snapshot())
            self.store.drop_pending(task_id)
            self.flush_events(task)
            return True
        c.publish(now)
        model = encode_parameters(params, task.record.specs, task.record.model_id, c.version)
        metrics |= {"measurements": _finite_json(measurements)} | self._privacy(task)
        self.store.commit_version(task_id, c.version, model, state, c.snapshot(), metrics, now)
        self.log.committed(task_id, c.version, c.funnel.to_json(), metrics, now)
        task.parameters, task.optimizer_state = params, state
        self.flush_events(task)
        return True

    def _privacy(self, task: LedTask) -> dict:
        """(epsilon, delta) spent after this version; pause the task at its budget."""
        dp = task.settings.dp
        if dp is None:
            return {}
        delta = dp.target_delta
        epsilon = PrivacyAccountant(
            dp.noise_multiplier, task.settings.sampling_rate(), delta
        ).epsilon(task.coordinator.version)
        budget = dp.epsilon_budget
        if budget is not None and epsilon >= budget:
            task.coordinator.paused = True
            task.coordinator.events.append(
                {
                    "event": "privacy_budget_reached",
                    "epsilon": json_number(epsilon),
                    "round": task.coordinator.round_id,
                    "at": self.clock.now(),
                }
            )
        return {"epsilon": json_number(epsilon), "delta": delta}

    def flush_events(self, task: LedTask) -> None:
        self.store.add_events(task.record.task_id, task.coordinator.events)
        task.coordinator.events = []


def mean_metrics(rows: list[dict]) -> dict:
    """Each metric's mean over the updates that report it, in float64; a mean that is not
    finite is left out (the values were checked at the door, but a JSON document must
    never hold Infinity)."""
    out = {}
    for key in sorted({k for r in rows for k in r}):
        values = np.array([_float(r[key]) for r in rows if key in r], np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = float(np.mean(values))
        if math.isfinite(mean):
            out[key] = mean
    return out


def _float(value) -> float:
    """A stored metric value as a float (NaN for what is none: rows from before the
    door checked them must not stop a commit or a start-up)."""
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return math.nan


def _not_finite(mean, params: dict, state: dict) -> str | None:
    """Why a version must not be committed (None: it may)."""
    if not all_finite(dense_delta(mean)):
        return "aggregate_not_finite"
    if not all_finite(params):
        return "model_not_finite"
    if not all_finite(state):
        return "optimizer_state_not_finite"
    return None


def json_number(x: float) -> float | None:
    """x, or None where JSON has no number for it (NaN, Infinity)."""
    return x if math.isfinite(x) else None


def _finite_json(doc):
    """doc with every non-finite float replaced by None (stage measurements)."""
    if isinstance(doc, dict):
        return {k: _finite_json(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_finite_json(v) for v in doc]
    if isinstance(doc, float):
        return json_number(doc)
    return doc
