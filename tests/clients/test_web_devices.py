"""Web-client devices (clients/web under Node) against a real aggregator on 127.0.0.1:
they enroll, check in, download the model, train in onnxruntime-web and upload the default
codec; their updates are accepted, carry the deltas a Python client computes from the same
training, and the aggregated model improves."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.evaluator import Evaluator
from edge_sdk.protocol import DEFAULT_CODEC, decode_parameters, decode_update
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan

from ..aggregator.fleet import SECRET, lm_examples, server_with_task
from .node import WEB, node_or_skip

DEVICES, BATCH, LR = 3, 4, 0.5
SETTINGS = {"mode": "sync", "sync": {"goal": DEVICES, "overselect": 1.0},
            "plan": {"epochs": 1, "batch_size": BATCH, "lr": LR}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from model_zoo.zoo import build_bundle
    return Bundle.load(build_bundle("keyboard_cifg_tiny", tmp_path_factory.mktemp("b") / "kb"))


def _python_delta(bundle: Bundle, params: dict, examples: list[dict]) -> dict[str, np.ndarray]:
    trainer = LocalTrainer(bundle, params)
    trainer.train(lambda epoch: examples, TrainingPlan(batch_size=BATCH, schedule=Constant(LR)))
    return trainer.delta(params)


def _f32(doc: dict, bundle: Bundle) -> dict[str, np.ndarray]:
    shapes = {s.name: s.shape for s in bundle.parameter_specs}
    return {k: np.frombuffer(bytes.fromhex(v), "<f4").reshape(shapes[k]) for k, v in doc.items()}


def test_web_devices_train_and_upload_to_a_real_aggregator(bundle, tmp_path):
    node = node_or_skip()
    examples = [lm_examples(i) for i in range(DEVICES)]

    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS, "keyboard") as env:
            job = {"url": env.url, "population": "keyboard", "secret": SECRET,
                   "bundle_dir": str(bundle.path), "task_id": "keyboard",
                   "devices": [{"examples": [{k: v.tolist() for k, v in e.items()} for e in ex]}
                               for ex in examples]}
            proc = await asyncio.create_subprocess_exec(
                node, str(WEB / "tools" / "participate.mjs"), cwd=WEB,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(json.dumps(job).encode()), 300)
            assert proc.returncode == 0, err.decode()[-4000:]
            store = env.service.store
            models = [decode_parameters(store.model_path("keyboard", v).read_bytes(),
                                        bundle.parameter_specs)[1] for v in (0, 1)]
            return json.loads(out), env.service.describe("keyboard"), models

    results, task, (before, after) = asyncio.run(scenario())
    assert [r["status"] for r in results] == ["completed"] * DEVICES, results
    assert all(r["server"]["status"] == "accepted" for r in results)
    assert task["version"] == 1  # the round of DEVICES updates was aggregated
    for r, ex in zip(results, examples):
        js_delta = _f32(r["delta"], bundle)
        py_delta = _python_delta(bundle, before, ex)
        for name, value in py_delta.items():
            np.testing.assert_allclose(js_delta[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
        # the update decodes to the default codec's image of the Python client's delta
        update = decode_update(bytes.fromhex(r["update"]), bundle.parameter_specs, public_key=None)
        assert update.codec == DEFAULT_CODEC and update.meta.device_id == r["device_id"]
        for name, value in py_delta.items():
            got = update.tensors[name].reshape(-1)
            flat = value.reshape(-1)
            k = DEFAULT_CODEC.kept(flat.size)
            top = set(np.argsort(-np.abs(flat), kind="stable")[:k].tolist())
            sent = set(np.flatnonzero(got).tolist())
            assert len(top & sent) >= 0.95 * k, name
            both = np.array(sorted(top & sent))
            step = 2 / 254 * np.abs(flat[both]).max()
            assert np.abs(got[both] - flat[both]).max() <= 1.01 * step, name
    all_examples = [e for ex in examples for e in ex]
    evaluator = Evaluator(bundle)
    loss = [evaluator.evaluate(p, all_examples)["mean_loss"] for p in (before, after)]
    assert loss[1] < loss[0], loss
