"""FedBN from the browser: web-client devices (clients/web under Node) in a task whose
plan says `buffers: "local"`, against a real aggregator on 127.0.0.1, two sync rounds.
Each device trains from its own running statistics (the server's the first time),
sends zeros for them, and keeps the values its training reached: the same values
edge_sdk's trainer reaches from the same start and data, within 1e-5. The global
model's buffers never change."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge_sdk.protocol import decode_parameters, decode_update

from ..aggregator.fleet import SECRET, server_with_task
from .checks import f32, python_delta
from .node import node_or_skip, run_tool_async
from .test_web_buffers import CLASSES, FEATURES, _bundle

DEVICES, BATCH, LR, EXAMPLES = 2, 4, 0.1, 8
SETTINGS = {
    "mode": "sync",
    "sync": {"goal": DEVICES, "overselect": 1.0},
    "plan": {"epochs": 1, "batch_size": BATCH, "lr": LR, "buffers": "local"},
}


def _examples(device: int) -> list[dict]:
    rng = np.random.default_rng(device)
    shift = 3.0 * device  # each device's inputs have their own statistics
    return [
        {
            "x": (rng.normal(size=FEATURES) + shift).astype(np.float32),
            "targets": np.int64(rng.integers(CLASSES)),
        }
        for _ in range(EXAMPLES)
    ]


@pytest.mark.slow  # ~25 s on the shared VM: a bundle compile, Node and two rounds
def test_web_devices_keep_their_own_batchnorm_statistics(tmp_path):
    node_or_skip()  # skip before compiling a bundle when Node cannot run
    bundle = _bundle(tmp_path / "bn")
    buffers = bundle.buffer_names
    examples = [_examples(i) for i in range(DEVICES)]

    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS, "bn") as env:
            job = {
                "url": env.url,
                "population": "keyboard",
                "secret": SECRET,
                "bundle_dir": str(bundle.path),
                "task_id": "bn",
                "rounds": 2,
                "devices": [
                    {"examples": [{"x": e["x"].tolist(), "targets": int(e["targets"])} for e in ex]}
                    for ex in examples
                ],
            }
            answer = await run_tool_async("participate.mjs", job)
            store = env.service.store
            models = [
                decode_parameters(store.model_path("bn", v).read_bytes(), bundle.parameter_specs)[1]
                for v in (0, 1, 2)
            ]
            return answer, models

    results, models = asyncio.run(scenario())
    assert [r["status"] for r in results] == ["completed"] * 2 * DEVICES, results
    for name in buffers:  # the aggregate never moves them
        assert np.array_equal(models[0][name], models[1][name])
        assert np.array_equal(models[0][name], models[2][name])
    for i, ex in enumerate(examples):
        first, second = (r for r in results if r["device"] == i)
        own = {n: models[0][n] for n in buffers}  # the server's statistics the first time
        for result, model in ((first, models[0]), (second, models[1])):
            start = model | own
            expected = python_delta(bundle, start, ex, BATCH, LR)
            sent = f32(result["delta"], bundle)
            update = decode_update(
                bytes.fromhex(result["update"]), bundle.parameter_specs, public_key=None
            )
            for name in buffers:  # zeros leave the device
                assert not sent[name].any() and not update.tensors[name].any()
            for name in set(expected) - set(buffers):
                np.testing.assert_allclose(sent[name], expected[name], rtol=1e-4, atol=1e-6)
            kept = f32(result["kept_buffers"], bundle)
            own = {n: start[n] + expected[n] for n in buffers}  # what the SDK reaches
            for name in buffers:
                np.testing.assert_allclose(kept[name], own[name], rtol=1e-5, atol=1e-5)
    # the devices' data differ, and so do the statistics each keeps
    kept = [f32(r["kept_buffers"], bundle) for r in results if r["round"] == 1]
    assert not np.allclose(kept[0][buffers[0]], kept[1][buffers[0]])
