"""Task administration: create a task (everything checked before anything is stored),
pause and resume it, and describe it, live where it runs or as last stored elsewhere,
with its history of versions, events and evaluations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edge_sdk.protocol import encode_parameters

from ..config import TaskSettings
from ..coordinator import Funnel
from ..errors import BadRequest, NotFound
from ..store import Store, TaskRecord
from .tasks import TaskTable
from .text import printable

TASK_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A task id: 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit (it names
files and URL paths, so never '.', '/' or anything a path could interpret)."""


class Administration:
    def __init__(self, store: Store, clock, table: TaskTable):
        self.store, self.clock, self.table = store, clock, table

    def create_task(self, task_id: str, bundle_dir: str, settings: TaskSettings | dict) -> dict:
        """Everything is checked before the store is touched (nothing of a refused request
        is written): the task id, the settings (JSON is checked with its paths), the
        bundle and its initial parameters against its manifest. BadRequest names the
        field."""
        if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
            raise BadRequest(
                f"task_id must be 1 to 64 of a-z, 0-9, '_', '-', starting with a "
                f"letter or digit, got {task_id!r}",
                field="task_id",
            )
        if isinstance(settings, dict):
            settings = TaskSettings.from_json(settings)  # BadField: 400 naming the field
        elif not isinstance(settings, TaskSettings):
            raise BadRequest("settings must be an object", field="settings")
        if task_id in self.table.records or self.store.has_task(task_id):
            raise BadRequest(f"task {task_id!r} exists", field="task_id")
        if not isinstance(bundle_dir, str) or not bundle_dir:
            raise BadRequest("bundle_dir must name a bundle directory", field="bundle_dir")
        try:
            model_id, specs, params = read_bundle(Path(bundle_dir))
            model = encode_parameters(params, specs, model_id, 0)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BadRequest(
                f"cannot use the bundle at {bundle_dir}: {e}", field="bundle_dir"
            ) from None
        record = TaskRecord(task_id, settings.to_json(), bundle_dir, model_id, specs)
        self.store.add_task(record, model, self.clock.now())
        self.table.records[task_id] = record
        if self.table.lead(record):  # else another process took it first and runs it
            task = self.table.tasks[task_id]
            with self.table.owning(task):
                self.store.save_snapshot(task_id, task.coordinator.snapshot())
        return self.describe(task_id)

    def set_paused(self, task_id: str, paused: bool) -> dict:
        task = self.table.task(task_id)
        with self.table.owning(task):
            task.coordinator.paused = paused
            self.store.save_snapshot(task_id, task.coordinator.snapshot())
        return self.describe(task_id)

    def describe(self, task_id: str) -> dict:
        """The live coordinator's state where it runs; elsewhere, as last stored. `state`
        is "active", "paused" or "failed" (then `error` says why it does not load)."""
        task = self.table.tasks.get(task_id)
        if task is None:
            return self._describe_stored(self.table.record(task_id))
        c = task.coordinator
        return {
            "task_id": task_id,
            "state": "paused" if c.paused else "active",
            "mode": task.settings.mode,
            "model_id": task.record.model_id,
            "version": c.version,
            "round": c.round_id,
            "phase": c.phase,
            "paused": c.paused,
            "in_flight": len(c.assigned),
            "accepted": c.accepted,
            "funnel": c.funnel.to_json(),
            "settings": task.settings.to_json(),
            "led_here": True,
        }

    def _describe_stored(self, record: TaskRecord) -> dict:
        error = self.table.failed.get(record.task_id) or self.store.failures().get(record.task_id)
        try:
            settings = TaskSettings.from_json(record.settings)
            snap = self.store.snapshot(record.task_id) or {}
        except ValueError as e:  # BadField included
            error = error or printable(f"stored settings: {e}")
        if error is not None:
            return {
                "task_id": record.task_id,
                "state": "failed",
                "error": error,
                "model_id": record.model_id,
                "led_here": record.task_id in self.table.failed,
            }
        round_id = snap.get("round_id", 1)
        accepted = sum(u.round_id == round_id for u in self.store.pending_updates(record.task_id))
        return {
            "task_id": record.task_id,
            "state": "paused" if snap.get("paused", False) else "active",
            "mode": settings.mode,
            "model_id": record.model_id,
            "version": snap.get("version", 0),
            "round": round_id,
            "phase": snap.get("phase", "selecting"),
            "paused": snap.get("paused", False),
            "in_flight": len(snap.get("assigned", {})),
            "accepted": accepted,
            "funnel": snap.get("funnel") or Funnel().to_json(),
            "settings": settings.to_json(),
            "led_here": False,
        }

    def history(self, task_id: str) -> dict:
        self.table.record(task_id)
        evaluations = []
        for version, sums in sorted(self.store.evaluation_totals(task_id).items()):
            count = sums.get("count", 0.0)
            rates = {
                f"{k}_rate": sums[k] / count
                for k in ("correct", "correct_top3")
                if k in sums and count
            }
            evaluations.append({"version": version, **sums, **rates})
        heldout = [{"version": v, **m} for v, m in self.store.heldout_results(task_id).items()]
        return {
            "versions": self.store.model_history(task_id),
            "events": self.store.events(task_id),
            "federated_evaluation": evaluations,
            "heldout_evaluation": heldout,
        }

    def record_heldout(self, task_id: str, version: int, doc: dict) -> dict:
        """One model version's metrics on a held-out set, from the evaluator that runs
        beside the server (server_eval/): the aggregator itself never runs a model."""
        self.table.record(task_id)
        if self.store.model_path(task_id, version) is None:
            raise NotFound(f"task {task_id} has no model version {version}")
        metrics = doc.get("metrics") if isinstance(doc, dict) else None
        if (
            not isinstance(metrics, dict)
            or not 0 < len(metrics) <= 32
            or not all(
                isinstance(k, str)
                and len(k) <= 64
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
                and np.isfinite(v)
                for k, v in metrics.items()
            )
        ):
            raise BadRequest("metrics must map 1 to 32 names (<= 64 characters) to finite numbers")
        recorded = self.store.add_heldout(task_id, version, metrics, self.clock.now())
        return {"status": "recorded" if recorded else "duplicate"}


def read_bundle(bundle: Path) -> tuple[str, list[dict], dict[str, np.ndarray]]:
    """(model_id, parameter specs, initial parameters) of a training bundle, checked:
    the parameters file holds exactly the manifest's tensors, finite, of their shapes.
    The specs of the manifest's buffers say `"buffer": true`."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("model_id"), str)
        or not isinstance(manifest.get("parameters"), list)
        or not manifest["parameters"]
    ):
        raise ValueError("manifest.json needs a string model_id and a list of parameters")
    specs = []
    for p in manifest["parameters"]:
        if (
            not isinstance(p, dict)
            or not isinstance(p.get("name"), str)
            or not isinstance(p.get("shape"), list)
            or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31
                for d in p["shape"]
            )
        ):
            raise ValueError(f"manifest parameter {p!r} needs a name and a shape of integers")
        specs.append({"name": p["name"], "shape": p["shape"]})
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("manifest parameters repeat a name")
    buffers = {
        b.get("name") if isinstance(b, dict) else None for b in manifest.get("buffers") or []
    }
    if not buffers <= set(names):
        raise ValueError("manifest buffers must be among its parameters")
    for s in specs:
        if s["name"] in buffers:
            s["buffer"] = True
    parameters_file = manifest.get("parameters_file", "parameters.npz")
    if not isinstance(parameters_file, str) or Path(parameters_file).name != parameters_file:
        raise ValueError("parameters_file must name a file in the bundle directory")
    with np.load(bundle / parameters_file, allow_pickle=False) as npz:
        params = {k: npz[k] for k in npz.files}
    if set(params) != set(names):
        raise ValueError(
            f"{parameters_file} holds {sorted(params)}, the manifest names {sorted(names)}"
        )
    for s in specs:
        value = params[s["name"]]
        if value.shape != tuple(s["shape"]) or not np.issubdtype(value.dtype, np.floating):
            raise ValueError(
                f"parameter {s['name']!r} is {value.dtype} {value.shape}, the "
                f"manifest says float {tuple(s['shape'])}"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"parameter {s['name']!r} holds NaN or Inf")
    return manifest["model_id"], specs, params
