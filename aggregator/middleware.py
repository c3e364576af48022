"""The app's cross-cutting concerns, as middleware: errors become HTTP answers (the one
place), authentication of devices and admins with per-device rate limits, forwarding a
task's calls to the process leading it, and what keeps one request from hurting the
next: declared body sizes checked before a byte of the body is read, no
Content-Encoding, a deadline on reading the body, and per-address throttling of failed
credentials. The order they run in is set in `build_app` (app.py):

    errors -> request_limits -> failure_throttle -> auth -> body_deadline -> leader -> handler

so a refused size or encoding costs nothing, a throttled address costs no credential
check, and only an authenticated request gets its body read.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import time
from collections import OrderedDict
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from edge_sdk.protocol import ProtocolError
from edge_sdk.protocol.jsontext import parse_json

from .app_state import DEVICE, JSON_LIMITS, METRICS, PEERS, SERVICE, run_service
from .connections import guard_of
from .errors import (
    AggregatorError,
    BodyTimeout,
    Forbidden,
    LengthRequired,
    NotLeader,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnsupportedEncoding,
    code_of,
    status_of,
)
from .server_config import ServerConfig

__all__ = [
    "FORWARDED",
    "TokenBuckets",
    "auth_middleware",
    "body_deadline",
    "client_address",
    "error_middleware",
    "failure_throttle",
    "leader_middleware",
    "needs_credentials",
    "request_limits",
]

STARTED = web.RequestKey("started", float)  # loop time the app got the request's headers


class TokenBuckets:
    """Token buckets by key (rate per second, burst), at most `max_keys` of them: the
    least recently used are dropped first, and a bucket that has filled up again is the
    same as none, so it is dropped as soon as it is the oldest."""

    def __init__(self, rate: float, burst: int, max_keys: int = 65536):
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self.state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self.state.get(key, (float(self.burst), now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` has a token (0: it has one); takes nothing."""
        return max(0.0, (1 - self._tokens(key, now)) / self.rate)

    def take(self, key: str, now: float) -> float:
        """0 if a token was taken, else seconds to wait."""
        tokens = self._tokens(key, now)
        taken = tokens >= 1
        self.state[key] = (tokens - 1 if taken else tokens, now)
        self.state.move_to_end(key)
        self._evict(now)
        return 0.0 if taken else (1 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        while self.state:
            oldest = next(iter(self.state))
            if len(self.state) <= self.max_keys and self._tokens(oldest, now) < self.burst:
                return
            del self.state[oldest]


def client_address(request: web.BaseRequest) -> str:
    """Who a throttle counts: the peer's IPv4 address, or its IPv6 /64 (one host's share
    of a network; a host can take any address in it)."""
    return _address_key(request.remote or "")


@functools.lru_cache(maxsize=4096)
def _address_key(remote: str) -> str:
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def needs_credentials(path: str) -> bool:
    """The calls that check a secret: enrollment, admin and every device call."""
    return path.startswith("/v1/") and path != "/v1/status"


def request_limits(config: ServerConfig, large_body_handlers: frozenset):
    """Before anything else: a body's encoding and declared size. A body must declare its
    length (411 otherwise) and be at most the route's limit (413 at once, nothing read):
    `max_body_bytes` for the handlers in `large_body_handlers` (updates, chunks, masked
    inputs), `max_json_bytes` for every other one. Content-Encoding is refused (415):
    updates are compressed inside the wire format, and inflating a request would let a
    few KB claim gigabytes."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        guard = guard_of(request)
        if guard is not None:
            guard.request_started()
        request[STARTED] = asyncio.get_running_loop().time()
        try:
            encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise UnsupportedEncoding(
                    f"Content-Encoding {encoding[:32]!r} is not accepted; send the body as it is"
                )
            if request.body_exists:
                limit = (
                    config.max_body_bytes
                    if request.match_info.handler in large_body_handlers
                    else config.max_json_bytes
                )
                if request.content_length is None:
                    raise LengthRequired("a request body needs a Content-Length header")
                if request.content_length > limit:
                    raise PayloadTooLarge(
                        f"this call takes a body of at most {limit} bytes", max_bytes=limit
                    )
            return await handler(request)
        finally:
            if guard is not None:
                guard.request_finished()

    return middleware


def failure_throttle(config: ServerConfig):
    """Per client address, a token bucket of failed credentials: a wrong enrollment
    secret or admin token, a missing or unknown device token. An address with no token
    left gets 429 with Retry-After for every call that checks credentials, before any
    check is made, so secrets cannot be guessed faster than `auth_failures_per_s`."""
    buckets = TokenBuckets(config.auth_failures_per_s, config.auth_failure_burst)

    @web.middleware
    async def middleware(request: web.Request, handler):
        if not needs_credentials(request.path):
            return await handler(request)
        address = client_address(request)
        wait = buckets.wait(address, time.monotonic())
        if wait:
            raise RateLimited("too many failed credentials from this address", retry_after_s=wait)
        try:
            return await handler(request)
        except (Unauthorized, Forbidden) as e:
            # a Forbidden elsewhere (an update signed by another device) is no guess
            if (
                isinstance(e, Unauthorized)
                or request.path == "/v1/enroll"
                or request.path.startswith("/v1/admin")
            ):
                buckets.take(address, time.monotonic())
            raise

    return middleware


def body_deadline(config: ServerConfig):
    """Read the body within `body_timeout_s` of the headers (408 and the connection
    closes otherwise); handlers then find it read."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        # a body that came whole with the headers (a check-in's JSON) needs no timer
        if request.body_exists and not request.content.is_eof():
            loop = asyncio.get_running_loop()
            left = request.get(STARTED, loop.time()) + config.body_timeout_s - loop.time()
            try:
                async with asyncio.timeout(max(0.0, left)):
                    await request.read()
            except TimeoutError:
                raise BodyTimeout(
                    f"the body did not arrive within {config.body_timeout_s:g} s of the headers"
                ) from None
        return await handler(request)

    return middleware


async def close_unread(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """An answer given before the body was read (413, 408, 401, ...) closes the
    connection: the rest of the body is never read."""
    if request.body_exists and not request.content.at_eof():
        response.force_close()
        response.headers["Connection"] = "close"  # aiohttp may have set the headers already


@web.middleware
async def error_middleware(request: web.Request, handler):
    """The one place errors become HTTP answers: {"error": {"code", "message", ...}}."""
    try:
        return await handler(request)
    except (AggregatorError, ProtocolError) as e:
        status = status_of(e)
        if isinstance(e, ProtocolError):
            request.app[METRICS].refused.labels(e.code).inc()
        elif status in (409, 403):
            request.app[METRICS].refused.labels(code_of(e)).inc()
        body = {"error": {"code": code_of(e), "message": str(e), **getattr(e, "details", {})}}
        headers = {}
        if "retry_after_s" in getattr(e, "details", {}):  # 429, 503: the SDK retries then
            headers["Retry-After"] = str(max(1, int(e.details["retry_after_s"])))
        return web.json_response(body, status=status, headers=headers)
    except web.HTTPRequestEntityTooLarge as e:
        return web.json_response(
            {"error": {"code": "payload_too_large", "message": str(e)}}, status=413
        )


def auth_middleware(config: ServerConfig):
    buckets = TokenBuckets(config.rate_per_s, config.burst)  # per device
    admin_token = config.admin_token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler):
        path = request.path
        if path.startswith("/v1/admin"):
            token = request.headers.get("X-Admin-Token", "")
            # constant time; surrogatepass: any header text encodes, none matches by accident
            if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), admin_token):
                raise (Unauthorized if not token else Forbidden)("admin token required")
        elif path.startswith("/v1/") and path != "/v1/enroll" and path != "/v1/status":
            auth = request.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else None
            if token is not None and not (token.isascii() and token.isprintable()):
                token = None  # not a token this server issued (they are URL-safe ASCII)
            service = request.app[SERVICE]
            device = service.known_device(token) or await run_service(
                request.app, service.authenticate, token
            )
            wait = buckets.take(device.device_id, time.monotonic())
            if wait:
                raise RateLimited("too many requests", retry_after_s=wait)
            request[DEVICE] = device
        return await handler(request)

    return middleware


FORWARDED = "X-Edge-FL-Forwarded"


def leader_middleware(led: Mapping):
    """Task-scoped calls run where the task's coordinator runs: another process's are
    forwarded there, once (a forwarded call this process cannot answer gets a 503 with
    Retry-After, which devices retry). Everything else is answered here, from the store.

    led: handler -> where its task is named: "path" ({task_id}), "upload" (the task of
    the {upload_id} session) or "body" (a check-in's JSON, which may name none)."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        where = led.get(request.match_info.handler)
        service = request.app[SERVICE]
        if where is None or service.leads_every_task:
            return await handler(request)  # a store of one process: it leads every task
        task_id, body = await _task_of(request, where)
        if task_id is None or service.leads(task_id) or not service.knows(task_id):
            return await handler(request)
        url = service.leader_url(task_id)
        if request.headers.get(FORWARDED) or not url or url == service.address:
            raise NotLeader(
                f"the process leading task {task_id!r} is not known yet", retry_after_s=1
            )
        headers = {
            k: request.headers[k]
            for k in ("Authorization", "X-Admin-Token", "Content-Type")
            if k in request.headers
        }
        try:
            async with request.app[PEERS].request(
                request.method,
                url.rstrip("/") + request.path_qs,
                data=body,
                headers=headers | {FORWARDED: "1"},
            ) as r:
                payload = await r.read()
                kept = {
                    k: r.headers[k]
                    for k in ("Content-Type", "Retry-After", "X-Model-Version")
                    if k in r.headers
                }
                return web.Response(status=r.status, body=payload, headers=kept)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            raise NotLeader(
                f"the process leading task {task_id!r} cannot be reached", retry_after_s=1
            ) from None

    return middleware


async def _task_of(request: web.Request, where: str) -> tuple[str | None, bytes]:
    """The task a led call is for (None: answer here), and the body to forward."""
    service = request.app[SERVICE]
    body = await request.read()
    if where == "upload":
        return service.upload_task(request.match_info["upload_id"]), body
    if where == "path":
        return request.match_info["task_id"], body
    try:
        doc = parse_json(body, request.app[JSON_LIMITS])
    except ProtocolError:
        return None, body  # the handler says what is wrong
    task_id = doc.get("task_id") if isinstance(doc, dict) else None
    if isinstance(doc, dict) and task_id is None:
        task_id = service.spread_check_in()  # a check-in for any task
        if task_id is not None:
            body = json.dumps(doc | {"task_id": task_id}).encode()
    return (task_id if isinstance(task_id, str) else None), body
