"""What every handler shares: the app's typed state, the one worker thread the service
runs on, the bounded parsing of request bodies into typed messages, and the replies the
HTTP and in-process transports both build."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
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
# the one thread every service call runs on: the service's state stays serialised as if
# it ran on the event loop, while the loop keeps answering during a slow disk or database
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
JSON_LIMITS = web.AppKey("json_limits", JsonLimits)
OPERATION_OF = web.AppKey("operation_of", dict)  # handler -> its route (routes.OPERATIONS)
DEVICE = web.RequestKey("device", Device)
log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=Message)


async def run_service(app: web.Application, fn: Callable[..., T], *args) -> T:
    """`fn(*args)` on the service's worker thread, returned (or raised) once what it
    wrote is durable. Cancelling the caller does not stop a call already running there
    (it finishes, as it would have on the loop); the CancelledError still reaches the
    caller."""
    loop = asyncio.get_running_loop()
    service = app[SERVICE]

    def call():
        try:
            return fn(*args), None, service.open_group()
        except BaseException as e:  # noqa: BLE001 - raised below, once its writes are durable
            return None, e, service.open_group()

    commits = app[COMMITS]
    with commits.asking():
        result, error, group = await loop.run_in_executor(app[EXECUTOR], call)
        if group is not None:
            await commits.durable(group)
    if error is not None:
        raise error
    return result


class GroupCommit:
    """Durable writes without an fsync per request: the service thread writes the calls
    it runs into one open group; the first caller that needs its group durable queues a
    flush behind whatever is queued already, so everything that ran before the flush
    commits with it (under load the groups grow by themselves, no timer). A flush that
    fails loses its group: every caller waiting on it gets the error, and the service
    drops what it holds in memory and reloads it from what is durable.

    A lost group is remembered only while a call may still ask about it: each call
    (`asking`) notes the last group closed when it began, since it can only run in a
    later one; a lost group at or below every running call's note is forgotten."""

    def __init__(self, app: web.Application):
        self.app = app
        self.committed = 0  # every group up to this number is durable, but the lost ones
        self.closed = 0  # every group up to this number was flushed (committed or lost)
        self.lost: set[int] = set()
        self.waiting: dict[int, asyncio.Future] = {}
        self.flushing = False
        self.running: collections.Counter[int] = collections.Counter()  # calls by `closed`

    @contextlib.contextmanager
    def asking(self):
        """Around one service call and its durable(): keeps the lost groups it could
        have run in."""
        floor = self.closed
        self.running[floor] += 1
        try:
            yield
        finally:
            self.running[floor] -= 1
            if not self.running[floor]:
                del self.running[floor]
            self._forget_lost()

    def _forget_lost(self) -> None:
        if self.lost:
            floor = min(self.running, default=self.closed)
            self.lost = {g for g in self.lost if g > floor}

    async def durable(self, group: int) -> None:
        if group in self.lost:
            raise _lost()
        if group <= self.committed:
            return
        future = self.waiting.get(group)
        if future is None:
            future = self.waiting[group] = asyncio.get_running_loop().create_future()
        self._flush_soon()
        await asyncio.shield(future)

    def _flush_soon(self) -> None:
        if self.flushing or not self.waiting:
            return
        self.flushing = True
        loop = asyncio.get_running_loop()
        loop.run_in_executor(self.app[EXECUTOR], self._flush).add_done_callback(self._flushed)

    def _flush(self) -> tuple[int | None, bool]:
        """(the group this closed or None, whether it is durable); on the service thread."""
        service = self.app[SERVICE]
        group = service.open_group()
        try:
            service.flush()
        except Exception:  # noqa: BLE001 - the waiters get it as StoreUnavailable
            log.exception("a grouped commit failed: the tasks were reloaded from the store")
            return group, False
        return group, True

    def _flushed(self, done: asyncio.Future) -> None:
        self.flushing = False
        group, ok = done.result()
        if group is None:  # nothing was open: every group so far is closed
            group = max(self.waiting, default=self.committed)
        elif not ok:
            self.lost.add(group)
        if ok:
            self.committed = max(self.committed, group)
        self.closed = max(self.closed, group)
        for g in [g for g in self.waiting if g <= group]:
            future = self.waiting.pop(g)
            if future.done():
                continue
            if g in self.lost:
                future.set_exception(_lost())
            else:
                future.set_result(None)
        self._forget_lost()
        self._flush_soon()


def _lost() -> StoreUnavailable:
    return StoreUnavailable(
        "a durable write failed, and what this request did was undone; try again", retry_after_s=1
    )


COMMITS = web.AppKey("commits", GroupCommit)


def service_thread():
    """cleanup_ctx: the worker thread, started with the app and drained at its end, and
    the grouped commits of the writes made on it."""

    async def ctx(app: web.Application):
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-fl-service")
        app[EXECUTOR] = executor
        app[COMMITS] = GroupCommit(app)
        service = app[SERVICE]
        await loop.run_in_executor(executor, service.group_commits, True)
        try:
            yield
        finally:
            await loop.run_in_executor(executor, service.group_commits, False)  # flushes
            await loop.run_in_executor(None, executor.shutdown)

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
    return kind.from_json(parse_json(await request.read(), limits))


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
