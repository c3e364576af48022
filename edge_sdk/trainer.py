"""Local training of a bundle on the device's examples, through onnxruntime only.

`LocalTrainer.train` runs epochs or a step budget over a stream of examples, re-asks a
stop check between batches (eligibility lost, app backgrounded, cancelled), respects a
wall-clock budget, and checkpoints so that an interrupted run resumes where it stopped.
It never returns a half-trained model as complete: a run that stops early reports why,
and its parameters are not meant to be uploaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np

from .batching import iter_batches
from .bundle import Bundle, check_parameters
from .clock import Clock, SystemClock
from .errors import BundleError
from .evaluator import summarize
from .protocol.arrays import decode_arrays, encode_arrays
from .runtime import RuntimeOptions, StatefulStepRunner
from .schedules import Constant, Schedule

ExampleSource = Callable[[int], Iterable[dict[str, np.ndarray]]]
"""Called with an epoch number; returns that epoch's examples (a fresh stream each time)."""


class CheckpointStore(Protocol):
    """Where checkpoints live: the example store's state table fits."""

    def put_state(self, key: str, value: bytes) -> None: ...
    def get_state(self, key: str) -> bytes | None: ...
    def delete_state(self, key: str) -> None: ...


@dataclass(frozen=True)
class TrainingPlan:
    """What one participation trains: epochs over the local data, capped by max_steps
    and a wall-clock budget. Validated when built."""

    epochs: int = 1
    batch_size: int = 16
    max_steps: int | None = None
    schedule: Schedule = field(default_factory=lambda: Constant(0.1))
    time_budget_s: float | None = None
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0 = no checkpoints

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be > 0 or None, got {self.time_budget_s}")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0 (0 disables checkpoints)")


@dataclass
class TrainingResult:
    """status: "completed" (the plan ran to its end or its step cap), "budget" (the
    wall-clock budget ended it; the model is usable), or "stopped" (the stop check
    ended it; `stop_reason` says why — do not upload)."""

    status: str
    steps: int
    examples: int
    metrics: dict[str, float]
    stop_reason: str | None = None

    @property
    def uploadable(self) -> bool:
        return self.status in ("completed", "budget") and self.examples > 0


class LocalTrainer:
    """Trains `bundle` from given parameters; parameters()/set_parameters() are numpy dicts."""

    def __init__(
        self,
        bundle: Bundle,
        parameters: dict[str, np.ndarray] | None = None,
        runtime: RuntimeOptions = RuntimeOptions(),
        clock: Clock | None = None,
    ):
        self.bundle, self.runtime = bundle, runtime
        self.clock = clock or SystemClock()
        self._runner: StatefulStepRunner | None = None
        self.set_parameters(parameters if parameters is not None else bundle.initial_parameters())

    # -- parameters -----------------------------------------------------------------------
    def set_parameters(self, parameters: dict[str, np.ndarray]) -> None:
        """Start from `parameters` (not mutated) with fresh optimizer state."""
        check_parameters(self.bundle.parameter_specs, parameters)
        state = {
            s["name"]: np.zeros_like(parameters[s["like"]])
            for s in self.bundle.optimizer_state_specs
        }
        self._start({k: np.array(v, np.float32) for k, v in parameters.items()} | state, step=0)

    def parameters(self) -> dict[str, np.ndarray]:
        carried = self._runner.carried()
        return {s.name: carried[s.name] for s in self.bundle.parameter_specs}

    def delta(self, global_parameters: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Local minus global, per parameter (float32 arrays of the parameters' shapes)."""
        local = self.parameters()
        return {name: local[name] - global_parameters[name] for name in local}

    def _start(self, carried: dict[str, np.ndarray], step: int) -> None:
        if self._runner is None:  # building the session is the expensive part: do it once
            self._runner = StatefulStepRunner(
                self.bundle.graph_path("train_step"), carried, self.runtime
            )
        else:
            self._runner.reset(carried)
        self._step = step

    # -- training -----------------------------------------------------------------------
    def train(
        self,
        examples: ExampleSource,
        plan: TrainingPlan,
        stop_check: Callable[[], str | None] = lambda: None,
        checkpoints: CheckpointStore | None = None,
        checkpoint_key: str = "trainer.checkpoint",
    ) -> TrainingResult:
        """Run `plan`. Between batches `stop_check()` returning a reason stops the run
        (a checkpoint is kept if enabled, so a later call resumes)."""
        rng = np.random.default_rng(plan.seed)
        start_epoch, skip, totals = 0, 0, _Totals()
        if checkpoints is not None and plan.checkpoint_every:
            resumed = self._resume(checkpoints, checkpoint_key, plan)
            if resumed is not None:
                start_epoch, skip, totals = resumed
        started = self.clock.now()
        for epoch in range(start_epoch, plan.epochs):
            position = 0
            for batch, n in iter_batches(self.bundle, examples(epoch), plan.batch_size):
                position += 1
                if position <= skip:
                    continue  # consumed before the interruption
                reason = stop_check()
                if reason is not None:
                    return totals.result("stopped", reason)
                if (
                    plan.time_budget_s is not None
                    and self.clock.now() - started >= plan.time_budget_s
                ):
                    return totals.result("budget")
                feeds = dict(batch)
                feeds["lr"] = np.array(plan.schedule(self._step), np.float32)
                feeds["step"] = np.array(self._step + 1, np.int64)
                if self.bundle.uses_seed:
                    feeds["seed"] = np.array(rng.integers(0, 2**31 - 1), np.int64)
                scalars = self._runner.step(feeds)
                self._step += 1
                totals.add(scalars, n)
                if (
                    plan.checkpoint_every
                    and checkpoints is not None
                    and totals.steps % plan.checkpoint_every == 0
                ):
                    self._save(checkpoints, checkpoint_key, plan, epoch, position, totals)
                if plan.max_steps is not None and totals.steps >= plan.max_steps:
                    return self._finish(checkpoints, checkpoint_key, totals)
            skip = 0
        return self._finish(checkpoints, checkpoint_key, totals)

    def _finish(self, checkpoints, key, totals: _Totals) -> TrainingResult:
        if checkpoints is not None:
            checkpoints.delete_state(key)
        return totals.result("completed")

    # -- checkpoints ----------------------------------------------------------------------
    def _save(
        self,
        store: CheckpointStore,
        key: str,
        plan: TrainingPlan,
        epoch: int,
        position: int,
        totals: _Totals,
    ) -> None:
        meta = {
            "model_id": self.bundle.model_id,
            "plan": repr(plan),
            "epoch": epoch,
            "position": position,
            "step": self._step,
            "totals": totals.__dict__,
        }
        store.put_state(
            key,
            encode_arrays(
                {"__meta__": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
                | self._runner.carried()
            ),
        )

    def _resume(self, store: CheckpointStore, key: str, plan: TrainingPlan):
        blob = store.get_state(key)
        if blob is None:
            return None
        try:
            arrays = decode_arrays(blob)
            meta = json.loads(arrays.pop("__meta__").tobytes())
        except (ValueError, KeyError) as e:  # ProtocolError is a ValueError
            store.delete_state(key)  # unreadable: discard cleanly and start over
            raise BundleError(f"checkpoint {key!r} was unreadable and was discarded: {e}") from None
        if meta["model_id"] != self.bundle.model_id or meta["plan"] != repr(plan):
            store.delete_state(key)  # a checkpoint of another task or plan is stale
            return None
        self._start(arrays, step=meta["step"])
        return meta["epoch"], meta["position"], _Totals(**meta["totals"])


@dataclass
class _Totals:
    steps: int = 0
    examples: int = 0
    sums: dict = field(default_factory=dict)

    def add(self, scalars: dict[str, float], n: int) -> None:
        self.steps += 1
        self.examples += n
        for k, v in scalars.items():
            if k != "loss":
                self.sums[k] = self.sums.get(k, 0.0) + v

    def result(self, status: str, reason: str | None = None) -> TrainingResult:
        return TrainingResult(status, self.steps, self.examples, summarize(self.sums), reason)
