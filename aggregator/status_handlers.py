"""What anyone may read: aggregate, non-personal task status (disclosure.py decides what
is shown), Prometheus metrics and the dashboard page."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .app_state import CONFIG, METRICS, SERVICE, run_service
from .disclosure import public_task
from .metrics import Metrics
from .progress import task_progress
from .service import AggregatorService

STATIC = Path(__file__).parent / "static"


async def status(request: web.Request) -> web.Response:
    """Aggregate, non-personal status for the dashboard, with each task's progress
    (time per version, time to go: aggregator/progress.py)."""
    tasks = await run_service(request.app, request.app[SERVICE].describe_tasks, True)
    show = request.app[CONFIG].public_status_settings
    return web.json_response({"tasks": [public_task(t | task_progress(t), show) for t in tasks]})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = await run_service(
        request.app, _export_metrics, request.app[SERVICE], request.app[METRICS]
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _export_metrics(service: AggregatorService, metrics: Metrics) -> bytes:
    led = service.led_task_ids()  # each process its own tasks
    metrics.observe(
        [service.describe(t) for t in led], {t: service.heldout_results(t) for t in led}
    )
    return generate_latest(metrics.registry)


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "dashboard.html")
