"""The dashboard in headless Chromium, the OpenAPI document, and the error table."""

from __future__ import annotations

import asyncio
import inspect
import shutil

import aiohttp
import pytest

from aggregator import errors
from aggregator.app import ServerConfig, build_app
from edge_sdk.bundle import Bundle
from edge_sdk.clock import FakeClock

from .fleet import admin, enroll_phone, good_state, lm_examples, running_server, server_with_task

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from model_zoo.zoo import build_bundle

    return Bundle.load(build_bundle("keyboard_cifg_tiny", tmp_path_factory.mktemp("b") / "kb"))


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


def test_openapi_document_lists_every_route(bundle, tmp_path):
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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_dashboard_shows_tasks_funnel_and_metrics_in_headless_chromium(bundle, tmp_path):
    async def scenario():
        settings = {
            "mode": "sync",
            "sync": {"goal": 2, "overselect": 1.0},
            "plan": {"epochs": 1, "batch_size": 4, "lr": 0.5},
        }
        async with server_with_task(tmp_path, bundle, settings, "keyboard") as env:
            url, session, clock = env.url, env.session, env.clock
            for round_ in range(2):
                phones = [
                    await enroll_phone(
                        url, session, bundle, tmp_path, 10 * round_ + i, clock, lm_examples(i)
                    )
                    for i in range(3)
                ]
                await asyncio.gather(
                    *[p.client.participate(good_state, "keyboard") for p in phones]
                )
            for version in range(3):  # as the held-out evaluator (server_eval/) reports them
                status, _ = await admin(
                    session,
                    url,
                    "POST",
                    f"/v1/admin/tasks/keyboard/versions/{version}/heldout",
                    {"metrics": {"accuracy": 0.1 * version, "mean_loss": 6 - version}},
                )
                assert status == 200
            shot = tmp_path / "dashboard.png"
            common = [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=4000",
            ]
            proc = await asyncio.create_subprocess_exec(
                CHROMIUM,
                *common,
                "--dump-dom",
                url + "/dashboard",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            dom, _ = await asyncio.wait_for(proc.communicate(), 60)
            proc = await asyncio.create_subprocess_exec(
                CHROMIUM,
                *common,
                f"--screenshot={shot}",
                "--window-size=900,1100",
                url + "/dashboard",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.wait_for(proc.wait(), 60)
            return dom.decode(), shot

    dom, shot = asyncio.run(scenario())
    assert 'data-task="keyboard"' in dom
    assert "model version 2" in dom
    assert "checked in" in dom and "selected" in dom and "accepted" in dom
    assert dom.count("<polyline") == 4  # loss and accuracy over versions, in training and held out
    assert "Server-side held-out evaluation" in dom
    assert shot.exists() and shot.stat().st_size > 5000
