"""One participation, orchestrated from the SDK's parts: eligibility -> check-in ->
model download -> local training (eligibility re-checked between batches) -> eligibility
again -> encode (error feedback) -> signed upload with retries. No maths, no bytes here.

Idempotency: each participation draws a random nonce, which names its update (the
server scopes keys to the device and the task). The nonce is kept in the example store
until the participation ends, so a retry after a lost response or a crash (the same
assignment: task, round, model version) reuses it and is counted once, while two
participations, even at one model version, are two updates. A `duplicate` answer is
success only for the device's own retry: the key went out before, in an earlier attempt
of this participation; any other duplicate is a failure ("unexpected_duplicate").

Buffers (BatchNorm running statistics): with the plan's `buffers: "local"` (FedBN) the
device trains from its own kept buffer values instead of the server's, sends zero deltas
for them, and keeps the values its training reached once the server has acknowledged the
participation (local_buffers.py; federated evaluation uses them too). With "average"
they travel like parameters and nothing is kept.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Protocol

import numpy as np

from .bundle import Bundle
from .clock import Clock
from .eligibility import (
    Context,
    DeviceState,
    ParticipationHistory,
    Policy,
    ReasonCounter,
    stop_check,
)
from .errors import SecureAggregationFailed
from .evaluator import Evaluator
from .example_store import ExampleStore
from .local_buffers import LocalBuffers
from .protocol import (
    COMPACT_ENCODING,
    DEFAULT_CODEC,
    ErrorFeedback,
    UpdateMeta,
    UpdatePipeline,
    decode_model,
    encode_update,
)
from .protocol.errors import ProtocolError
from .schedules import Constant
from .secure_aggregation import report_securely
from .trainer import ExampleSource, LocalTrainer, TrainingPlan, TrainingResult
from .transport import ServerRejected, Transport

HISTORY_KEY = "client.participation_history"
MODEL_BASE_KEY = "client.model_base."  # + task id: the last whole compact model download
RESIDUAL_KEY = "client.error_feedback.{task}"
PARTICIPATION_KEY = "client.participation.{task}"  # the open participation's nonce


class Pacer:
    """Hooks between the phases of a participation. A real app needs none (the phases
    take the time they take); the fleet simulator uses them to spend simulated time on
    download, compute and upload, and to make a device vanish (raise) mid-way."""

    async def downloaded(self, nbytes: int) -> None:
        pass

    async def trained(self, examples: int, steps: int) -> None:
        pass

    async def uploading(self, nbytes: int) -> None:
        pass


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    signing_key: bytes


class Participation(Enum):
    """How a participation ended, for an app to branch on (`ParticipationResult.outcome`;
    the result's `reason` says why, where there is a why)."""

    ACCEPTED = "accepted"  # the update was counted
    DUPLICATE = "duplicate"  # a retry of an update the server had counted already
    EVALUATED = "evaluated"  # asked to score a model instead; the metric sums were sent
    NOT_ELIGIBLE = "not_eligible"  # the device state or the local data said no (reason: codes)
    COME_BACK_LATER = "come_back_later"  # no work now; `retry_at` says when to ask again
    STOPPED = "stopped"  # started, then given up on the device (eligibility lost, no data...)
    REJECTED = "rejected"  # the server refused the update (reason: its error code)


_OUTCOMES = {
    "ineligible": Participation.NOT_ELIGIBLE,
    "later": Participation.COME_BACK_LATER,
    "evaluated": Participation.EVALUATED,
    "aborted": Participation.STOPPED,
    "rejected": Participation.REJECTED,
}


@dataclass
class ParticipationResult:
    """status: "ineligible" | "later" | "completed" | "evaluated" | "aborted" | "rejected"
    (as the simulator counts them); `outcome` is the same as a Participation."""

    status: str
    reason: str | None = None
    retry_at: float | None = None
    task_id: str | None = None
    model_version: int | None = None
    examples: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    server: dict = field(default_factory=dict)

    @property
    def outcome(self) -> Participation:
        if self.status == "completed":
            return (
                Participation.DUPLICATE
                if self.server.get("status") == "duplicate"
                else Participation.ACCEPTED
            )
        return _OUTCOMES[self.status]


class TrainingRunner(Protocol):
    """Where local training runs. `train` returns the run's result and its delta (local
    minus `params`); `examples(epoch)` streams that epoch's examples and `check()` is the
    stop check between batches."""

    async def train(
        self,
        params: dict[str, np.ndarray],
        examples: ExampleSource,
        plan: TrainingPlan,
        check: Callable[[], str | None],
    ) -> tuple[TrainingResult, dict[str, np.ndarray]]: ...


class LocalTraining:
    """Training in this process through onnxruntime: in a worker thread so the app's
    event loop stays responsive, or inline (the simulator, which shares one trainer and
    its ORT sessions between many devices)."""

    def __init__(
        self,
        bundle: Bundle,
        clock: Clock,
        *,
        in_thread: bool = True,
        trainer: LocalTrainer | None = None,
    ):
        self.bundle, self.clock, self.in_thread, self.trainer = bundle, clock, in_thread, trainer

    def _run(self, params, examples, plan, check):
        if self.trainer is None:
            self.trainer = LocalTrainer(self.bundle, params, clock=self.clock)
        else:
            self.trainer.set_parameters(params)
        result = self.trainer.train(examples, plan, check)
        return result, self.trainer.delta(params)

    async def train(self, params, examples, plan, check):
        if self.in_thread:
            return await asyncio.to_thread(self._run, params, examples, plan, check)
        return self._run(params, examples, plan, check)


class FederatedClient:
    def __init__(
        self,
        bundle: Bundle,
        transport: Transport,
        store: ExampleStore,
        identity: DeviceIdentity,
        *,
        policy: Policy,
        clock: Clock,
        rng: np.random.Generator,
        collection: str = "default",
        pipeline: UpdatePipeline = UpdatePipeline(DEFAULT_CODEC),
        pacer: Pacer | None = None,
        training: TrainingRunner | None = None,
        eval_collection: str | None = None,
        download_encoding: str | None = COMPACT_ENCODING,
    ):
        self.bundle, self.transport, self.store, self.identity = bundle, transport, store, identity
        self.policy, self.clock, self.rng = policy, clock, rng
        self.collection, self.pipeline = collection, pipeline
        # federated evaluation scores examples kept out of training (else the training ones)
        self.eval_collection = eval_collection or collection
        # models come int8 with per-chunk scales (protocol.model_encoding); None: float32
        self.download_encoding = download_encoding
        self.pacer = pacer or Pacer()
        self.training = training or LocalTraining(bundle, clock)
        self.reasons = ReasonCounter()
        self.buffers = LocalBuffers(store, bundle)
        self._evaluator: Evaluator | None = None

    def _context(self) -> Context:
        history = ParticipationHistory.from_bytes(self.store.get_state(HISTORY_KEY))
        return Context(self.clock.now(), self.store.count(self.collection), history)

    async def participate(
        self, device_state: Callable[[], DeviceState], task_id: str | None = None
    ) -> ParticipationResult:
        decision = self.policy.decide(device_state(), self._context())
        if not decision.allowed:
            self.reasons.record(decision)
            return ParticipationResult("ineligible", ",".join(decision.codes))
        answer = await self.transport.check_in(task_id, self.reasons.export())
        if "evaluation" in answer:
            return await self._evaluate(answer["evaluation"])
        if "assignment" not in answer:
            return ParticipationResult("later", retry_at=answer.get("retry_at"))
        a = answer["assignment"]
        result = ParticipationResult(
            "aborted", task_id=a["task_id"], model_version=a["model_version"]
        )
        if a["model_id"] != self.bundle.model_id:
            await self.transport.report_failure(a["task_id"], "bundle_mismatch")
            result.reason = "bundle_mismatch"
            return result
        params, result.bytes_down = await self._model(a["task_id"], a["model_version"])
        await self.pacer.downloaded(result.bytes_down)
        local = a["plan"].get("buffers") == "local"
        if local:
            params = self.buffers.apply(a["task_id"], params)
        else:
            self.buffers.forget(a["task_id"])
        check = stop_check(self.policy, device_state, self._context, self.reasons)
        training, delta = await self._train(params, a["plan"], check)
        await self.pacer.trained(training.examples, training.steps)
        if not training.uploadable:
            reason = training.stop_reason or "no_examples"
            await self.transport.report_failure(a["task_id"], reason)
            result.reason = reason
            return result
        reason = check()  # eligibility once more, before spending the uplink
        if reason is not None:
            await self.transport.report_failure(a["task_id"], reason)
            result.reason = reason
            return result
        result.examples = training.examples
        kept = None
        if local:  # the buffers' values stay here; the server gets zeros for them
            kept, delta = self.buffers.split(params, delta)
        if a.get("secagg"):
            return await self._report_securely(a, delta, training, result, kept)
        return await self._upload(a, delta, training, result, kept)

    def _completed(self, task_id: str, kept: dict | None) -> None:
        """The server acknowledged the participation: the device's state moves on."""
        if kept is not None:
            self.buffers.save(task_id, kept)
        history = ParticipationHistory.from_bytes(self.store.get_state(HISTORY_KEY))
        self.store.put_state(HISTORY_KEY, history.record(self.clock.now()).to_bytes())

    async def _report_securely(
        self, a: dict, delta, training, result: ParticipationResult, kept: dict | None
    ):
        """Secure aggregation: the masked [w * delta, w] instead of an update."""
        if not _finite(delta | (kept or {})):
            await self.transport.report_failure(a["task_id"], "diverged")
            result.reason = "diverged"
            return result
        sent = {"bytes": 0}

        async def pace(nbytes: int) -> None:
            sent["bytes"] = nbytes
            await self.pacer.uploading(nbytes)

        try:
            result.server = await report_securely(
                self.transport,
                a["task_id"],
                a["round_id"],
                delta,
                [spec.name for spec in self.bundle.parameter_specs],
                training.examples,
                a["secagg"],
                getattr(self.transport, "sleep", asyncio.sleep),
                pace,
            )
        except SecureAggregationFailed as e:
            result.status, result.reason = "rejected", str(e)[:64]
            return result
        self._completed(a["task_id"], kept)
        result.status, result.bytes_up = "completed", sent["bytes"]
        return result

    async def _evaluate(self, e: dict) -> ParticipationResult:
        """Federated evaluation: metric sums of the given model on the local examples."""
        result = ParticipationResult(
            "evaluated", task_id=e["task_id"], model_version=e["model_version"]
        )
        if e["model_id"] != self.bundle.model_id:
            result.status, result.reason = "aborted", "bundle_mismatch"
            return result
        if not self.store.count(self.eval_collection):  # nothing held out: nothing to score
            result.status, result.reason = "aborted", "no_eval_examples"
            return result
        params, result.bytes_down = await self._model(e["task_id"], e["model_version"])
        params = self.buffers.apply(e["task_id"], params)  # kept only for "local" tasks
        if self._evaluator is None:
            self._evaluator = Evaluator(self.bundle)
        metrics = self._evaluator.evaluate(params, self.store.iter_examples(self.eval_collection))
        sums = {
            k: float(metrics[k])
            for k in ("loss_sum", "correct", "correct_top3", "count")
            if k in metrics
        }
        result.examples = int(sums.get("count", 0))
        result.server = await self.transport.submit_evaluation(
            e["task_id"], e["model_version"], sums
        )
        return result

    async def _model(self, task_id: str, version: int) -> tuple[dict[str, np.ndarray], int]:
        """The parameters to train from, as the device reconstructs them from the download
        (its delta is taken from these, so the server's aggregation is the same)."""
        if self.download_encoding is None:
            data = await self.transport.download_model(task_id, version)
            return decode_model(data, self.bundle.parameter_specs)[1], len(data)
        base = self._model_base(task_id)
        if base is not None and base[0] == version:
            return base[1], 0  # exactly what a whole download would give
        data = await self.transport.download_model(
            task_id, version, self.download_encoding, None if base is None else base[0]
        )
        header, params = decode_model(data, self.bundle.parameter_specs, base=base)
        if "base_version" not in header:  # a whole download: the base of later differences
            self.store.put_state(MODEL_BASE_KEY + task_id, data)
        return params, len(data)

    def _model_base(self, task_id: str) -> tuple[int, dict[str, np.ndarray]] | None:
        """(version, parameters) of the last whole compact download kept for the task."""
        data = self.store.get_state(MODEL_BASE_KEY + task_id)
        if data is None:
            return None
        try:
            header, params = decode_model(data, self.bundle.parameter_specs)
        except ProtocolError:  # another bundle's model, or damaged on the device
            return None
        if (
            header["model_id"] != self.bundle.model_id
            or header.get("encoding") != self.download_encoding
        ):
            return None
        return header["model_version"], params

    async def _train(self, params, plan: dict, check):
        seed = int(self.rng.integers(2**31))
        plan = TrainingPlan(
            epochs=int(plan.get("epochs", 1)),
            batch_size=int(plan.get("batch_size", 16)),
            max_steps=plan.get("max_steps"),
            schedule=Constant(float(plan.get("lr", 0.1))),
            seed=seed,
        )
        rng = np.random.default_rng(seed)
        return await self.training.train(
            params,
            lambda epoch: self.store.iter_examples(self.collection, shuffle_rng=rng),
            plan,
            check,
        )

    def _participation(self, a: dict) -> dict:
        """The open participation of this assignment, as kept in the example store (a
        retry after a crash continues it), or a new one with a fresh nonce."""
        raw = self.store.get_state(PARTICIPATION_KEY.format(task=a["task_id"]))
        try:
            kept = json.loads(raw) if raw else None
        except ValueError:
            kept = None
        same = {"round_id": a["round_id"], "model_version": a["model_version"]}
        if (
            isinstance(kept, dict)
            and all(kept.get(k) == v for k, v in same.items())
            and isinstance(kept.get("nonce"), str)
            and isinstance(kept.get("uploads"), int)
        ):
            return kept
        # from the OS's generator, not the injected rng: a nonce must differ after a
        # restart that re-seeds the rng, or a new update would be taken for a retry
        return same | {"nonce": secrets.token_hex(16), "uploads": 0}

    async def _upload(
        self, a: dict, delta, training, result: ParticipationResult, kept: dict | None
    ):
        residual_key = RESIDUAL_KEY.format(task=a["task_id"])
        feedback = ErrorFeedback.from_bytes(self.store.get_state(residual_key))
        if not _finite(delta | (kept or {})):
            await self.transport.report_failure(a["task_id"], "diverged")
            result.reason = "diverged"  # local training blew up: nothing worth sending
            return result
        participation = self._participation(a)
        key = participation["nonce"]
        metrics = {
            k: float(v)
            for k, v in training.metrics.items()
            if k in ("mean_loss", "accuracy") and np.isfinite(v)
        }
        meta = UpdateMeta(
            a["task_id"],
            self.bundle.model_id,
            a["model_version"],
            self.identity.device_id,
            key,
            training.examples,
            metrics,
        )
        data = encode_update(
            delta,
            self.bundle.parameter_specs,
            meta,
            self.pipeline,
            signing_key=self.identity.signing_key,
            rng=self.rng,
            feedback=feedback,
        )
        await self.pacer.uploading(len(data))
        state_key = PARTICIPATION_KEY.format(task=a["task_id"])
        sent_before = participation["uploads"] > 0  # an earlier attempt may have arrived
        participation["uploads"] += 1
        self.store.put_state(state_key, json.dumps(participation).encode())
        try:
            result.server = await self.transport.upload(a["task_id"], data)
        except ServerRejected as e:
            self.store.delete_state(state_key)  # the participation is over
            result.status, result.reason = "rejected", e.code
            return result
        self.store.delete_state(state_key)
        retried = getattr(self.transport, "last_attempts", 1) > 1
        if result.server.get("status") == "duplicate" and not (sent_before or retried):
            # the key was never sent before: the server holds some other update under it
            result.status, result.reason = "rejected", "unexpected_duplicate"
            return result
        # only an acknowledged upload moves the residual, the kept buffers and the
        # participation history on
        self.store.put_state(residual_key, feedback.to_bytes())
        self._completed(a["task_id"], kept)
        result.status, result.bytes_up = "completed", len(data)
        return result


def _finite(tensors: dict[str, np.ndarray]) -> bool:
    return all(np.all(np.isfinite(v)) for v in tensors.values())
