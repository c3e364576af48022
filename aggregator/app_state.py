"""What every handler shares: the app's typed state, the one worker thread the service
runs on, the bounded parsing of request bodies into typed messages, and the replies the
HTTP and in-process transports both build."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import aiohttp
from aiohttp import web

from edge_sdk.protocol.errors import JsonLimitExceeded, ProtocolError
from edge_sdk.protocol.jsontext import JsonLimits, parse_json
from edge_sdk.protocol.messages import (
    CheckInReply,
    EvaluationAssignment,
    Message,
    TrainingAssignment,
)

from .coordinator import Assignment, EvalAssignment
from .metrics import Metrics
from .server_config import ServerConfig
from .service import AggregatorService
from .store import Device

SERVICE = web.AppKey("service", AggregatorService)
METRICS = web.AppKey("metrics", Metrics)
CONFIG = web.AppKey("config", ServerConfig)
PEERS = web.AppKey("peers", aiohttp.ClientSession)  # forwards calls to a task's leader
# the one thread every service call runs on: the service's state stays serialised as if
# it ran on the event loop, while the loop keeps answering during a slow disk or database
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
JSON_LIMITS = web.AppKey("json_limits", JsonLimits)
DEVICE = web.RequestKey("device", Device)

T = TypeVar("T")
M = TypeVar("M", bound=Message)


async def run_service(app: web.Application, fn: Callable[..., T], *args) -> T:
    """`fn(*args)` on the service's worker thread. Cancelling the caller does not stop a
    call already running there (it finishes, as it would have on the loop); the
    CancelledError still reaches the caller."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(app[EXECUTOR], functools.partial(fn, *args))


def service_thread():
    """cleanup_ctx: the worker thread, started with the app and drained at its end."""

    async def ctx(app: web.Application):
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-fl-service")
        app[EXECUTOR] = executor
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    return ctx


async def read_message(request: web.Request, kind: type[M]) -> M:
    """The body as a `kind` message: read, parsed within the app's JSON limits as strict
    UTF-8 (whatever charset the request names), then checked field by field."""
    limits = request.app[JSON_LIMITS]
    if request.content_length is not None and request.content_length > limits.max_bytes:
        raise JsonLimitExceeded(
            f"the JSON is over its max_bytes limit of {limits.max_bytes}",
            limit="max_bytes",
            max=limits.max_bytes,
        )  # before reading it
    return kind.from_json(parse_json(await request.read(), limits))


def reply(message: Message, status: int = 200) -> web.Response:
    return web.json_response(message.to_json(), status=status)


def checked(kind: type[Message], doc: dict, status: int = 200) -> web.Response:
    """A reply the service built as a dict, checked against its message type (keys the
    type does not know yet pass through: replies are open)."""
    try:
        kind.from_json(doc)
    except ProtocolError as e:  # the server's own mistake: a 500, not the client's 400
        raise RuntimeError(f"the service built a bad {kind.__name__}: {e}") from None
    return web.json_response(doc, status=status)


def check_in_reply(service: AggregatorService, result) -> CheckInReply:
    """The check-in answer for a coordinator's decision (on the service's thread)."""
    if isinstance(result, Assignment):
        model_id, settings = service.assignment_terms(result.task_id)
        return CheckInReply(
            assignment=TrainingAssignment(
                result.task_id,
                result.round_id,
                result.model_version,
                result.deadline,
                model_id,
                settings["plan"],
                settings.get("secagg"),
            )
        )
    if isinstance(result, EvalAssignment):
        model_id, _ = service.assignment_terms(result.task_id)
        return CheckInReply(
            evaluation=EvaluationAssignment(
                result.task_id, result.model_version, result.deadline, model_id
            )
        )
    return CheckInReply(
        retry_at=result.retry_at, retry_after_s=max(0.0, result.retry_at - service.clock.now())
    )
