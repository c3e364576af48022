"""The only module making HTTP calls: the aggregator's API, with retries, exponential
backoff with full jitter (AWS architecture blog, "Exponential Backoff and Jitter"), and
the server's Retry-After honoured. A rejection the server means (4xx) is raised at once
as ServerRejected with the server's error code; only transient failures are retried.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
import numpy as np

from .errors import TransportError
from .protocol.errors import ProtocolError
from .protocol.jsontext import JsonLimits, parse_json
from .protocol.messages import (
    CheckInReply,
    CheckInRequest,
    EnrollReply,
    EnrollRequest,
    ErrorBody,
    EvaluationAck,
    EvaluationReport,
    FailureReport,
    Message,
    MetricSums,
    SecAggKeys,
    SecAggReveal,
    SecAggShares,
    SecAggView,
    UploadAck,
    UploadBegin,
    UploadSession,
)


class ServerRejected(TransportError):
    """The server answered 4xx: retrying the same request will not help."""

    def __init__(self, status: int, code: str, message: str, details: dict):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.details = status, code, details


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_s: float = 0.2
    cap_s: float = 30.0

    def __post_init__(self):
        if self.attempts < 1 or self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("need attempts >= 1 and 0 < base_s <= cap_s")


_TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


class Transport:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        token: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        rng: np.random.Generator | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        single_request_bytes: int = 1 << 20,
        chunk_bytes: int = 256 << 10,
    ):
        self.base_url, self.session, self.token = base_url.rstrip("/"), session, token
        self.retry, self.rng, self.sleep = retry, rng or np.random.default_rng(), sleep
        self.attempts_made = 0
        self.last_attempts = 0  # attempts of the last request that succeeded
        self.device_id: str | None = None
        self.single_request_bytes, self.chunk_bytes = single_request_bytes, chunk_bytes

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json=None,
        data: bytes | None = None,
        params=None,
        raw: bool = False,
    ):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        last: Exception | None = None
        for attempt in range(self.retry.attempts):
            self.attempts_made += 1
            try:
                async with self.session.request(
                    method,
                    self.base_url + path,
                    json=json,
                    data=data,
                    params=params,
                    headers=headers,
                ) as r:
                    body = await r.read()
                    if r.status < 400:
                        self.last_attempts = attempt + 1  # > 1: this request was retried
                        if raw:
                            return body, r.headers
                        return None if r.status == 204 else _json(body)
                    error = _error(body)
                    if r.status == 429 or r.status >= 500:
                        last = TransportError(f"{r.status} {error.get('code', '')}".strip())
                        wait = float(r.headers.get("Retry-After", 0) or 0)
                        await self.sleep(max(wait, self._backoff(attempt)))
                        continue
                    raise ServerRejected(
                        r.status, error.get("code", "unknown"), error.get("message", ""), error
                    )
            except _TRANSIENT as e:
                last = e
                await self.sleep(self._backoff(attempt))
        raise TransportError(f"{method} {path} failed after {self.retry.attempts} attempts: {last}")

    def _backoff(self, attempt: int) -> float:
        return float(self.rng.uniform(0, min(self.retry.cap_s, self.retry.base_s * 2**attempt)))

    # -- the API: every JSON body built, and every JSON answer checked, by its message type;
    # answers are returned as their JSON dicts, as the client reads them ------------------
    async def _exchange(
        self, method: str, path: str, body: Message | None, answer: type[Message], **kw
    ) -> dict:
        if body is not None:  # what the server would refuse is refused here, unsent
            body = type(body).from_json(body.to_json())
        doc = await self._request(method, path, json=None if body is None else body.to_json(), **kw)
        try:
            answer.from_json(doc)
        except ProtocolError as e:
            raise TransportError(
                f"{method} {path}: the server's answer is malformed: {e}"
            ) from None
        return doc

    async def enroll(self, population: str, secret: str, public_key: bytes) -> dict:
        doc = await self._exchange(
            "POST", "/v1/enroll", EnrollRequest(population, secret, public_key), EnrollReply
        )
        self.token, self.device_id = doc["token"], doc["device_id"]
        return doc

    async def check_in(
        self, task_id: str | None = None, eligibility: dict | None = None, sdk_version: str = "0.1"
    ) -> dict:
        return await self._exchange(
            "POST",
            "/v1/checkin",
            CheckInRequest(task_id, dict(eligibility or {}), sdk_version),
            CheckInReply,
        )

    async def download_model(
        self,
        task_id: str,
        version: int | None,
        encoding: str | None = None,
        base: int | None = None,
    ) -> bytes:
        """A model version in the wire format (None: the task's current version), in
        `encoding` (protocol.ENCODINGS; None: the server's default, float32); with `base`,
        the version whose whole download in `encoding` this device holds, possibly as a
        difference from it. A server that predates encodings answers float32, which
        protocol.decode_model reads too."""
        params = {} if version is None else {"version": str(version)}
        if encoding is not None:
            params["encoding"] = encoding
            if base is not None:
                params["base"] = str(base)
        body, _ = await self._request("GET", f"/v1/tasks/{task_id}/model", raw=True, params=params)
        return body

    async def upload(self, task_id: str, data: bytes) -> dict:
        """Small updates in one request; larger ones resumably, in chunks."""
        if len(data) <= self.single_request_bytes:
            return await self._exchange(
                "POST", f"/v1/tasks/{task_id}/updates", None, UploadAck, data=data
            )
        return await self.upload_resumable(task_id, data)

    async def upload_resumable(self, task_id: str, data: bytes) -> dict:
        """Send `data` in chunks; after any failure, ask the server how much it holds and
        go on from there. The commit is idempotent like a single-request upload."""
        import hashlib

        session = await self._exchange(
            "POST",
            f"/v1/tasks/{task_id}/uploads",
            UploadBegin(len(data), hashlib.sha256(data).hexdigest()),
            UploadSession,
        )
        upload_id, received = session["upload_id"], session["received"]
        path = f"/v1/uploads/{upload_id}"
        failures = 0
        while received < len(data):
            chunk = data[received : received + self.chunk_bytes]
            try:
                answer = await self._exchange(
                    "PUT", path, None, UploadSession, data=chunk, params={"offset": str(received)}
                )
                received = answer["received"]
            except ServerRejected as e:
                if e.code != "upload_offset_mismatch":
                    raise
                received = int(e.details["received"])
            except TransportError:
                failures += 1
                if failures > self.retry.attempts:
                    raise
                received = (await self._exchange("GET", path, None, UploadSession))["received"]
        return await self._exchange("POST", path + "/commit", None, UploadAck)

    async def submit_evaluation(self, task_id: str, model_version: int, sums: dict) -> dict:
        return await self._exchange(
            "POST",
            f"/v1/tasks/{task_id}/evaluations",
            EvaluationReport(model_version, MetricSums(**sums)),
            EvaluationAck,
        )

    # -- secure aggregation steps (see edge_sdk/secure_aggregation.py) ----------------------
    async def secagg_state(self, task_id: str, round_id: int) -> dict:
        return await self._exchange(
            "GET",
            f"/v1/tasks/{task_id}/secagg",
            None,
            SecAggView,
            params={"round_id": str(round_id)},
        )

    async def secagg_step(self, task_id: str, step: str, doc: dict) -> dict:
        """step: "keys", "shares" or "reveal" (JSON bodies, checked by their types here)."""
        return await self._exchange(
            "POST",
            f"/v1/tasks/{task_id}/secagg/{step}",
            _SECAGG_STEPS[step].from_json(doc),
            SecAggView,
        )

    async def secagg_masked_input(self, task_id: str, round_id: int, data: bytes) -> dict:
        return await self._exchange(
            "POST",
            f"/v1/tasks/{task_id}/secagg/masked",
            None,
            SecAggView,
            data=data,
            params={"round_id": str(round_id)},
        )

    async def report_failure(self, task_id: str, reason: str) -> None:
        await self._request(
            "POST",
            f"/v1/tasks/{task_id}/failures",
            json=FailureReport.from_json({"reason": reason[:256]}).to_json(),
        )


_SECAGG_STEPS: dict[str, type[Message]] = {
    "keys": SecAggKeys,
    "shares": SecAggShares,
    "reveal": SecAggReveal,
}


def _json(body: bytes):
    try:
        return parse_json(body, _ANSWER_LIMITS)
    except ProtocolError:
        return {}


def _error(body: bytes) -> dict:
    """The error body's `error` object ({} if the answer is not one)."""
    doc = _json(body) if body else {}
    try:
        ErrorBody.from_json(doc)
    except ProtocolError:
        return {}
    return doc["error"]


_ANSWER_LIMITS = JsonLimits(max_bytes=64 << 20)  # a large secure round's view
