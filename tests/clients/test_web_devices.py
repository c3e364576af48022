"""Web-client devices (clients/web under Node) against a real aggregator on 127.0.0.1,
two sync rounds: they enroll, check in, download the model, train in onnxruntime-web and
upload the default codec (one device resumably, in chunks); their updates are accepted,
carry the deltas a Python client computes from the same training plus the error feedback
of the round before, and the aggregated model improves."""

from __future__ import annotations

import asyncio

import pytest

from edge_sdk.evaluator import Evaluator
from edge_sdk.protocol import decode_parameters

from ..aggregator.fleet import SECRET, lm_examples, server_with_task
from .checks import BATCH, DEVICES, LR, SETTINGS, assert_same_training, python_delta
from .node import node_or_skip, run_tool_async


@pytest.mark.slow  # ~30 s on the shared VM: a bundle compile, Node and two rounds
def test_web_devices_train_and_upload_to_a_real_aggregator(bundle, tmp_path):
    node_or_skip()  # skip before compiling a bundle when Node cannot run
    examples = [lm_examples(i) for i in range(DEVICES)]

    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS, "keyboard") as env:
            job = {
                "url": env.url,
                "population": "keyboard",
                "secret": SECRET,
                "bundle_dir": str(bundle.path),
                "task_id": "keyboard",
                "rounds": 2,
                "devices": [
                    {
                        "examples": [{k: v.tolist() for k, v in e.items()} for e in ex],
                        "single_request_bytes": 1024 if i == 0 else None,
                    }
                    for i, ex in enumerate(examples)
                ],
            }
            answer = await run_tool_async("participate.mjs", job)
            store = env.service.store
            models = [
                decode_parameters(
                    store.model_path("keyboard", v).read_bytes(), bundle.parameter_specs
                )[1]
                for v in (0, 1, 2)
            ]
            return answer, env.service.describe("keyboard"), models

    results, task, models = asyncio.run(scenario())
    assert [r["status"] for r in results] == ["completed"] * 2 * DEVICES, results
    assert all(r["server"]["status"] == "accepted" for r in results)
    assert results[0]["bytes_up"] > 1024  # so device 0 sent it in chunks
    assert task["version"] == 2  # each round of DEVICES updates was aggregated
    for i, ex in enumerate(examples):
        first, second = (r for r in results if r["device"] == i)
        residual = assert_same_training(
            bundle, first, python_delta(bundle, models[0], ex, BATCH, LR)
        )
        assert_same_training(
            bundle, second, python_delta(bundle, models[1], ex, BATCH, LR), residual
        )
    all_examples = [e for ex in examples for e in ex]
    evaluator = Evaluator(bundle)
    loss = [evaluator.evaluate(p, all_examples)["mean_loss"] for p in models]
    assert loss[2] < loss[1] < loss[0], loss
