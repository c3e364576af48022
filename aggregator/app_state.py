"""What every handler shares: the app's typed state, the one thread the service runs on
(with the grouped commits of its writes), the bounded parsing of request bodies into
typed messages, and the replies the HTTP and in-process transports both build."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import OrderedDict
from typing import Callable, TypeVar

import aiohttp
from aiohttp import web

from edge_sdk.protocol.errors import JsonLimitExceeded, ProtocolError
from edge_sdk.protocol.jsontext import JsonLimits, parse_json
from edge_sdk.protocol.messages import (
    CheckInReply,
    CheckInRequest,
    EvaluationAssignment,
    Message,
    TrainingAssignment,
)

from .coordinator import Assignment, EvalAssignment
from .errors import StoreUnavailable
from .metrics import Metrics
from .openapi import Operation
from .server_config import ServerConfig
from .service import AggregatorService
from .store import Device

SERVICE = web.AppKey("service", AggregatorService)
METRICS = web.AppKey("metrics", Metrics)
CONFIG = web.AppKey("config", ServerConfig)
PEERS = web.AppKey("peers", aiohttp.ClientSession)  # forwards calls to a task's leader
JSON_LIMITS = web.AppKey("json_limits", JsonLimits)
OPERATION_OF = web.AppKey("operation_of", dict)  # handler -> its route (routes.OPERATIONS)
DEVICE = web.RequestKey("device", Device)
log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)


async def run_service(app: web.Application, fn: Callable[..., T], *args) -> T:
    """`fn(*args)` on the service's thread, returned (or raised) once what it wrote is
    durable. Cancelling the caller does not stop a call already running there (it
    finishes, as it would have on the loop); the CancelledError still reaches the
    caller."""
    return await app[WORKER].call(fn, args)


class ServiceWorker:
    """The one thread every service call runs on, and durable writes without an fsync per
    request. The loop queues calls; the thread takes every call queued, runs them one
    after another (their writes share the store's open group), commits the group once,
    and only then hands all their outcomes back to the loop in one wake-up: one hop per
    call, and under load the batches, so the groups, grow by themselves (no timer).
    Nothing is answered before the commit that made it durable. A commit that fails loses
    its group: every call of the batch gets StoreUnavailable, and the service drops what
    it holds in memory and reloads it from what is durable (AggregatorService.flush)."""

    def __init__(self, service: AggregatorService, loop: asyncio.AbstractEventLoop):
        self.service, self.loop = service, loop
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="edge-fl-service", daemon=True)
        self.thread.start()

    def call(self, fn: Callable[..., T], args: tuple = ()) -> asyncio.Future:
        future = self.loop.create_future()
        self.queue.put((fn, args, future))
        return future

    async def stop(self) -> None:
        """Let the calls queued so far finish, then end the thread."""
        self.queue.put(None)
        await self.loop.run_in_executor(None, self.thread.join)

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            calls = [item for item in batch if item is not None]
            outcomes = [self._call(fn, args, future) for fn, args, future in calls]
            if self.service.open_group() is not None:
                try:
                    self.service.flush()
                except Exception:  # noqa: BLE001 - every caller of the batch gets it
                    log.exception("a grouped commit failed: the tasks were reloaded from the store")
                    outcomes = [(None, _lost()) for _ in calls]
            self.loop.call_soon_threadsafe(_deliver, [c[2] for c in calls], outcomes)
            if stop:
                return

    @staticmethod
    def _call(fn, args, future) -> tuple:
        if future.cancelled():  # its caller gave up before it started
            return None, None
        try:
            return fn(*args), None
        except BaseException as e:  # noqa: BLE001 - raised on the loop, once durable
            return None, e


def _deliver(futures: list[asyncio.Future], outcomes: list[tuple]) -> None:
    for future, (result, error) in zip(futures, outcomes):
        if future.done():  # cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _lost() -> StoreUnavailable:
    return StoreUnavailable(
        "a durable write failed, and what this request did was undone; try again", retry_after_s=1
    )


# the one thread every service call runs on: the service's state stays serialised as if
# it ran on the event loop, while the loop keeps answering during a slow disk or database
WORKER = web.AppKey("worker", ServiceWorker)


def service_thread():
    """cleanup_ctx: the service's thread, started with the app and drained at its end
    (with grouped commits on while it runs)."""

    async def ctx(app: web.Application):
        worker = app[WORKER] = ServiceWorker(app[SERVICE], asyncio.get_running_loop())
        await worker.call(app[SERVICE].group_commits, (True,))
        try:
            yield
        finally:
            await worker.call(app[SERVICE].group_commits, (False,))  # flushes
            await worker.stop()

    return ctx


def operation_of(request: web.Request) -> Operation:
    """The route table's entry (routes.py) of the handler serving `request`."""
    return request.app[OPERATION_OF][request.match_info.handler]


async def read_message(request: web.Request, kind: type[M] | None = None) -> M:
    """The body as a `kind` message (by default the route's body type): read, parsed
    within the app's JSON limits as strict UTF-8 (whatever charset the request names),
    then checked field by field."""
    kind = kind or operation_of(request).body
    limits = request.app[JSON_LIMITS]
    if request.content_length is not None and request.content_length > limits.max_bytes:
        raise JsonLimitExceeded(
            f"the JSON is over its max_bytes limit of {limits.max_bytes}",
            limit="max_bytes",
            max=limits.max_bytes,
        )  # before reading it
    body = await request.read()
    if kind is not CheckInRequest:
        return kind.from_json(parse_json(body, limits))
    return request.app[CHECK_INS].decode(body, limits)


class CheckInBodies:
    """The check-in bodies decoded lately, by their exact bytes. A device sends the same
    check-in every time, and decoding it (the bounded parse, then field by field) was a
    fair share of a check-in's time on the loop. The same bytes under the same limits
    decode to the same message (frozen: shared by the requests that sent them), so a hit
    skips only repeated work; a body that fails is never kept. At most `size` bodies of
    at most `max_bytes` each (a few hundred kB in all)."""

    def __init__(self, size: int = 1024, max_bytes: int = 256):
        self.size, self.max_bytes = size, max_bytes
        self.decoded: OrderedDict[bytes, CheckInRequest] = OrderedDict()

    def decode(self, body: bytes, limits: JsonLimits) -> CheckInRequest:
        message = self.decoded.get(body)
        if message is not None:
            self.decoded.move_to_end(body)
            return message
        message = CheckInRequest.from_json(parse_json(body, limits))
        if len(body) <= self.max_bytes:
            self.decoded[body] = message
            if len(self.decoded) > self.size:
                self.decoded.popitem(last=False)
        return message


CHECK_INS = web.AppKey("check_ins", CheckInBodies)


async def answer(request: web.Request, fn: Callable[..., dict], *args) -> web.Response:
    """`fn(*args)` on the service's thread (run_service), its reply checked against the
    route's reply type and sent with the route's status."""
    op = operation_of(request)
    return checked(op.reply, await run_service(request.app, fn, *args), op.status)


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
        terms = service.assignment_terms(result.task_id)
        return CheckInReply(
            assignment=TrainingAssignment(
                result.task_id,
                result.round_id,
                result.model_version,
                result.deadline,
                terms.model_id,
                terms.plan,
                terms.secagg,
            )
        )
    if isinstance(result, EvalAssignment):
        model_id = service.assignment_terms(result.task_id).model_id
        return CheckInReply(
            evaluation=EvaluationAssignment(
                result.task_id, result.model_version, result.deadline, model_id
            )
        )
    return CheckInReply(
        retry_at=result.retry_at, retry_after_s=max(0.0, result.retry_at - service.clock.now())
    )
