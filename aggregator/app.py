"""The aiohttp app, assembled: middleware (middleware.py) in its order, the route table
(routes.py: device, admin and status handlers), typed app state (app_state.py), and the
background work that starts and stops with the app (the service's thread, the ticker,
the connection pool to peer processes, held-out evaluators); and the service it serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

import aiohttp
from aiohttp import web

from edge_sdk.protocol import DecodeLimits
from edge_sdk.protocol.jsontext import JsonLimits

from .app_state import (
    CHECK_INS,
    CONFIG,
    JSON_LIMITS,
    METRICS,
    OPERATION_OF,
    PEERS,
    SERVICE,
    CheckInBodies,
    run_service,
    service_thread,
)
from .errors import AggregatorError
from .metrics import Metrics
from .middleware import (
    auth_middleware,
    body_deadline,
    close_unread,
    error_middleware,
    failure_throttle,
    leader_middleware,
    request_limits,
)
from .routes import LARGE_BODY_HANDLERS, LED_HANDLERS, OPERATIONS, routes
from .server_config import ServerConfig
from .service import AggregatorService
from .uploads import UploadQuota

__all__ = ["ServerConfig", "build_app", "make_service"]


def build_app(config: ServerConfig, service: AggregatorService) -> web.Application:
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[
            error_middleware,
            request_limits(config, LARGE_BODY_HANDLERS),
            failure_throttle(config),
            auth_middleware(config),
            body_deadline(config),
            leader_middleware(LED_HANDLERS),
        ],
    )
    app.on_response_prepare.append(close_unread)
    app[SERVICE], app[METRICS], app[CONFIG] = service, Metrics(), config
    app[JSON_LIMITS] = JsonLimits()  # docs/aggregator.md lists them
    app[CHECK_INS] = CheckInBodies()
    app[OPERATION_OF] = {op.handler: op for op in reversed(OPERATIONS)}  # its first route
    app.add_routes(routes())
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
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "edge_fl_cli",
                "heldout",
                "--server",
                config.advertise_url,
                "--task",
                task_id,
                "--bundle",
                entry.bundle,
                "--examples",
                entry.examples,
                "--poll-s",
                str(entry.poll_s),
                "--parent-pid",
                str(os.getpid()),
                env=os.environ | {"EDGE_FL_ADMIN_TOKEN": config.admin_token},
            )
            for task_id, entry in config.heldout.items()
        ]
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

    service = AggregatorService(
        open_store(config.data_dir, config.store_url, crash_hook),
        clock,
        rng,
        dict(config.enrollment_secrets),
        DecodeLimits(max_message_bytes=config.max_body_bytes),
        address=config.advertise_url,
        upload_quota=UploadQuota(
            config.upload_session_ttl_s,
            config.max_uploads_per_device,
            config.max_upload_bytes_per_device,
        ),
    )
    service.recover()
    service.expire_uploads()  # sessions that outlived their time while the server was down
    return service
