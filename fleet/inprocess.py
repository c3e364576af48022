"""An in-process transport: the edge_sdk client's calls go straight to the aggregator
service (the same service the HTTP app wraps), with the same typed messages, the same
bytes and the same errors, minus the sockets. For large simulations; HTTP on loopback is
the default."""

from __future__ import annotations

import json

from aggregator.app_state import check_in_reply
from aggregator.errors import AggregatorError, code_of, status_of
from aggregator.service import AggregatorService
from edge_sdk.protocol import ProtocolError, messages, parse_json
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
            raise ServerRejected(
                status_of(e), code_of(e), str(e), getattr(e, "details", {})
            ) from None

    def _sent(self, message: messages.Message) -> messages.Message:
        """The message as the server reads it off the wire: as JSON text, within the same
        limits (a request the HTTP path would refuse is refused here too)."""
        text = json.dumps(message.to_json())
        return self._call(lambda: type(message).from_json(parse_json(text)))

    @staticmethod
    def _answer(kind: type[messages.Message], doc: dict) -> dict:
        kind.from_json(doc)
        return doc

    async def enroll(self, population: str, secret: str, public_key: bytes) -> dict:
        msg = self._sent(messages.EnrollRequest(population, secret, public_key))
        doc = self._answer(
            messages.EnrollReply,
            self._call(self.service.enroll, msg.population, msg.secret, msg.public_key),
        )
        self.device = self.service.authenticate(doc["token"])
        self.device_id = doc["device_id"]
        return doc

    async def check_in(self, task_id=None, eligibility=None, sdk_version="0.1") -> dict:
        msg = self._sent(messages.CheckInRequest(task_id, dict(eligibility or {}), sdk_version))
        result = self._call(self.service.check_in, self.device, msg.task_id)
        return check_in_reply(self.service, result).to_json()

    async def download_model(
        self, task_id: str, version: int, encoding: str = "f32", base: int | None = None
    ) -> bytes:
        _, path = self._call(self.service.model_file, task_id, version, False, encoding, base)
        return path.read_bytes()

    async def upload(self, task_id: str, data: bytes) -> dict:
        return self._answer(
            messages.UploadAck, self._call(self.service.submit_update, self.device, task_id, data)
        )

    async def submit_evaluation(self, task_id: str, model_version: int, sums: dict) -> dict:
        msg = self._sent(messages.EvaluationReport(model_version, messages.MetricSums(**sums)))
        return self._answer(
            messages.EvaluationAck,
            self._call(self.service.submit_evaluation, self.device, task_id, msg.to_json()),
        )

    async def report_failure(self, task_id: str, reason: str) -> None:
        msg = self._sent(messages.FailureReport(reason))
        self._call(self.service.report_failure, self.device, task_id, msg.reason[:64])
