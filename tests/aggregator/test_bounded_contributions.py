"""Bounded contributions, against the real app on 127.0.0.1 with enrolled devices and
signed updates: a decoded update must be finite and within the task's L2 norm bound
(400 with a code, counted in the funnel, nothing stored); the weight a device claims is
capped per task; an aggregate that is not finite never becomes a version, and the
server restarts and serves after such an attempt."""

from __future__ import annotations

import asyncio
import json
import math

import aiohttp
import numpy as np
import pytest

from aggregator.service.commits import mean_metrics
from edge_sdk.protocol import (
    DEFAULT_CODEC,
    CodecSpec,
    decode_parameters,
)
from edge_sdk.protocol.codec import _layout, encode_tensor, tensor_seed
from edge_sdk.protocol.message import UPDATE_MAGIC, _frame

from .fleet import (
    ServerProcess,
    admin,
    create_task,
    free_port,
    good_state,
    normal_delta,
    server_with_task,
    signed_update,
)


def _meta(bundle, phone, key: str, version: int = 0, examples=5, metrics=None) -> dict:
    return {
        "task_id": "kb",
        "model_id": bundle.model_id,
        "model_version": version,
        "device_id": phone.identity.device_id,
        "idempotency_key": key,
        "num_examples": examples,
        "metrics": metrics or {},
    }


def _signed(phone, meta: dict, payloads: list[bytes], codec: CodecSpec, seed: int = 7) -> bytes:
    """A signed update framed as a device would, with metadata and payloads as given (no
    check on the sending side: what a hostile device can send)."""
    header = {"meta": meta, "codec": codec.to_json(), "seed": seed, "local_dp": None}
    return _frame(UPDATE_MAGIC, header, payloads, phone.identity.signing_key, codec.zstd_level)


def _float32_payloads(bundle, value: float) -> list[bytes]:
    return [np.full(s.shape, value, "<f4").tobytes() for s in bundle.parameter_specs]


def _default_codec_payloads(bundle, scale: float | None, seed: int = 7) -> list[bytes]:
    """Default-codec (top-k int8, block indices) payloads of a small delta; with `scale`,
    every chunk scale is replaced by it and every level set to the middle (127), which
    decodes to ~0 in exact arithmetic: the scales alone carry the attack."""
    rng = np.random.default_rng(1)
    out = []
    for i, s in enumerate(bundle.parameter_specs):
        x = rng.normal(0, 0.01, s.shape).astype(np.float32)
        payload, _ = encode_tensor(x, DEFAULT_CODEC, tensor_seed(seed, i), rng)
        if scale is not None:
            layout = _layout(DEFAULT_CODEC, int(np.prod(s.shape)))
            raw = bytearray(payload)
            at = layout.index_bytes
            raw[at : at + 4 * layout.chunks] = np.full(layout.chunks, scale, "<f4").tobytes()
            raw[at + 4 * layout.chunks :] = bytes([127]) * layout.k
            payload = bytes(raw)
        out.append(payload)
    return out


async def _post(session, url: str, phone, data: bytes) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {phone.transport.token}"}
    async with session.post(url + "/v1/tasks/kb/updates", data=data, headers=headers) as r:
        return r.status, await r.json()


def _stored_updates(service) -> int:
    return len(service.store.pending_updates("kb"))


def test_unbounded_updates_are_refused_with_a_code_counted_and_never_stored(bundle, tmp_path):
    async def scenario():
        settings = {"mode": "sync", "sync": {"goal": 2, "overselect": 1.0}}
        async with server_with_task(tmp_path, bundle, settings) as env:
            phone = await env.enroll(0)
            assert "assignment" in await phone.transport.check_in("kb")
            attacks = {
                "float32 of all 1e38": (
                    _float32_payloads(bundle, 1e38),
                    CodecSpec(),
                    400,
                    "update_norm_exceeded",
                ),
                "default codec, scales 3e38": (
                    _default_codec_payloads(bundle, 3e38),
                    DEFAULT_CODEC,
                    400,
                    "update_norm_exceeded",
                ),
                "float32 with a NaN": (
                    _float32_payloads(bundle, float("nan")),
                    CodecSpec(),
                    400,
                    "update_not_finite",
                ),
                "float32 with an Inf": (
                    _float32_payloads(bundle, float("inf")),
                    CodecSpec(),
                    400,
                    "update_not_finite",
                ),
                "default codec, an Inf scale": (
                    _default_codec_payloads(bundle, float("inf")),
                    DEFAULT_CODEC,
                    400,
                    "update_not_finite",
                ),
            }
            for i, (name, (payloads, codec, status, code)) in enumerate(attacks.items()):
                data = _signed(phone, _meta(bundle, phone, f"attack-{i}"), payloads, codec)
                got, doc = await _post(env.session, env.url, phone, data)
                assert (got, doc["error"]["code"]) == (status, code), name
            funnel = env.service.describe("kb")["funnel"]
            assert funnel["rejected"] == {"norm_exceeded": 2, "not_finite": 3}
            assert funnel["accepted"] == 0 and _stored_updates(env.service) == 0
            assert not list((tmp_path / "data" / "updates").rglob("*.eflu"))
            # the same device's honest update (default codec) is then accepted
            honest = _signed(
                phone,
                _meta(bundle, phone, "honest"),
                _default_codec_payloads(bundle, None),
                DEFAULT_CODEC,
            )
            got, doc = await _post(env.session, env.url, phone, honest)
            assert got == 200 and doc["status"] == "accepted"
            assert _stored_updates(env.service) == 1

    asyncio.run(scenario())


def test_the_norm_bound_is_the_tasks_and_can_be_turned_off(bundle, tmp_path):
    async def scenario():
        settings = {"mode": "sync", "sync": {"goal": 3, "overselect": 1.0}, "max_update_norm": 0.5}
        async with server_with_task(tmp_path, bundle, settings) as env:
            phone = await env.enroll(0)
            await phone.transport.check_in("kb")
            size = sum(int(np.prod(s.shape)) for s in bundle.parameter_specs)
            value = 1.0 / math.sqrt(size)  # an update of norm exactly 1
            data = _signed(
                phone, _meta(bundle, phone, "k1"), _float32_payloads(bundle, value), CodecSpec()
            )
            got, doc = await _post(env.session, env.url, phone, data)
            assert got == 400 and doc["error"]["code"] == "update_norm_exceeded"
            assert doc["error"]["max_update_norm"] == 0.5
            assert doc["error"]["norm"] == pytest.approx(1.0, rel=1e-4)
            half = _signed(
                phone,
                _meta(bundle, phone, "k2"),
                _float32_payloads(bundle, value * 0.49),
                CodecSpec(),
            )
            assert (await _post(env.session, env.url, phone, half))[1]["status"] == "accepted"
            refused = {
                "max_update_norm": (0, -1.0, 1e300, "1", True),
                "max_examples": (0, 2**31 + 1, 10.5, True),
            }
            for field, values in refused.items():
                for bad in values:
                    settings = {field: bad}
                    status, doc = await create_task(env.session, env.url, bundle, settings, "bad")
                    assert status == 400 and field in doc["error"]["message"], bad

    asyncio.run(scenario())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_a_huge_claimed_weight_is_capped_and_no_longer_sets_the_step(bundle, tmp_path):
    async def scenario():
        settings = {"mode": "sync", "sync": {"goal": 10, "overselect": 1.0}, "max_examples": 500}
        async with server_with_task(tmp_path, bundle, settings) as env:
            phones = [await env.enroll(i) for i in range(10)]
            for phone in phones:
                await phone.transport.check_in("kb")
            before = {k: v.copy() for k, v in env.service.tasks["kb"].parameters.items()}
            rng = np.random.default_rng(3)
            deltas = [normal_delta(bundle, rng) for _ in phones]
            # 10**400 and 1e400 (Infinity in JSON) are refused as bad metadata, not a 500
            for examples in (10**400, float("inf"), 0, -3, 2**53 + 1, True):
                data = _signed(
                    phones[0],
                    _meta(bundle, phones[0], "huge", examples=examples),
                    _float32_payloads(bundle, 0.001),
                    CodecSpec(),
                )
                got, doc = await _post(env.session, env.url, phones[0], data)
                assert (got, doc["error"]["code"]) == (400, "malformed_header"), examples
            for i, (phone, delta) in enumerate(zip(phones, deltas)):
                claim = 10**15 if i == 0 else 400
                data = signed_update(phone, bundle, delta, f"u{i}", examples=claim, rng=rng)
                answer = await phone.transport.upload("kb", data)
                assert answer["weight"] == (500 if i == 0 else 400)
            assert env.service.tasks["kb"].coordinator.version == 1
            after = env.service.tasks["kb"].parameters
            step = np.concatenate([(after[k] - before[k]).ravel() for k in sorted(after)])
            flat = [np.concatenate([d[k].ravel() for k in sorted(after)]) for d in deltas]
            # example-weighted mean with the claim capped: 500 against 9 x 400
            expected = (500 * flat[0] + 400 * sum(flat[1:])) / (500 + 9 * 400)
            np.testing.assert_allclose(step, expected, atol=1e-6)
            assert _cosine(step, flat[0]) < 0.5

    asyncio.run(scenario())


def test_metric_values_are_checked_finite_and_bounded(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, {"mode": "sync"}) as env:
            phone = await env.enroll(0)
            await phone.transport.check_in("kb")
            for metrics in (
                {"loss": 1e13},
                {"loss": 10**400},
                {"loss": True},
                {"\ud800": 1.0},
                {"x" * 65: 1.0},
            ):
                data = _signed(
                    phone,
                    _meta(bundle, phone, "m", metrics=metrics),
                    _float32_payloads(bundle, 0.001),
                    CodecSpec(),
                )
                got, doc = await _post(env.session, env.url, phone, data)
                assert (got, doc["error"]["code"]) == (400, "malformed_header"), metrics

    asyncio.run(scenario())


def test_averaged_metrics_never_become_infinity():
    rows = [{"loss": 1e308, "acc": 0.5}, {"loss": 1e308, "acc": 0.7}, {"acc": float("nan")}]
    means = mean_metrics(rows[:2])
    assert means == {"acc": pytest.approx(0.6)}  # the float64 mean of loss overflows: left out
    json.loads(json.dumps(mean_metrics(rows)), parse_constant=_refuse)
    # rows stored before the door checked metrics: never a crash at a commit or start-up
    assert mean_metrics([{"loss": 10**400}, {"loss": "x"}, {"loss": 1.0, "n": 2}]) == {"n": 2.0}


def _refuse(token: str):
    raise AssertionError(f"{token} in a JSON document")


def _strict_json(text: str):
    return json.loads(text, parse_constant=_refuse)


def test_a_version_that_would_not_be_finite_is_refused_and_the_server_restarts(bundle, tmp_path):
    """The norm bound off, an update of all 1e38 is accepted; weighted, the sum overflows
    float32, so the version is refused: an event with the reason, the previous model kept
    and served, the round started over. Killed and restarted, the server serves, and the
    task goes on to commit a finite version 1."""
    server = ServerProcess(tmp_path / "data", free_port())
    settings = {
        "mode": "async",
        "max_update_norm": None,
        "async_": {"buffer_size": 1, "concurrency": 5},
    }

    async def first_life():
        async with aiohttp.ClientSession() as session:
            status, doc = await create_task(session, server.url, bundle, settings)
            assert status == 201, doc
            phone = await server.enroll(session, bundle, tmp_path, 0)
            assert "assignment" in await phone.transport.check_in("kb")
            data = _signed(
                phone, _meta(bundle, phone, "big"), _float32_payloads(bundle, 1e38), CodecSpec()
            )
            got, doc = await _post(session, server.url, phone, data)
            assert got == 200 and doc["status"] == "accepted" and doc["version"] == 0
            _, task = await admin(session, server.url, "GET", "/v1/admin/tasks/kb")
            return task

    async def second_life():
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/v1/status") as r:
                assert r.status == 200
                status = _strict_json(await r.text())
            (task,) = status["tasks"]
            assert task["version"] == 0
            refused = [e for e in task["events"] if e["event"] == "version_refused"]
            assert [(e["version"], e["reason"]) for e in refused] == [(1, "aggregate_not_finite")]
            phone = await server.enroll(session, bundle, tmp_path, 1)
            assert "assignment" in await phone.transport.check_in("kb")
            model = await phone.transport.download_model("kb", 0)
            decode_parameters(model, bundle.parameter_specs)  # finite, or it raises
            result = await phone.client.participate(good_state, "kb")
            assert result.status == "completed", result
            async with session.get(server.url + "/v1/status") as r:
                (task,) = _strict_json(await r.text())["tasks"]
            assert task["version"] == 1

    try:
        server.start(tick_interval_s=0.05)
        task = asyncio.run(first_life())
        assert task["version"] == 0 and task["accepted"] == 0
        server.kill9()
        assert not (tmp_path / "data" / "models" / "kb" / "v1.eflm").exists()
        assert not list((tmp_path / "data" / "updates").rglob("*.eflu"))
        server.start(tick_interval_s=0.05)
        asyncio.run(second_life())
    finally:
        server.stop()
