"""`make demo-web`'s page (clients/web/browser/demo.html) in headless Chromium against a
real aggregator on 127.0.0.1, served by examples/web_demo.py's page server: the tab
enrolls, stores the sample sentences in IndexedDB, downloads the model, suggests next words
from it, trains once its policy allows (opted in, idle 0 s) and the round it joins (goal 1)
makes version 1, which the page downloads and suggests from."""

from __future__ import annotations

import asyncio
import shutil
from urllib.parse import urlencode

import pytest
from aiohttp import web

from edge_sdk.bundle import Bundle
from examples.web_demo import TASK, page_app, task_settings

from ..aggregator.fleet import SECRET, server_with_task
from .node import node_or_skip
from .test_web_browser import _chromium

CHROMIUM = shutil.which("chromium")


@pytest.mark.slow  # 7 s here, more on a loaded machine: Chromium, onnxruntime WASM, one round
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_demo_page_trains_and_suggests_from_the_new_version(tmp_path):
    node_or_skip()  # the page loads the npm dependencies from clients/web/node_modules
    from model_zoo.zoo import build_bundle

    bundle = Bundle.load(build_bundle("keyboard_cifg_tiny", tmp_path / "kb", with_vocabulary=True))

    async def scenario():
        events: list[dict] = []
        seen = asyncio.Event()

        def on_report(event):
            events.append(event)
            if event.get("event") == "suggestions" and event.get("version") == 1:
                seen.set()

        async with server_with_task(tmp_path, bundle, task_settings(1), TASK) as env:
            app = page_app(
                env.url,
                bundle.path,
                {"population": TASK, "secret": SECRET, "task": TASK},
                on_report,
            )
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/web/browser/demo.html?" + urlencode(
                {"optin": 1, "idle": 0, "sample": 1, "text": "good night "}
            )
            browser = await _chromium(tmp_path, url)
            try:
                await asyncio.wait_for(seen.wait(), timeout=300)
            except TimeoutError:
                pytest.fail(f"no suggestions from version 1; the tab reported {events}")
            finally:
                browser.terminate()
                await browser.wait()
                await runner.cleanup()
            return events, env.service.describe(TASK)

    events, task = asyncio.run(scenario())
    assert [e for e in events if e["event"] == "error"] == []
    kinds = [e["event"] for e in events]
    assert kinds[0] == "enrolled"
    first = next(e for e in events if e["event"] == "participation")
    assert first["status"] == "completed" and first["server"] == "accepted", first
    assert first["trained_on"] == 0 and first["examples"] == 8
    assert [e["version"] for e in events if e["event"] == "model"][:2] == [0, 1]
    after = next(e for e in events if e["event"] == "suggestions" and e["version"] == 1)
    assert after["text"] == "good night " and len(after["words"]) == 3
    assert all(w not in ("<pad>", "<s>", "</s>", "<unk>") for w, _ in after["words"])
    assert task["version"] >= 1
