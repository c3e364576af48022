"""Browser devices in headless Chromium (one page, an iframe per device) against a real
aggregator on 127.0.0.1: each one enrolls with a key made in the page, keeps its examples
in IndexedDB, trains the bundle in onnxruntime-web (WASM), uploads the default codec, and
asks for the model again (a 304 from its ETag). Their updates are accepted, carry the
deltas a Python client computes from the same training, and the aggregated model improves."""

from __future__ import annotations

import asyncio
import shutil
from urllib.parse import urlencode

import pytest

from clients.web.tools.bench import HEADLESS_CHROMIUM
from edge_sdk.evaluator import Evaluator
from edge_sdk.protocol import decode_parameters

from ..aggregator.fleet import SECRET, lm_examples, server_with_task
from .checks import BATCH, DEVICES, LR, SETTINGS, assert_same_training, python_delta
from .node import node_or_skip
from .page_server import page_server

CHROMIUM = shutil.which("chromium")


async def _chromium(tmp_path, url: str):
    """Headless Chromium on `url` (it opens one target only), its log in tmp_path."""
    args = [
        *HEADLESS_CHROMIUM,
        "--disable-quic",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    log = open(tmp_path / "chromium.log", "wb")
    return await asyncio.create_subprocess_exec(
        CHROMIUM, *args, url, stdout=asyncio.subprocess.DEVNULL, stderr=log
    )


@pytest.mark.slow  # ~30-60 s: Chromium starts, compiles onnxruntime's WASM, trains 3 tabs
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_browser_devices_train_and_upload_to_a_real_aggregator(bundle, tmp_path):
    node_or_skip()  # the page loads the npm dependencies from clients/web/node_modules
    examples = [lm_examples(i) for i in range(DEVICES)]

    async def scenario():
        async with (
            server_with_task(tmp_path, bundle, SETTINGS, "keyboard") as env,
            page_server(env.url, bundle.path, examples) as (url, results),
        ):
            page = f"{url}/web/browser/fleet.html?" + urlencode(
                {"devices": DEVICES, "population": "keyboard", "secret": SECRET, "task": "keyboard"}
            )
            browser = await _chromium(tmp_path, page)
            exited = asyncio.ensure_future(browser.wait())
            try:
                everyone = asyncio.ensure_future(asyncio.gather(*results.values()))
                await asyncio.wait(
                    {everyone, exited}, timeout=300, return_when=asyncio.FIRST_COMPLETED
                )
                assert everyone.done(), (
                    f"Chromium exited ({browser.returncode}) or timed out; its log: "
                    + (tmp_path / "chromium.log").read_text(errors="replace")[-3000:]
                )
                done = everyone.result()
            finally:
                if browser.returncode is None:
                    browser.terminate()
                await exited
            store = env.service.store
            models = [
                decode_parameters(
                    store.model_path("keyboard", v).read_bytes(), bundle.parameter_specs
                )[1]
                for v in (0, 1)
            ]
            return done, env.service.describe("keyboard"), models

    results, task, (before, after) = asyncio.run(scenario())
    assert all("error" not in r for r in results), [r.get("error") for r in results]
    assert [r["status"] for r in results] == ["completed"] * DEVICES, results
    assert all(r["server"]["status"] == "accepted" for r in results)
    assert all(r["stored"] == len(ex) for r, ex in zip(results, examples))  # in IndexedDB
    assert all(r["model_from_cache"] is True for r in results)  # If-None-Match -> 304
    assert "HeadlessChrome" in results[0]["user_agent"]
    assert task["version"] == 1
    for r, ex in zip(results, examples):
        assert_same_training(bundle, r, python_delta(bundle, before, ex, BATCH, LR))
    all_examples = [e for ex in examples for e in ex]
    evaluator = Evaluator(bundle)
    loss = [evaluator.evaluate(p, all_examples)["mean_loss"] for p in (before, after)]
    assert loss[1] < loss[0], loss
