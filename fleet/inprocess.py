"""An in-process transport: the edge_sdk client's calls go straight to the aggregator
service (the same service the HTTP app wraps), with the same bytes and the same errors,
minus the sockets. For large simulations; HTTP on loopback is the default."""
from __future__ import annotations

from aggregator.coordinator import Assignment, EvalAssignment
from aggregator.errors import AggregatorError, code_of, status_of
from aggregator.service import AggregatorService
from edge_sdk.protocol import ProtocolError
from edge_sdk.transport import ServerRejected


class InProcessTransport:
    def __init__(self, service: AggregatorService):
        self.service = service
        self.device = None
        self.device_id: str | None = None

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except (AggregatorError, ProtocolError) as e:
            raise ServerRejected(status_of(e), code_of(e), str(e), getattr(e, "details", {})) from None

    async def enroll(self, population: str, secret: str, public_key: bytes) -> dict:
        doc = self._call(self.service.enroll, population, secret, public_key)
        self.device = self.service.authenticate(doc["token"])
        self.device_id = doc["device_id"]
        return doc

    async def check_in(self, task_id=None, eligibility=None, sdk_version="0.1") -> dict:
        result = self._call(self.service.check_in, self.device, task_id)
        if isinstance(result, Assignment):
            task = self.service.tasks[result.task_id]
            return {"assignment": {**result.__dict__, "model_id": task.record.model_id,
                                   "plan": task.settings.plan.to_json()}}
        if isinstance(result, EvalAssignment):
            task = self.service.tasks[result.task_id]
            return {"evaluation": {**result.__dict__, "model_id": task.record.model_id}}
        return {"retry_at": result.retry_at}

    async def download_model(self, task_id: str, version: int) -> bytes:
        _, path = self._call(self.service.model_file, task_id, version)
        return path.read_bytes()

    async def upload(self, task_id: str, data: bytes) -> dict:
        return self._call(self.service.submit_update, self.device, task_id, data)

    async def submit_evaluation(self, task_id: str, model_version: int, sums: dict) -> dict:
        return self._call(self.service.submit_evaluation, self.device, task_id,
                          {"model_version": model_version, "sums": sums})

    async def report_failure(self, task_id: str, reason: str) -> None:
        self._call(self.service.report_failure, self.device, task_id, reason)
