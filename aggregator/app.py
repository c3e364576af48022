"""The aiohttp app: thin handlers that decode the request, call the service, encode the
answer. Errors, authentication, rate limits and forwarding to the process leading a task
are middleware; app state is typed."""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import asdict
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_sdk.protocol import DecodeLimits, ProtocolError

from .coordinator import Assignment, EvalAssignment
from .errors import (AggregatorError, BadRequest, Forbidden, NotLeader, RateLimited, Unauthorized,
                     code_of, status_of)
from .metrics import Metrics
from .app_state import CONFIG, DEVICE, METRICS, PEERS, SERVICE, _field, _json
from .secagg_handlers import (secagg_keys, secagg_masked, secagg_reveal, secagg_shares,
                              secagg_state)
from .server_config import ServerConfig
from .service import AggregatorService

__all__ = ["ServerConfig", "build_app", "make_service"]

STATIC = Path(__file__).parent / "static"


# -- middleware ---------------------------------------------------------------------------
@web.middleware
async def error_middleware(request: web.Request, handler):
    """The one place errors become HTTP answers: {"error": {"code", "message", ...}}."""
    try:
        return await handler(request)
    except (AggregatorError, ProtocolError) as e:
        status = status_of(e)
        if isinstance(e, ProtocolError):
            request.app[METRICS].rejected.labels(e.code).inc()
        elif status in (409, 403):
            request.app[METRICS].rejected.labels(code_of(e)).inc()
        body = {"error": {"code": code_of(e), "message": str(e), **getattr(e, "details", {})}}
        headers = {}
        if "retry_after_s" in getattr(e, "details", {}):  # 429, 503: the SDK retries then
            headers["Retry-After"] = str(max(1, int(e.details["retry_after_s"])))
        return web.json_response(body, status=status, headers=headers)
    except web.HTTPRequestEntityTooLarge as e:
        return web.json_response({"error": {"code": "payload_too_large", "message": str(e)}},
                                 status=413)


class _Buckets:
    """Per-device token buckets (rate limits)."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst, self.state = rate, burst, {}

    def take(self, key: str, now: float) -> float:
        """0 if allowed, else seconds to wait."""
        tokens, last = self.state.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self.state[key] = (tokens - 1, now)
            return 0.0
        self.state[key] = (tokens, now)
        return (1 - tokens) / self.rate


def auth_middleware(config: ServerConfig):
    buckets = _Buckets(config.rate_per_s, config.burst)

    @web.middleware
    async def middleware(request: web.Request, handler):
        path = request.path
        if path.startswith("/v1/admin"):
            token = request.headers.get("X-Admin-Token", "")
            if not secrets.compare_digest(token.encode("utf-8", "surrogateescape"),
                                          config.admin_token.encode()):
                raise (Unauthorized if not token else Forbidden)("admin token required")
        elif path.startswith("/v1/") and path != "/v1/enroll" and path != "/v1/status":
            auth = request.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else None
            device = request.app[SERVICE].authenticate(token)
            wait = buckets.take(device.device_id, time.monotonic())
            if wait:
                raise RateLimited("too many requests", retry_after_s=wait)
            request[DEVICE] = device
        return await handler(request)
    return middleware


FORWARDED = "X-Edge-FL-Forwarded"


@web.middleware
async def leader_middleware(request: web.Request, handler):
    """Task-scoped calls run where the task's coordinator runs: another process's are
    forwarded there, once (a forwarded call this process cannot answer gets a 503 with
    Retry-After, which devices retry). Everything else is answered here, from the store."""
    if request.match_info.handler not in LED_HANDLERS:
        return await handler(request)
    service = request.app[SERVICE]
    task_id, body = await _task_of(request)
    if task_id is None or service.leads(task_id) or not service.knows(task_id):
        return await handler(request)
    url = service.leader_url(task_id)
    if request.headers.get(FORWARDED) or not url or url == service.address:
        raise NotLeader(f"the process leading task {task_id!r} is not known yet",
                        retry_after_s=1)
    headers = {k: request.headers[k] for k in ("Authorization", "X-Admin-Token", "Content-Type")
               if k in request.headers}
    try:
        async with request.app[PEERS].request(request.method, url.rstrip("/") + request.path_qs,
                                              data=body, headers=headers | {FORWARDED: "1"}) as r:
            payload = await r.read()
            kept = {k: r.headers[k] for k in ("Content-Type", "Retry-After", "X-Model-Version")
                    if k in r.headers}
            return web.Response(status=r.status, body=payload, headers=kept)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        raise NotLeader(f"the process leading task {task_id!r} cannot be reached",
                        retry_after_s=1) from None


async def _task_of(request: web.Request) -> tuple[str | None, bytes]:
    """The task a led call is for (None: answer here), and the body to forward."""
    service = request.app[SERVICE]
    body = await request.read()
    if request.match_info.handler is commit_upload:
        return service.upload_task(request.match_info["upload_id"]), body
    if request.match_info.handler is not check_in:
        return request.match_info["task_id"], body
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, body  # the handler says what is wrong
    task_id = doc.get("task_id") if isinstance(doc, dict) else None
    if isinstance(doc, dict) and task_id is None:
        task_id = service.spread_check_in()  # a check-in for any task
        if task_id is not None:
            body = json.dumps(doc | {"task_id": task_id}).encode()
    return (task_id if isinstance(task_id, str) else None), body


# -- handlers -----------------------------------------------------------------------------
async def enroll(request: web.Request) -> web.Response:
    doc = await _json(request)
    try:
        key = base64.b64decode(_field(doc, "public_key", str), validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise BadRequest("public_key must be base64") from None
    result = request.app[SERVICE].enroll(_field(doc, "population", str), _field(doc, "secret", str), key)
    return web.json_response(result, status=201)


async def check_in(request: web.Request) -> web.Response:
    doc = await _json(request)
    task_id = _field(doc, "task_id", str, required=False)
    service, metrics = request.app[SERVICE], request.app[METRICS]
    result = service.check_in(request[DEVICE], task_id)
    if isinstance(result, Assignment):
        task = service.tasks[result.task_id]
        metrics.check_ins.labels(result.task_id).inc()
        metrics.selections.labels(result.task_id).inc()
        secagg = task.settings.secagg
        return web.json_response({"assignment": {
            **asdict(result), "model_id": task.record.model_id,
            "plan": task.settings.plan.to_json(),
            "secagg": None if secagg is None else asdict(secagg)}})
    if isinstance(result, EvalAssignment):
        task = service.tasks[result.task_id]
        return web.json_response({"evaluation": {**asdict(result), "model_id": task.record.model_id}})
    now = service.clock.now()
    return web.json_response({"retry_at": result.retry_at, "retry_after_s": result.retry_at - now})


async def download_model(request: web.Request) -> web.StreamResponse:
    """The current model, or `?version=V` (devices, and admins at /v1/admin/...)."""
    number, path = request.app[SERVICE].model_file(request.match_info["task_id"],
                                                   _version_query(request))
    request.app[METRICS].bytes_out.inc(path.stat().st_size)
    # FileResponse answers Range and If-None-Match requests with the file's ETag
    return web.FileResponse(path, headers={"X-Model-Version": str(number),
                                           "Content-Type": "application/octet-stream"})


async def upload_update(request: web.Request) -> web.Response:
    data = await request.read()
    metrics = request.app[METRICS]
    metrics.uploads.inc()
    metrics.bytes_in.inc(len(data))
    task_id = request.match_info["task_id"]
    result = request.app[SERVICE].submit_update(request[DEVICE], task_id, data)
    if result["status"] == "accepted":
        metrics.accepted.labels(task_id).inc()
    return web.json_response(result)


async def begin_upload(request: web.Request) -> web.Response:
    doc = await _json(request)
    result = request.app[SERVICE].begin_upload(request[DEVICE], request.match_info["task_id"],
                                               _field(doc, "size", int), _field(doc, "sha256", str))
    return web.json_response(result, status=201)


async def upload_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].upload_status(
        request[DEVICE], request.match_info["upload_id"]))


async def upload_chunk(request: web.Request) -> web.Response:
    try:
        offset = int(request.query["offset"])
    except (KeyError, ValueError):
        raise BadRequest("offset (bytes already sent) is a required integer") from None
    chunk = await request.read()
    request.app[METRICS].bytes_in.inc(len(chunk))
    return web.json_response(request.app[SERVICE].append_chunk(
        request[DEVICE], request.match_info["upload_id"], offset, chunk))


async def commit_upload(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    metrics.uploads.inc()
    result = request.app[SERVICE].commit_upload(request[DEVICE], request.match_info["upload_id"])
    if result["status"] == "accepted":
        metrics.accepted.labels(request.match_info.get("task_id", "")).inc()
    return web.json_response(result)


async def submit_evaluation(request: web.Request) -> web.Response:
    doc = await _json(request)
    return web.json_response(request.app[SERVICE].submit_evaluation(
        request[DEVICE], request.match_info["task_id"], doc))


async def report_failure(request: web.Request) -> web.Response:
    doc = await _json(request)
    request.app[SERVICE].report_failure(request[DEVICE], request.match_info["task_id"],
                                        _field(doc, "reason", str)[:64])
    return web.Response(status=204)


async def admin_create_task(request: web.Request) -> web.Response:
    doc = await _json(request)
    # the service checks the settings (FieldError: 400 naming the field) before it stores
    result = request.app[SERVICE].create_task(_field(doc, "task_id", str),
                                              _field(doc, "bundle_dir", str),
                                              doc.get("settings", {}))
    return web.json_response(result, status=201)


async def admin_list_tasks(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response({"tasks": [service.describe(t) for t in service.records]})


async def admin_task(request: web.Request) -> web.Response:
    service, task_id = request.app[SERVICE], request.match_info["task_id"]
    return web.json_response(service.describe(task_id) | service.history(task_id))


async def admin_pause(request: web.Request) -> web.Response:
    paused = request.match_info["action"] == "pause"
    return web.json_response(request.app[SERVICE].set_paused(request.match_info["task_id"], paused))


async def admin_heldout(request: web.Request) -> web.Response:
    """A held-out evaluator's metrics for one version (server_eval/ posts them)."""
    service = request.app[SERVICE]
    return web.json_response(service.record_heldout(
        request.match_info["task_id"], int(request.match_info["version"]), await _json(request)))


def _version_query(request: web.Request) -> int | None:
    value = request.query.get("version")
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest("version must be a non-negative integer")
    return int(value)


async def status(request: web.Request) -> web.Response:
    """Aggregate, non-personal status for the dashboard."""
    service = request.app[SERVICE]
    return web.json_response({"tasks": [service.describe(t) | service.history(t)
                                        for t in service.records]})


async def metrics_endpoint(request: web.Request) -> web.Response:
    service, metrics = request.app[SERVICE], request.app[METRICS]
    for task_id, task in service.tasks.items():
        metrics.model_version.labels(task_id).set(task.coordinator.version)
        for reason, count in task.coordinator.funnel.dropped.items():
            metrics.dropouts.labels(task_id, reason).set(count)
        heldout = service.store.heldout_results(task_id)
        if heldout:
            latest = heldout[max(heldout)]
            for name in ("accuracy", "mean_loss"):
                if name in latest:
                    metrics.heldout.labels(task_id, name).set(latest[name])
    return web.Response(body=generate_latest(metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "dashboard.html")


async def openapi(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "openapi.json")


# calls that need the task's coordinator, so run in the process leading the task
LED_HANDLERS = frozenset({check_in, upload_update, report_failure, submit_evaluation,
                          secagg_state, secagg_keys, secagg_shares, secagg_masked, secagg_reveal,
                          begin_upload, commit_upload, admin_pause})


# -- assembly -----------------------------------------------------------------------------
def build_app(config: ServerConfig, service: AggregatorService) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes,
                          middlewares=[error_middleware, auth_middleware(config),
                                       leader_middleware])
    app[SERVICE], app[METRICS], app[CONFIG] = service, Metrics(), config
    app.add_routes([
        web.post("/v1/enroll", enroll),
        web.post("/v1/checkin", check_in),
        web.get("/v1/tasks/{task_id}/model", download_model),
        web.post("/v1/tasks/{task_id}/updates", upload_update),
        web.post("/v1/tasks/{task_id}/failures", report_failure),
        web.post("/v1/tasks/{task_id}/evaluations", submit_evaluation),
        web.get("/v1/tasks/{task_id}/secagg", secagg_state),
        web.post("/v1/tasks/{task_id}/secagg/keys", secagg_keys),
        web.post("/v1/tasks/{task_id}/secagg/shares", secagg_shares),
        web.post("/v1/tasks/{task_id}/secagg/masked", secagg_masked),
        web.post("/v1/tasks/{task_id}/secagg/reveal", secagg_reveal),
        web.post("/v1/tasks/{task_id}/uploads", begin_upload),
        web.get("/v1/uploads/{upload_id}", upload_status),
        web.put("/v1/uploads/{upload_id}", upload_chunk),
        web.post("/v1/uploads/{upload_id}/commit", commit_upload),
        web.post("/v1/admin/tasks", admin_create_task),
        web.get("/v1/admin/tasks", admin_list_tasks),
        web.get("/v1/admin/tasks/{task_id}", admin_task),
        web.post("/v1/admin/tasks/{task_id}/{action:pause|resume}", admin_pause),
        web.get("/v1/admin/tasks/{task_id}/model", download_model),
        web.post(r"/v1/admin/tasks/{task_id}/versions/{version:\d+}/heldout", admin_heldout),
        web.get("/v1/status", status),
        web.get("/metrics", metrics_endpoint),
        web.get("/dashboard", dashboard),
        web.get("/openapi.json", openapi),
    ])
    app.cleanup_ctx.append(_peers(config.forward_timeout_s))
    app.cleanup_ctx.append(_ticker(config.tick_interval_s))
    if config.heldout:
        app.cleanup_ctx.append(_heldout_evaluators(config))
    return app


def _heldout_evaluators(config: ServerConfig):
    """One `edge-fl heldout` process per configured task, beside this one: it runs the
    model, which this process never does. The admin token travels in the environment,
    not on a command line others can read."""
    async def ctx(app: web.Application):
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_fl_cli", "heldout", "--server", config.advertise_url,
            "--task", task_id, "--bundle", entry.bundle, "--examples", entry.examples,
            "--poll-s", str(entry.poll_s), "--parent-pid", str(os.getpid()),
            env=os.environ | {"EDGE_FL_ADMIN_TOKEN": config.admin_token})
            for task_id, entry in config.heldout.items()]
        yield
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await proc.wait()
    return ctx


def _peers(timeout_s: float):
    async def ctx(app: web.Application):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            app[PEERS] = s
            yield
    return ctx


def _ticker(interval: float):
    async def ctx(app: web.Application):
        async def loop():
            while True:
                await asyncio.sleep(interval)
                try:
                    app[SERVICE].tick()
                except AggregatorError as e:  # e.g. the database blinked: the next tick retries
                    logging.getLogger(__name__).warning("tick: %s", e)
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return ctx


def make_service(config: ServerConfig, clock, rng) -> AggregatorService:
    from .store import CRASH_POINTS, open_store
    unknown = set(config.crash_at) - set(CRASH_POINTS)
    if unknown:
        raise ValueError(f"unknown crash points {sorted(unknown)}; known: {CRASH_POINTS}")
    remaining = dict(config.crash_at)

    def crash_hook(point: str) -> None:
        if point in remaining:
            remaining[point] -= 1
            if remaining[point] <= 0:
                os._exit(137)  # no cleanup, no flush: what kill -9 leaves behind

    service = AggregatorService(open_store(config.data_dir, config.store_url, crash_hook), clock,
                                rng, dict(config.enrollment_secrets),
                                DecodeLimits(max_message_bytes=config.max_body_bytes),
                                address=config.advertise_url)
    service.recover()
    return service


