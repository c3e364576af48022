"""The real app on 127.0.0.1 with real edge_sdk clients over HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge_sdk.protocol import decode_parameters
from edge_sdk.transport import ServerRejected

from .fleet import (
    admin,
    full_delta,
    good_state,
    lm_examples,
    normal_delta,
    server_with_task,
    signed_update,
)


def _settings(mode, **kw):
    base = {"mode": mode, "plan": {"epochs": 1, "batch_size": 4, "lr": 0.5}}
    return base | kw


async def _model_version(session, url, task):
    status, doc = await admin(session, url, "GET", f"/v1/admin/tasks/{task}")
    return doc


def _after(event: asyncio.Event, upload):
    async def gated(*args, **kwargs):
        await event.wait()
        return await upload(*args, **kwargs)

    return gated


def test_sync_rounds_complete_with_30_percent_of_selected_devices_dropping(
    bundle, tmp_path, store_url
):
    async def scenario():
        settings = _settings("sync", sync={"goal": 4, "overselect": 1.5, "min_fraction": 0.75})
        async with server_with_task(tmp_path, bundle, settings, store_url=store_url) as env:
            url, service, session = env.url, env.service, env.session
            for round_ in range(2):
                phones = [await env.enroll(10 * round_ + i, lm_examples(i)) for i in range(8)]
                # two of the six selected drop: one goes silent after check-in, one loses
                # charging mid-training and reports it
                silent = await phones[0].transport.check_in("kb")
                assert "assignment" in silent
                charging = iter([True] * 2 + [False] * 100)
                # the completers upload only once the flaky device has reported its abort:
                # otherwise, under load, they can fill the round before its report arrives
                reported = asyncio.Event()
                for p in phones[2:]:
                    p.transport.upload = _after(reported, p.transport.upload)

                async def flaky():
                    try:
                        return await phones[1].client.participate(
                            lambda: good_state(charging=next(charging)), "kb"
                        )
                    finally:
                        reported.set()

                rest = [p.client.participate(good_state, "kb") for p in phones[2:]]
                results = await asyncio.gather(flaky(), *rest)
                assert results[0].status == "aborted" and results[0].reason == "not_charging"
                statuses = [r.status for r in results[1:]]
                assert statuses.count("completed") == 4 and statuses.count("later") == 2
            doc = await _model_version(session, url, "kb")
            assert doc["version"] == 2
            assert doc["funnel"]["dropped"]["not_charging"] == 2
            assert (
                doc["funnel"]["dropped"]["round_full"] == 2
            )  # the silent ones, not needed at commit
            assert [v["version"] for v in doc["versions"]] == [0, 1, 2]
            assert "mean_loss" in doc["versions"][1]["metrics"]
            # the model really moved, and devices download it with its version
            v0 = decode_parameters(
                service.store.model_path("kb", 0).read_bytes(), bundle.parameter_specs
            )[1]
            v2 = decode_parameters(
                service.store.model_path("kb", 2).read_bytes(), bundle.parameter_specs
            )[1]
            assert any(not np.allclose(v0[k], v2[k]) for k in v0)

    asyncio.run(scenario())


def test_async_task_publishes_versions_while_devices_come_and_go(bundle, tmp_path):
    async def scenario():
        settings = _settings(
            "async", async_={"concurrency": 3, "buffer_size": 2, "max_staleness": 3}
        )
        async with server_with_task(tmp_path, bundle, settings) as env:
            url, session, clock = env.url, env.session, env.clock
            phones = [await env.enroll(i) for i in range(9)]
            outcomes = []
            for wave in range(3):  # devices come (check in, train, upload) and go
                results = await asyncio.gather(
                    *[
                        p.client.participate(good_state, "kb")
                        for p in phones[3 * wave : 3 * wave + 3]
                    ]
                )
                outcomes += results
                clock.advance(60)
            completed = [r for r in outcomes if r.status == "completed"]
            assert len(completed) >= 6
            assert (
                max(r.server["staleness"] for r in completed) >= 1
            )  # some trained on old versions
            doc = await _model_version(session, url, "kb")
            assert doc["version"] == len(completed) // 2

    asyncio.run(scenario())


def test_a_retried_upload_is_counted_once(bundle, tmp_path, store_url):
    async def scenario():
        settings = _settings("sync", sync={"goal": 2, "overselect": 1.0})
        async with server_with_task(tmp_path, bundle, settings, store_url=store_url) as env:
            service = env.service
            phones = [await env.enroll(i) for i in range(2)]
            assignment = (await phones[0].transport.check_in("kb"))["assignment"]
            data = signed_update(phones[0], bundle, full_delta(bundle, 0.01), "once")
            first = await phones[0].transport.upload("kb", data)
            again = await phones[0].transport.upload("kb", data)
            assert first["status"] == "accepted" and again["status"] == "duplicate"
            assert service.tasks["kb"].coordinator.accepted == 1
            assert assignment["model_version"] == 0
            # the second device completes the round; a replay after the commit is still a duplicate
            await phones[1].client.participate(good_state, "kb")
            assert service.tasks["kb"].coordinator.version == 1
            late = await phones[0].transport.upload("kb", data)
            assert late["status"] == "duplicate" and late["aggregated_into"] == 1

    asyncio.run(scenario())


def test_bad_requests_get_clear_4xx_codes(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, _settings("sync")) as env:
            url, service, session = env.url, env.service, env.session
            phone = await env.enroll(0)
            other = await env.enroll(1)
            async with session.post(url + "/v1/checkin", json={}) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
            async with session.post(
                url + "/v1/admin/tasks", json={}, headers={"X-Admin-Token": "wrong-token-xxxxxx"}
            ) as r:
                assert r.status == 403
            with pytest.raises(ServerRejected) as e:
                await phone.transport.upload("kb", b"not an update" * 10)
            assert e.value.status == 400 and e.value.code == "bad_magic"
            # a forged update: signed by another device's key, sent by this device
            await phone.transport.check_in("kb")
            delta = full_delta(bundle, 0.0)
            forged = signed_update(
                phone, bundle, delta, "forged", signing_key=other.identity.signing_key
            )
            with pytest.raises(ServerRejected) as e:
                await phone.transport.upload("kb", forged)
            assert e.value.code == "bad_signature"
            data = signed_update(phone, bundle, delta, "stale", version=7)
            with pytest.raises(ServerRejected) as e:
                await phone.transport.upload("kb", data)
            assert e.value.status == 409 and e.value.details["current_version"] == 0
            assert service.tasks["kb"].coordinator.accepted == 0
            assert not service.store.pending_updates("kb")  # nothing bad was stored
            # an admin call with a device token, and an oversized body
            async with session.get(
                url + "/v1/admin/tasks",
                headers={"Authorization": f"Bearer {phone.transport.token}"},
            ) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
            async with session.post(
                url + "/v1/tasks/kb/updates",
                data=b"x" * (33 * 2**20),
                headers={"Authorization": f"Bearer {phone.transport.token}"},
            ) as r:
                assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large"
            # a shape mismatch: an update for another model's parameter list
            wrong = [
                {"name": s.name, "shape": [int(d) + 1 for d in s.shape]}
                for s in bundle.parameter_specs
            ]
            odd = {w["name"]: np.zeros(w["shape"], np.float32) for w in wrong}
            data = signed_update(phone, bundle, odd, "odd", specs=wrong)
            with pytest.raises(ServerRejected) as e:
                await phone.transport.upload("kb", data)
            assert e.value.status == 400 and e.value.code == "shape_mismatch"
            async with session.get(url + "/metrics") as r:
                text = await r.text()
            # refused before reaching the task: a refused request, not an update outcome
            assert 'edgefl_requests_refused_total{code="bad_signature"} 1.0' in text

    asyncio.run(scenario())


def test_a_large_update_uploads_resumably_across_an_interruption(bundle, tmp_path, store_url):
    async def scenario():
        # N(0, 1) noise: the least compressible bytes, with a norm far over the default bound
        settings = _settings("sync", sync={"goal": 1, "overselect": 1.0}) | {
            "max_update_norm": None
        }
        async with server_with_task(tmp_path, bundle, settings, store_url=store_url) as env:
            service = env.service
            phone = await env.enroll(0)
            await phone.transport.check_in("kb")
            rng = np.random.default_rng(0)
            delta = normal_delta(bundle, rng, scale=1.0)
            data = signed_update(phone, bundle, delta, "big", rng=rng)
            t = phone.transport
            t.chunk_bytes = len(data) // 5 + 1
            import hashlib

            start = await t._request(
                "POST",
                "/v1/tasks/kb/uploads",
                json={"size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
            )
            path = f"/v1/uploads/{start['upload_id']}"
            first = await t._request("PUT", path, data=data[:1000], params={"offset": "0"})
            assert first["received"] == 1000
            again = await t._request("PUT", path, data=data[:1000], params={"offset": "0"})
            assert again["received"] == 1000  # a repeated chunk is acknowledged, not appended
            with pytest.raises(ServerRejected) as gap:
                await t._request("PUT", path, data=data[5000:6000], params={"offset": "5000"})
            assert gap.value.status == 409 and gap.value.details["received"] == 1000
            # the connection died here; the device asks how far it got and finishes
            status = await t._request("GET", path)
            rest = data[status["received"] :]
            await t._request("PUT", path, data=rest, params={"offset": str(status["received"])})
            result = await t._request("POST", path + "/commit")
            assert result["status"] == "accepted" and service.tasks["kb"].coordinator.version == 1
            # and the client's own resumable path, forced by a tiny single-request limit
            await phone.transport.check_in("kb")
            data2 = signed_update(phone, bundle, delta, "big2", version=1, rng=rng)
            t.single_request_bytes = 1000
            assert (await t.upload("kb", data2))["status"] == "accepted"
            assert service.tasks["kb"].coordinator.version == 2

    asyncio.run(scenario())


def test_spare_devices_evaluate_the_global_model_and_report_metrics(bundle, tmp_path):
    async def scenario():
        settings = _settings("sync", sync={"goal": 2, "overselect": 1.0}) | {"eval_fraction": 1.0}
        async with server_with_task(tmp_path, bundle, settings) as env:
            service = env.service
            phones = [await env.enroll(i) for i in range(5)]
            # two train; the other three are not needed for the round and evaluate version 0
            trainers = [await p.transport.check_in("kb") for p in phones[:2]]
            assert all("assignment" in t for t in trainers)
            results = [await p.client.participate(good_state, "kb") for p in phones[2:]]
            assert [r.status for r in results] == ["evaluated"] * 3
            assert all(r.server["status"] == "recorded" for r in results)
            again = await phones[2].transport.submit_evaluation("kb", 0, {"count": 1.0})
            assert again["status"] == "duplicate"
            with pytest.raises(ServerRejected) as e:  # nobody asked this device to evaluate v5
                await phones[0].transport.submit_evaluation("kb", 5, {"count": 1.0})
            assert e.value.code == "not_selected"
            history = service.history("kb")["federated_evaluation"]
            expected = sum(sum(len(x["targets"]) for x in lm_examples(i)) for i in range(2, 5))
            assert history[0]["version"] == 0 and history[0]["devices"] == 3
            assert history[0]["count"] == expected
            assert 0 <= history[0]["correct_rate"] <= history[0]["correct_top3_rate"] <= 1

    asyncio.run(scenario())


def test_the_server_learning_rate_steps_down_at_the_configured_versions(bundle, tmp_path):
    """FedAvg with lr 1 then 0.5 from version 1 on: the same delta of 0.01 moves the
    model by 0.01, then by 0.005."""

    async def scenario():
        settings = _settings(
            "sync",
            sync={"goal": 1, "overselect": 1.0, "min_fraction": 1.0},
            server_lr_decay={"at": [1], "factor": 0.5},
        )
        async with server_with_task(tmp_path, bundle, settings) as env:
            phone = await env.enroll(0)
            delta = full_delta(bundle, 0.01)
            for version in range(2):
                await phone.transport.check_in("kb")
                data = signed_update(phone, bundle, delta, f"step{version}", version=version)
                assert (await phone.transport.upload("kb", data))["status"] == "accepted"
            return [
                decode_parameters(
                    env.service.model_file("kb", v)[1].read_bytes(), bundle.parameter_specs
                )[1]
                for v in range(3)
            ]

    models = asyncio.run(scenario())
    name = bundle.parameter_specs[0].name
    np.testing.assert_allclose(models[1][name] - models[0][name], 0.01, atol=1e-6)
    np.testing.assert_allclose(models[2][name] - models[1][name], 0.005, atol=1e-6)


@pytest.mark.parametrize(
    "decay",
    [
        {"at": [5, 3], "factor": 0.5},
        {"at": [5], "factor": 1.5},
        {"at": [], "factor": 0.5},
        {"every": 5},
    ],
)
def test_a_bad_learning_rate_decay_is_refused_with_its_shape(decay):
    from aggregator.config import TaskSettings

    with pytest.raises(ValueError, match="settings.server_lr_decay"):
        TaskSettings.from_json({"server_lr_decay": decay})
