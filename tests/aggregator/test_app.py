"""The app (aggregator/app.py): every route it serves is in the OpenAPI document, and every
error class has a status in the one error table its middleware renders (the dashboard:
test_dashboard.py)."""

from __future__ import annotations

import asyncio
import inspect

import aiohttp

from aggregator import errors
from aggregator.app import ServerConfig, build_app
from edge_sdk.clock import FakeClock

from .fleet import running_server


def test_every_error_class_has_a_status():
    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.AggregatorError) and c is not errors.AggregatorError
    ]
    assert len(classes) >= 10
    for cls in classes:
        # 4xx, or 503 for "another process / the database: retry" (devices retry 503)
        assert errors.status_of(cls("x")) in (*range(400, 500), 503), cls
        assert cls.code != "error", cls


def test_openapi_document_lists_every_route(tmp_path):
    async def scenario():
        async with (
            running_server(tmp_path / "d", FakeClock()) as (url, service),
            aiohttp.ClientSession() as session,
        ):
            async with session.get(url + "/openapi.json") as r:
                doc = await r.json()
            documented = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
            app = build_app(
                ServerConfig(str(tmp_path / "e"), "admin-token-0123456789", {}), service
            )
            served = set()
            for route in app.router.routes():
                info = route.resource.get_info()
                path = info.get("path") or info.get("formatter")
                if route.method == "HEAD":
                    continue
                # one route serves both documented admin actions
                for concrete in (
                    [path.replace("{action}", a) for a in ("pause", "resume")]
                    if "{action}" in path
                    else [path]
                ):
                    served.add(f"{route.method} {concrete}")
            assert served - {"GET /openapi.json"} <= documented, served - documented
            assert len(served) > 20

    asyncio.run(scenario())
