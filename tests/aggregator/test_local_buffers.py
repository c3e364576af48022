"""plan.buffers against the real app on 127.0.0.1, with a BatchNorm model: "local" (FedBN)
keeps each device's running statistics on the device and never moves the server's;
"average" averages them like parameters."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.client import FederatedClient
from edge_sdk.eligibility import MinLocalExamples, Policy, RequireCharging
from edge_sdk.example_store import ExampleStore
from edge_sdk.local_buffers import LocalBuffers
from edge_sdk.protocol import decode_parameters, decode_update

from .fleet import (
    create_task,
    enroll_phone,
    full_delta,
    good_state,
    running_server,
    server_with_task,
    signed_update,
)

TASK = "bn"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Linear -> BatchNorm1d -> ReLU -> Linear, compiled on the general path."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from model_zoo.compiler.bundle import compile_bundle

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    batch = {"input": torch.randn(5, 4), "targets": torch.tensor([0, 1, 2, 0, 1])}
    out = compile_bundle(
        model,
        batch,
        loss=nn.CrossEntropyLoss(),
        model_name="bn_mlp",
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        out=tmp_path_factory.mktemp("b") / "bn",
    )
    return Bundle.load(out)


def examples(centre: float, scale: float, seed: int, n: int = 12) -> list[dict]:
    """Features around `centre`: devices with different centres see different statistics."""
    rng = np.random.default_rng(seed)
    return [
        {
            "input": (centre + scale * rng.standard_normal(4)).astype(np.float32),
            "targets": np.array(int(rng.integers(3)), np.int64),
        }
        for _ in range(n)
    ]


def settings(buffers: str, goal: int = 2) -> dict:
    return {
        "mode": "sync",
        "sync": {"goal": goal, "overselect": 1.0},
        "plan": {"epochs": 1, "batch_size": 4, "lr": 0.1, "buffers": buffers},
    }


def models(service, versions: int, bundle: Bundle) -> list[dict[str, np.ndarray]]:
    """The server's stored model of each version below `versions`."""
    return [
        decode_parameters(service.store.model_path(TASK, v).read_bytes(), bundle.parameter_specs)[1]
        for v in range(versions)
    ]


class Recording:
    """A training runner that records the parameters each participation starts from."""

    def __init__(self, inner):
        self.inner, self.started_from = inner, []

    async def train(self, params, examples, plan, check):
        self.started_from.append({k: v.copy() for k, v in params.items()})
        return await self.inner.train(params, examples, plan, check)


def record_uploads(phone) -> list[dict[str, np.ndarray]]:
    """The deltas of every update the phone sends, decoded as the server does."""
    sent, upload = [], phone.transport.upload

    async def recorded(task_id, data):
        sent.append(
            decode_update(data, phone.client.bundle.parameter_specs, public_key=None).tensors
        )
        return await upload(task_id, data)

    phone.transport.upload = recorded
    return sent


def test_local_buffers_stay_on_each_device_and_the_server_never_moves_them(bundle, tmp_path):
    buffers = bundle.buffer_names
    assert set(buffers) == {"1.running_mean", "1.running_var"}

    async def scenario():
        async with server_with_task(tmp_path, bundle, settings("local"), TASK) as env:
            phones = [
                await env.enroll(i, examples(centre, scale, i))
                for i, (centre, scale) in enumerate([(3.0, 1.0), (-2.0, 0.3)])
            ]
            sent = [record_uploads(p) for p in phones]
            runners = []
            for p in phones:
                p.client.download_encoding = None  # float32: the server's exact parameters
                p.client.training = Recording(p.client.training)
                runners.append(p.client.training)
            answers, check_in = [], phones[0].transport.check_in

            async def recorded(*args, **kwargs):
                answers.append(await check_in(*args, **kwargs))
                return answers[-1]

            phones[0].transport.check_in = recorded
            kept = []
            for _ in range(2):
                results = await asyncio.gather(
                    *[p.client.participate(good_state, TASK) for p in phones]
                )
                assert [r.status for r in results] == ["completed"] * 2, results
                kept.append([p.client.buffers.load(TASK) for p in phones])
            # the setting travels in the assignment's plan
            assert [a["assignment"]["plan"]["buffers"] for a in answers] == ["local"] * 2
            assert env.service.describe(TASK)["version"] == 2
            return models(env.service, 3, bundle), sent, runners, kept

    (v0, v1, v2), sent, runners, kept = asyncio.run(scenario())
    for name in buffers:  # the server's buffers are exactly the bundle's
        assert np.array_equal(v2[name], v0[name]), name
    assert any(not np.allclose(v0[k], v2[k]) for k in v0 if k not in buffers)  # it learned
    # each device sent zeros for its buffers and real deltas for the rest
    for updates in sent:
        assert len(updates) == 2
        for delta in updates:
            assert all(not delta[n].any() for n in buffers)
            assert any(delta[k].any() for k in delta if k not in buffers)
    # each device keeps its own statistics, unlike the other's and the server's
    first, second = kept[1]
    for name in buffers:
        assert not np.allclose(first[name], second[name], atol=1e-3), name
        assert not np.allclose(first[name], v0[name], atol=1e-3), name
    # the second participation started from the device's kept values, not the server's
    for runner, mine in zip(runners, kept[0]):
        assert all(np.array_equal(runner.started_from[0][n], v0[n]) for n in buffers)
        assert all(np.array_equal(runner.started_from[1][n], mine[n]) for n in buffers)
        # the parameters it trained from are the server's version 1
        assert all(np.array_equal(runner.started_from[1][k], v1[k]) for k in v1 if k not in buffers)


def test_averaged_buffers_move_on_the_server_and_nothing_stays_on_devices(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, settings("average"), TASK) as env:
            phones = [
                await env.enroll(i, examples(centre, 1.0, i))
                for i, centre in enumerate([3.0, -2.0])
            ]
            sent = [record_uploads(p) for p in phones]
            results = await asyncio.gather(
                *[p.client.participate(good_state, TASK) for p in phones]
            )
            assert [r.status for r in results] == ["completed"] * 2
            return models(env.service, 2, bundle), phones, sent

    (v0, v1), phones, sent = asyncio.run(scenario())
    for name in bundle.buffer_names:
        assert not np.allclose(v1[name], v0[name], atol=1e-4), name
        # the global buffers moved by the example-weighted mean of the devices' deltas
        mean = (sent[0][0][name] + sent[1][0][name]) / 2
        np.testing.assert_allclose(v1[name] - v0[name], mean, atol=1e-5)
    assert all(p.client.buffers.load(TASK) is None for p in phones)


def test_a_restarted_device_trains_from_the_buffers_it_kept(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, settings("local", goal=1), TASK) as env:
            phone = await env.enroll(0, examples(3.0, 1.0, 0))
            assert (await phone.client.participate(good_state, TASK)).status == "completed"
            before = phone.client.buffers.load(TASK)
            phone.client.store.close()  # the app quits
            store = ExampleStore(tmp_path / "phone0.db", clock=env.clock)  # and starts again
            client = FederatedClient(
                bundle,
                phone.transport,
                store,
                phone.identity,
                policy=Policy((RequireCharging(), MinLocalExamples(1))),
                clock=env.clock,
                rng=np.random.default_rng(7),
                collection="keyboard",
            )
            runner = client.training = Recording(client.training)
            assert (await client.participate(good_state, TASK)).status == "completed"
            after = LocalBuffers(store, bundle).load(TASK)
            store.close()
            return models(env.service, 2, bundle), before, runner, after

    (_, v1), before, runner, after = asyncio.run(scenario())
    assert set(before) == set(bundle.buffer_names)
    for name in bundle.buffer_names:
        assert np.array_equal(runner.started_from[0][name], before[name])
        assert not np.allclose(before[name], v1[name], atol=1e-3)  # not the server's
        assert not np.array_equal(after[name], before[name])  # and it moved on again


def test_a_device_whose_buffers_diverged_reports_it_and_keeps_nothing(bundle, tmp_path):
    class Diverging:
        def __init__(self, inner):
            self.inner = inner

        async def train(self, params, examples, plan, check):
            result, delta = await self.inner.train(params, examples, plan, check)
            return result, delta | {"1.running_var": np.full_like(delta["1.running_var"], np.nan)}

    async def scenario():
        async with server_with_task(tmp_path, bundle, settings("local", goal=1), TASK) as env:
            phone = await env.enroll(0, examples(3.0, 1.0, 0))
            phone.client.training = Diverging(phone.client.training)
            result = await phone.client.participate(good_state, TASK)
            return result, phone.client.buffers.load(TASK), env.service.describe(TASK)

    result, kept, task = asyncio.run(scenario())
    assert (result.status, result.reason) == ("aborted", "diverged")
    assert kept is None and task["funnel"]["dropped"]["diverged"] == 1


def test_federated_evaluation_on_a_device_uses_the_buffers_it_kept(bundle, tmp_path):
    from edge_sdk.evaluator import Evaluator

    data = examples(3.0, 1.0, 0)

    async def scenario():
        task = settings("local", goal=1) | {"eval_fraction": 1.0}
        async with server_with_task(tmp_path, bundle, task, TASK) as env:
            phone, other = [
                await enroll_phone(
                    env.url,
                    env.session,
                    bundle,
                    tmp_path,
                    i,
                    env.clock,
                    examples(3.0 - 5 * i, 1.0, i),
                )
                for i in range(2)
            ]
            phone.client.download_encoding = None  # float32: the server's exact parameters
            assert (await phone.client.participate(good_state, TASK)).status == "completed"
            assert "assignment" in await other.transport.check_in(TASK)  # round 2 is full
            reported, submit = [], phone.transport.submit_evaluation

            async def recorded(task_id, version, sums):
                reported.append(sums)
                return await submit(task_id, version, sums)

            phone.transport.submit_evaluation = recorded
            result = await phone.client.participate(good_state, TASK)  # a spare device
            assert result.status == "evaluated" and result.model_version == 1
            return models(env.service, 2, bundle)[1], phone.client.buffers.load(TASK), reported

    v1, kept, (sums,) = asyncio.run(scenario())
    evaluator = Evaluator(bundle)
    with_kept, with_servers = (evaluator.evaluate(p, data) for p in (v1 | kept, v1))
    assert sums["loss_sum"] == pytest.approx(with_kept["loss_sum"], rel=1e-5)
    assert sums["loss_sum"] != pytest.approx(with_servers["loss_sum"], rel=1e-3)


def test_a_bad_buffers_setting_is_refused_with_its_field(bundle, tmp_path):
    from edge_sdk.clock import FakeClock

    async def scenario():
        async with running_server(tmp_path / "data", FakeClock()) as (url, service):
            import aiohttp

            async with aiohttp.ClientSession() as session:
                status, doc = await create_task(
                    session, url, bundle, {"plan": {"buffers": "fedbn"}}, TASK
                )
                assert status == 400, doc
                assert doc["error"]["code"] == "bad_field"
                assert doc["error"]["field"] == "settings.plan.buffers"
                assert "'average'" in doc["error"]["message"]
                assert not service.store.has_task(TASK)  # nothing of it was stored

    asyncio.run(scenario())


def test_the_server_ignores_buffer_deltas_of_a_local_task_whatever_a_device_sends(bundle, tmp_path):
    """A device that does not know the setting (or lies) sends real buffer deltas: the
    global buffers still do not move, under server momentum too."""

    async def scenario():
        task = settings("local", goal=1) | {"server_optimizer": "fedavgm", "server_lr": 1.0}
        async with server_with_task(tmp_path, bundle, task, TASK) as env:
            phone = await env.enroll(0, examples(3.0, 1.0, 0))
            for version in range(2):
                assert "assignment" in await phone.transport.check_in(TASK)
                delta = full_delta(bundle, 0.25)
                data = signed_update(phone, bundle, delta, f"u{version}", version, task_id=TASK)
                assert (await phone.transport.upload(TASK, data))["status"] == "accepted"
            return models(env.service, 3, bundle)

    v0, _, v2 = asyncio.run(scenario())
    for name in bundle.buffer_names:
        assert np.array_equal(v2[name], v0[name]), name
    # the other parameters took both steps and the momentum: 0.25 + (0.9 * 0.25 + 0.25)
    np.testing.assert_allclose(v2["0.bias"] - v0["0.bias"], 0.725, atol=1e-6)
