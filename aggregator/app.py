"""The aiohttp app: thin handlers that decode the request, call the service, encode the
answer. Errors, authentication, rate limits and forwarding to the process leading a task
are middleware; app state is typed."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_sdk.protocol import ENCODINGS, DecodeLimits, ProtocolError
from edge_sdk.protocol.jsontext import JsonLimits, parse_json
from edge_sdk.protocol.messages import (JSON_INT, CheckInReply, CheckInRequest, EnrollReply,
                                        EnrollRequest, EvaluationAck, EvaluationReport,
                                        FailureReport, HeldoutAck, HeldoutReport, SecAggKeys,
                                        SecAggReveal, SecAggShares, SecAggView, TaskCreate,
                                        TaskDescription, TaskList, UploadAck, UploadBegin,
                                        UploadSession, parse_bounded_int)

from .disclosure import public_task
from .errors import (AggregatorError, Forbidden, NotLeader, RateLimited, Unauthorized,
                     code_of, status_of)
from .metrics import Metrics
from .middleware import (TokenBuckets, body_deadline, close_unread, failure_throttle,
                         request_limits)
from .app_state import (CONFIG, DEVICE, JSON_LIMITS, METRICS, PEERS, SERVICE, check_in_reply,
                        checked, read_message, reply, run_service, service_thread)
from .openapi import BINARY, Operation, Query, document
from .progress import task_progress
from .secagg_handlers import (secagg_keys, secagg_masked, secagg_reveal, secagg_shares,
                              secagg_state)
from .server_config import ServerConfig
from .service import AggregatorService
from .uploads import UploadQuota

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
            request.app[METRICS].refused.labels(e.code).inc()
        elif status in (409, 403):
            request.app[METRICS].refused.labels(code_of(e)).inc()
        body = {"error": {"code": code_of(e), "message": str(e), **getattr(e, "details", {})}}
        headers = {}
        if "retry_after_s" in getattr(e, "details", {}):  # 429, 503: the SDK retries then
            headers["Retry-After"] = str(max(1, int(e.details["retry_after_s"])))
        return web.json_response(body, status=status, headers=headers)
    except web.HTTPRequestEntityTooLarge as e:
        return web.json_response({"error": {"code": "payload_too_large", "message": str(e)}},
                                 status=413)


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
                request.app, service.authenticate, token)
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
    service = request.app[SERVICE]
    if request.match_info.handler not in LED_HANDLERS or not service.store.shared:
        return await handler(request)  # a store of one process: it leads every task
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
        doc = parse_json(body, request.app[JSON_LIMITS])
    except ProtocolError:
        return None, body  # the handler says what is wrong
    task_id = doc.get("task_id") if isinstance(doc, dict) else None
    if isinstance(doc, dict) and task_id is None:
        task_id = service.spread_check_in()  # a check-in for any task
        if task_id is not None:
            body = json.dumps(doc | {"task_id": task_id}).encode()
    return (task_id if isinstance(task_id, str) else None), body


# -- handlers -----------------------------------------------------------------------------
async def enroll(request: web.Request) -> web.Response:
    msg = await read_message(request, EnrollRequest)
    service = request.app[SERVICE]
    doc = await run_service(request.app, service.enroll, msg.population, msg.secret,
                            msg.public_key)
    return checked(EnrollReply, doc, status=201)


async def check_in(request: web.Request) -> web.Response:
    msg = await read_message(request, CheckInRequest)
    answer = await run_service(request.app, _check_in, request.app[SERVICE], request[DEVICE],
                               msg.task_id)
    return reply(answer)


def _check_in(service: AggregatorService, device, task_id: str | None) -> CheckInReply:
    return check_in_reply(service, service.check_in(device, task_id))


async def download_model(request: web.Request) -> web.StreamResponse:
    """The current model, or `?version=V` (devices, and admins at /v1/admin/...), in
    float32 or `?encoding=E` (edge_sdk.protocol.ENCODINGS; docs/protocol.md, Downloads)."""
    encoding = request.query.get("encoding", "f32")
    base = request.query.get("base")  # the version whose whole download the device holds
    number, path = await run_service(request.app, request.app[SERVICE].model_file,
                                     request.match_info["task_id"], _version_query(request),
                                     DEVICE in request, encoding,
                                     None if base is None else parse_bounded_int(base, "query.base"))
    request.app[METRICS].bytes_out.inc(path.stat().st_size)
    # FileResponse answers Range and If-None-Match requests with the file's ETag
    return web.FileResponse(path, headers={"X-Model-Version": str(number),
                                           "X-Model-Encoding": encoding,
                                           "Content-Type": "application/octet-stream"})


async def upload_update(request: web.Request) -> web.Response:
    data = await request.read()
    metrics = request.app[METRICS]
    metrics.uploads.inc()
    metrics.bytes_in.inc(len(data))
    result = await run_service(request.app, request.app[SERVICE].submit_update, request[DEVICE],
                               request.match_info["task_id"], data)
    return checked(UploadAck, result)


async def begin_upload(request: web.Request) -> web.Response:
    msg = await read_message(request, UploadBegin)
    result = await run_service(request.app, request.app[SERVICE].begin_upload, request[DEVICE],
                               request.match_info["task_id"], msg.size, msg.sha256)
    return checked(UploadSession, result, status=201)


async def upload_status(request: web.Request) -> web.Response:
    return checked(UploadSession, await run_service(
        request.app, request.app[SERVICE].upload_status, request[DEVICE],
        request.match_info["upload_id"]))


async def upload_chunk(request: web.Request) -> web.Response:
    offset = parse_bounded_int(request.query.get("offset", ""), "query.offset")
    chunk = await request.read()
    request.app[METRICS].bytes_in.inc(len(chunk))
    return checked(UploadSession, await run_service(
        request.app, request.app[SERVICE].append_chunk, request[DEVICE],
        request.match_info["upload_id"], offset, chunk))


async def commit_upload(request: web.Request) -> web.Response:
    request.app[METRICS].uploads.inc()
    result = await run_service(request.app, request.app[SERVICE].commit_upload, request[DEVICE],
                               request.match_info["upload_id"])
    return checked(UploadAck, result)


async def submit_evaluation(request: web.Request) -> web.Response:
    msg = await read_message(request, EvaluationReport)
    return checked(EvaluationAck, await run_service(
        request.app, request.app[SERVICE].submit_evaluation, request[DEVICE],
        request.match_info["task_id"], msg.to_json()))


async def report_failure(request: web.Request) -> web.Response:
    msg = await read_message(request, FailureReport)
    await run_service(request.app, request.app[SERVICE].report_failure, request[DEVICE],
                      request.match_info["task_id"], msg.reason[:64])
    return web.Response(status=204)


async def admin_create_task(request: web.Request) -> web.Response:
    msg = await read_message(request, TaskCreate)
    # the service checks the settings (BadField: 400 naming the field) before it stores
    result = await run_service(request.app, request.app[SERVICE].create_task, msg.task_id,
                               msg.bundle_dir, msg.settings or {})
    return web.json_response(result, status=201)


async def admin_list_tasks(request: web.Request) -> web.Response:
    return web.json_response({"tasks": await run_service(request.app, _describe_all,
                                                         request.app[SERVICE], False)})


def _describe_all(service: AggregatorService, with_history: bool) -> list[dict]:
    return [service.describe(t) | (service.history(t) if with_history else {})
            for t in service.records]


async def admin_task(request: web.Request) -> web.Response:
    service, task_id = request.app[SERVICE], request.match_info["task_id"]
    return web.json_response(await run_service(
        request.app, lambda: service.describe(task_id) | service.history(task_id)))


async def admin_pause(request: web.Request) -> web.Response:
    return web.json_response(await run_service(
        request.app, request.app[SERVICE].set_paused, request.match_info["task_id"], True))


async def admin_resume(request: web.Request) -> web.Response:
    return web.json_response(await run_service(
        request.app, request.app[SERVICE].set_paused, request.match_info["task_id"], False))


async def admin_heldout(request: web.Request) -> web.Response:
    """A held-out evaluator's metrics for one version (server_eval/ posts them)."""
    version = parse_bounded_int(request.match_info["version"], "path.version")
    msg = await read_message(request, HeldoutReport)
    return checked(HeldoutAck, await run_service(
        request.app, request.app[SERVICE].record_heldout, request.match_info["task_id"],
        version, msg.to_json()))


def _version_query(request: web.Request) -> int | None:
    value = request.query.get("version")
    return None if value is None else parse_bounded_int(value, "query.version")


async def status(request: web.Request) -> web.Response:
    """Aggregate, non-personal status for the dashboard, with each task's progress
    (time per version, time to go: aggregator/progress.py)."""
    tasks = await run_service(request.app, _describe_all, request.app[SERVICE], True)
    show = request.app[CONFIG].public_status_settings
    return web.json_response({"tasks": [public_task(t | task_progress(t), show)
                                        for t in tasks]})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = await run_service(request.app, _export_metrics, request.app[SERVICE],
                             request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _export_metrics(service: AggregatorService, metrics: Metrics) -> bytes:
    led = [t for t in service.records if service.leads(t)]  # each process its own tasks
    metrics.observe([service.describe(t) for t in led],
                    {t: service.store.heldout_results(t) for t in led})
    return generate_latest(metrics.registry)


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "dashboard.html")


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


# calls whose body may be as large as max_body_bytes (every other body: max_json_bytes)
LARGE_BODY_HANDLERS = frozenset({upload_update, upload_chunk, secagg_masked, secagg_shares,
                                 secagg_reveal})

# calls that need the task's coordinator, so run in the process leading the task
LED_HANDLERS = frozenset({check_in, upload_update, report_failure, submit_evaluation,
                          secagg_state, secagg_keys, secagg_shares, secagg_masked, secagg_reveal,
                          begin_upload, commit_upload, admin_pause, admin_resume})

_ROUND_ID = Query("round_id", {"type": "integer", "minimum": 0, "maximum": JSON_INT}, True)
_VERSION = Query("version", {"type": "integer", "minimum": 0, "maximum": JSON_INT})
_ENCODING = Query("encoding", {"type": "string", "enum": sorted(ENCODINGS)})
_BASE = Query("base", {"type": "integer", "minimum": 0, "maximum": JSON_INT})
OPERATIONS = [
    Operation("POST", "/v1/enroll", enroll, "Enroll a device: register its Ed25519 public key "
              "with the population's secret", None, EnrollRequest, EnrollReply, 201),
    Operation("POST", "/v1/checkin", check_in, "Check in: an assignment (task, round, model "
              "version, deadline, plan), an evaluation, or a time to come back",
              "device", CheckInRequest, CheckInReply),
    Operation("GET", "/v1/tasks/{task_id}/model", download_model, "Download a model version "
              "(wire format; ?encoding=q8 int8 with per-chunk scales, f16, f32 the default; "
              "&base=B: the difference from version B's whole download, which the device "
              "holds); ETag and Range supported", "device", reply=BINARY,
              query=(_VERSION, _ENCODING, _BASE)),
    Operation("POST", "/v1/tasks/{task_id}/updates", upload_update, "Upload an update (wire "
              "format). Idempotent by the update's key", "device", BINARY, UploadAck),
    Operation("POST", "/v1/tasks/{task_id}/failures", report_failure, "Report that this "
              "device gave up its assignment", "device", FailureReport, status=204),
    Operation("POST", "/v1/tasks/{task_id}/evaluations", submit_evaluation, "Report "
              "federated evaluation metric sums for a model version", "device",
              EvaluationReport, EvaluationAck),
    Operation("GET", "/v1/tasks/{task_id}/secagg", secagg_state, "Secure aggregation: this "
              "device's view of the current round (poll between steps)", "device",
              reply=SecAggView, query=(_ROUND_ID,)),
    Operation("POST", "/v1/tasks/{task_id}/secagg/keys", secagg_keys, "Secure aggregation "
              "step 0: advertise two X25519 public keys after training", "device", SecAggKeys,
              SecAggView),
    Operation("POST", "/v1/tasks/{task_id}/secagg/shares", secagg_shares, "Secure "
              "aggregation step 1: encrypted Shamir shares for every peer, keyed by the "
              "peer's index", "device", SecAggShares, SecAggView),
    Operation("POST", "/v1/tasks/{task_id}/secagg/masked", secagg_masked, "Secure "
              "aggregation step 2: the masked input (magic EFLM, uint64 length, uint32 LE "
              "values)", "device", BINARY, SecAggView, query=(_ROUND_ID,)),
    Operation("POST", "/v1/tasks/{task_id}/secagg/reveal", secagg_reveal, "Secure "
              "aggregation step 3: for each peer, the self-mask share ('b') of a survivor or "
              "the key share ('s') of a dropped device, in decimal", "device", SecAggReveal,
              SecAggView),
    Operation("POST", "/v1/tasks/{task_id}/uploads", begin_upload, "Start a resumable upload "
              "of a large update", "device", UploadBegin, UploadSession, 201),
    Operation("GET", "/v1/uploads/{upload_id}", upload_status, "How many bytes the server "
              "holds", "device", reply=UploadSession),
    Operation("PUT", "/v1/uploads/{upload_id}", upload_chunk, "Append a chunk at ?offset= "
              "(idempotent)", "device", BINARY, UploadSession, query=(Query(
                  "offset", {"type": "integer", "minimum": 0, "maximum": JSON_INT}, True),)),
    Operation("POST", "/v1/uploads/{upload_id}/commit", commit_upload, "Verify and submit "
              "the completed upload", "device", reply=UploadAck),
    Operation("POST", "/v1/admin/tasks", admin_create_task, "Create a task from a bundle",
              "admin", TaskCreate, TaskDescription, 201),
    Operation("GET", "/v1/admin/tasks", admin_list_tasks, "List tasks", "admin",
              reply=TaskList),
    Operation("GET", "/v1/admin/tasks/{task_id}", admin_task, "Inspect a task: state, "
              "funnel, versions, round events", "admin", reply=TaskDescription),
    Operation("POST", "/v1/admin/tasks/{task_id}/pause", admin_pause, "Pause a task",
              "admin", reply=TaskDescription),
    Operation("POST", "/v1/admin/tasks/{task_id}/resume", admin_resume, "Resume a task",
              "admin", reply=TaskDescription),
    Operation("GET", "/v1/admin/tasks/{task_id}/model", download_model, "Download the "
              "current model, or ?version=V (wire format); X-Model-Version names it",
              "admin", reply=BINARY, query=(_VERSION, _ENCODING, _BASE)),
    Operation("POST", "/v1/admin/tasks/{task_id}/versions/{version}/heldout", admin_heldout,
              "Record a model version's metrics on the server's held-out set (posted by "
              "the held-out evaluator, server_eval/)", "admin", HeldoutReport, HeldoutAck),
    Operation("GET", "/v1/status", status, "Aggregate status for the dashboard",
              reply=TaskList),
    Operation("GET", "/metrics", metrics_endpoint, "Prometheus metrics", reply="text/plain"),
    Operation("GET", "/dashboard", dashboard, "The dashboard page", reply="text/html"),
    Operation("GET", "/openapi.json", openapi, "This document", reply="application/json"),
]
# what a path parameter may hold, else the router answers 404 before any middleware asks
# the store about it (no control characters: PostgreSQL text cannot hold U+0000)
PATH_PATTERNS = {"task_id": r"[^/\x00-\x1f\x7f]{1,128}", "upload_id": r"[0-9a-f]{32}"}
OPENAPI = document(OPERATIONS, PATH_PATTERNS)


def _route_path(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: "{%s:%s}" % (m[1], PATH_PATTERNS[m[1]])
                  if m[1] in PATH_PATTERNS else m[0], path)


# -- assembly -----------------------------------------------------------------------------
def build_app(config: ServerConfig, service: AggregatorService) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes,
                          middlewares=[error_middleware,
                                       request_limits(config, LARGE_BODY_HANDLERS),
                                       failure_throttle(config), auth_middleware(config),
                                       body_deadline(config), leader_middleware])
    app.on_response_prepare.append(close_unread)
    app[SERVICE], app[METRICS], app[CONFIG] = service, Metrics(), config
    app[JSON_LIMITS] = JsonLimits()  # docs/aggregator.md lists them
    app.add_routes([web.route(op.method, _route_path(op.path), op.handler) for op in OPERATIONS])
    app.cleanup_ctx.append(service_thread())  # first in, last out: the ticker stops before it
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
                    await run_service(app, app[SERVICE].tick)
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
                                address=config.advertise_url,
                                upload_quota=UploadQuota(config.upload_session_ttl_s,
                                                         config.max_uploads_per_device,
                                                         config.max_upload_bytes_per_device))
    service.recover()
    service.expire_uploads()  # sessions that outlived their time while the server was down
    return service


