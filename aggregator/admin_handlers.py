"""The operator's calls over HTTP (/v1/admin, behind the admin token): create, list,
inspect, pause and resume tasks, and record held-out metrics. Model download is the
device's handler (device_handlers.download_model) under an admin route."""

from __future__ import annotations

from aiohttp import web

from edge_sdk.protocol.messages import parse_bounded_int

from .app_state import SERVICE, answer, read_message, run_service


async def admin_create_task(request: web.Request) -> web.Response:
    msg = await read_message(request)
    # the service checks the settings (BadField: 400 naming the field) before it stores
    result = await run_service(
        request.app,
        request.app[SERVICE].create_task,
        msg.task_id,
        msg.bundle_dir,
        msg.settings or {},
    )
    return web.json_response(result, status=201)


async def admin_list_tasks(request: web.Request) -> web.Response:
    return web.json_response(
        {"tasks": await run_service(request.app, request.app[SERVICE].describe_tasks, False)}
    )


async def admin_task(request: web.Request) -> web.Response:
    service, task_id = request.app[SERVICE], request.match_info["task_id"]
    return web.json_response(
        await run_service(request.app, lambda: service.describe(task_id) | service.history(task_id))
    )


async def admin_pause(request: web.Request) -> web.Response:
    return web.json_response(
        await run_service(
            request.app, request.app[SERVICE].set_paused, request.match_info["task_id"], True
        )
    )


async def admin_resume(request: web.Request) -> web.Response:
    return web.json_response(
        await run_service(
            request.app, request.app[SERVICE].set_paused, request.match_info["task_id"], False
        )
    )


async def admin_heldout(request: web.Request) -> web.Response:
    """A held-out evaluator's metrics for one version (server_eval/ posts them)."""
    version = parse_bounded_int(request.match_info["version"], "path.version")
    msg = await read_message(request)
    service, task_id = request.app[SERVICE], request.match_info["task_id"]
    return await answer(request, service.record_heldout, task_id, version, msg.to_json())
