"""The device's calls over HTTP: enrollment, check-in, model download, uploads (whole and
chunked), failure and evaluation reports. Each decodes the request into its typed
message, calls the service on its thread, and encodes the answer; secure aggregation's
steps are in secagg_handlers.py."""

from __future__ import annotations

from aiohttp import web

from edge_sdk.protocol.messages import CheckInReply, parse_bounded_int

from .app_state import (
    DEVICE,
    METRICS,
    SERVICE,
    answer,
    check_in_reply,
    read_message,
    reply,
    run_service,
)
from .service import AggregatorService

# Each handler's request and reply message types, and its status, are its route's
# (routes.OPERATIONS): read_message and answer take them from there.


async def enroll(request: web.Request) -> web.Response:
    msg = await read_message(request)
    service = request.app[SERVICE]
    return await answer(request, service.enroll, msg.population, msg.secret, msg.public_key)


async def check_in(request: web.Request) -> web.Response:
    msg = await read_message(request)
    assignment = await run_service(
        request.app, _check_in, request.app[SERVICE], request[DEVICE], msg.task_id
    )
    return reply(assignment)


def _check_in(service: AggregatorService, device, task_id: str | None) -> CheckInReply:
    return check_in_reply(service, service.check_in(device, task_id))


async def download_model(request: web.Request) -> web.StreamResponse:
    """The current model, or `?version=V` (devices, and admins at /v1/admin/...), in
    float32 or `?encoding=E` (edge_sdk.protocol.ENCODINGS; docs/protocol.md, Downloads)."""
    encoding = request.query.get("encoding", "f32")
    base = request.query.get("base")  # the version whose whole download the device holds
    number, path = await run_service(
        request.app,
        request.app[SERVICE].model_file,
        request.match_info["task_id"],
        _version_query(request),
        DEVICE in request,
        encoding,
        None if base is None else parse_bounded_int(base, "query.base"),
    )
    request.app[METRICS].bytes_out.inc(path.stat().st_size)
    # FileResponse answers Range and If-None-Match requests with the file's ETag
    return web.FileResponse(
        path,
        headers={
            "X-Model-Version": str(number),
            "X-Model-Encoding": encoding,
            "Content-Type": "application/octet-stream",
        },
    )


async def upload_update(request: web.Request) -> web.Response:
    data = await request.read()
    metrics = request.app[METRICS]
    metrics.uploads.inc()
    metrics.bytes_in.inc(len(data))
    task_id = request.match_info["task_id"]
    return await answer(request, request.app[SERVICE].submit_update, request[DEVICE], task_id, data)


async def begin_upload(request: web.Request) -> web.Response:
    msg = await read_message(request)
    service, task_id = request.app[SERVICE], request.match_info["task_id"]
    return await answer(
        request, service.begin_upload, request[DEVICE], task_id, msg.size, msg.sha256
    )


async def upload_status(request: web.Request) -> web.Response:
    service, upload_id = request.app[SERVICE], request.match_info["upload_id"]
    return await answer(request, service.upload_status, request[DEVICE], upload_id)


async def upload_chunk(request: web.Request) -> web.Response:
    offset = parse_bounded_int(request.query.get("offset", ""), "query.offset")
    chunk = await request.read()
    request.app[METRICS].bytes_in.inc(len(chunk))
    service, upload_id = request.app[SERVICE], request.match_info["upload_id"]
    return await answer(request, service.append_chunk, request[DEVICE], upload_id, offset, chunk)


async def commit_upload(request: web.Request) -> web.Response:
    request.app[METRICS].uploads.inc()
    service, upload_id = request.app[SERVICE], request.match_info["upload_id"]
    return await answer(request, service.commit_upload, request[DEVICE], upload_id)


async def submit_evaluation(request: web.Request) -> web.Response:
    msg = await read_message(request)
    service, task_id = request.app[SERVICE], request.match_info["task_id"]
    return await answer(request, service.submit_evaluation, request[DEVICE], task_id, msg.to_json())


async def report_failure(request: web.Request) -> web.Response:
    msg = await read_message(request)
    service, task_id = request.app[SERVICE], request.match_info["task_id"]
    await run_service(
        request.app, service.report_failure, request[DEVICE], task_id, msg.reason[:64]
    )
    return web.Response(status=204)


def _version_query(request: web.Request) -> int | None:
    value = request.query.get("version")
    return None if value is None else parse_bounded_int(value, "query.version")
