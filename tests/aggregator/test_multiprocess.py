"""Two real `edge-fl serve` processes on 127.0.0.1 share one PostgreSQL database: a device
enrolled through one is authenticated by the other, either process answers any device
(task-scoped calls are forwarded to the leader), and when the leader is killed (-9) in
the middle of a stream of uploads the other takes the task over: every acknowledged
update counted exactly once, versions only moving forward."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np

from edge_sdk.errors import TransportError
from edge_sdk.protocol import decode_parameters
from edge_sdk.transport import ServerRejected

from .fleet import (
    ServerProcess,
    admin,
    create_task,
    enroll_phone,
    free_port,
    lm_examples,
    normal_delta,
    signed_update,
)

GOAL = 3


def _query(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_two_processes_share_one_database_and_one_takes_over_when_the_leader_dies(
    bundle, tmp_path, postgres
):
    db = postgres.new_database()
    servers = [ServerProcess(tmp_path / name, free_port(), store_url=db) for name in "ab"]
    acknowledged: set[str] = set()
    seen_versions: dict[int, list[int]] = {}  # phone -> model versions it was assigned
    served_by: dict[str, int] = {}  # base url -> assignments it handed out
    sizes: list[int] = []  # of the updates sent
    try:
        for server in servers:
            server.start(tick_interval_s=0.1, rate_per_s=1000.0, burst=1000)
        first = servers[0]
        settings = {
            "mode": "sync",
            "sync": {"goal": GOAL, "overselect": 1.0},
            "retry_min_s": 0.0,
            "retry_max_s": 0.1,
        }

        async def scenario():
            async with aiohttp.ClientSession() as session:
                status, doc = await create_task(session, first.url, bundle, settings)
                assert status == 201, doc
                # every phone enrolls through the first process...
                phones = [await first.enroll(session, bundle, tmp_path, i) for i in range(8)]
                while not (rows := _query(db, "SELECT url FROM leaders WHERE task_id = 'kb'")):
                    await asyncio.sleep(0.05)  # the process that got the lock records its URL
                leader = next(s for s in servers if s.url == rows[0][0])
                survivor = next(s for s in servers if s is not leader)
                # ...half of them talk to the follower, which knows their tokens, asks the
                # leader for them, and takes their updates in chunks (resumable uploads)
                for phone in phones[::2]:
                    phone.transport.base_url = survivor.url
                    phone.transport.single_request_bytes = phone.transport.chunk_bytes = 4096
                for _ in range(100):  # under load the leader may not have opened the round yet
                    answer = await phones[0].transport.check_in()  # any task
                    if "assignment" in answer:
                        break
                    await asyncio.sleep(0.1)
                assert "assignment" in answer, answer
                # the follower serves the model from the shared store and describes the task
                async with session.get(
                    survivor.url + "/v1/tasks/kb/model",
                    headers={"Authorization": f"Bearer {phones[1].transport.token}"},
                ) as r:
                    assert r.status == 200 and r.headers["X-Model-Version"] == "0"
                    decode_parameters(await r.read(), bundle.parameter_specs)
                status, doc = await admin(session, survivor.url, "GET", "/v1/admin/tasks/kb")
                assert status == 200 and not doc["led_here"] and doc["in_flight"] == 1
                killed_at: list[int] = []
                through_follower: set[str] = set()  # acknowledged, sent to the follower
                rng = np.random.default_rng(0)

                async def one(index: int, phone):
                    for j in range(200):
                        if (
                            killed_at
                            and len(acknowledged) >= 8 * GOAL
                            or time.monotonic() > deadline
                        ):
                            return
                        try:
                            answer = await phone.transport.check_in(
                                None if index % 2 == 0 else "kb"
                            )
                            if "assignment" not in answer:
                                await asyncio.sleep(0.05)
                                continue
                            version = answer["assignment"]["model_version"]
                            seen_versions.setdefault(index, []).append(version)
                            where = phone.transport.base_url + ("" if killed_at else " before")
                            served_by[where] = served_by.get(where, 0) + 1
                            delta = normal_delta(bundle, rng)
                            key = f"update-{index}-{j}"
                            data = signed_update(phone, bundle, delta, key, version, 3, rng=rng)
                            sizes.append(len(data))
                            while True:  # a device retries its update until it is answered
                                try:
                                    result = await phone.transport.upload("kb", data)
                                    break
                                except TransportError as e:
                                    if isinstance(e, ServerRejected) or time.monotonic() > deadline:
                                        raise
                                    phone.transport.base_url = survivor.url  # the balancer moves it
                            assert result["status"] in ("accepted", "duplicate"), result
                            acknowledged.add(key)
                            if not killed_at and phone.transport.base_url == survivor.url:
                                through_follower.add(key)
                        except ServerRejected as e:  # e.g. reported already in this round
                            assert e.code in ("not_selected", "round_closed", "stale_version"), e
                            await asyncio.sleep(0.05)
                        except TransportError:  # its server died under its check-in
                            phone.transport.base_url = survivor.url

                async def killer():
                    while len(acknowledged) < 2 * GOAL + 1 or len(through_follower) < 2:
                        if time.monotonic() > deadline:
                            return
                        await asyncio.sleep(0.01)
                    leader.kill9()
                    killed_at.append(len(acknowledged))

                deadline = time.monotonic() + 120
                await asyncio.gather(killer(), *[one(i, p) for i, p in enumerate(phones)])
                assert killed_at, "the leader was never killed"
                status, doc = await admin(session, survivor.url, "GET", "/v1/admin/tasks/kb")
                return killed_at[0], leader, survivor, doc

        killed_after, leader, survivor, doc = asyncio.run(scenario())
    finally:
        for server in servers:
            server.stop()

    print(
        f"killed the leader after {killed_after} acknowledged; {len(acknowledged)} in all; "
        f"assignments by process: {served_by}"
    )
    assert len(acknowledged) >= 8 * GOAL
    # both answered devices while both ran: the follower by forwarding to the leader
    assert served_by.get(survivor.url + " before") and served_by.get(leader.url + " before")
    assert min(sizes) > 4096 * 2  # the follower's phones sent theirs in several chunks
    counted = [
        r[0]
        for r in _query(
            db, "SELECT idempotency_key FROM ledger UNION ALL SELECT idempotency_key FROM updates"
        )
    ]
    assert len(counted) == len(set(counted))  # exactly once
    assert acknowledged <= set(counted)  # nothing acknowledged was lost
    versions = [
        r[0] for r in _query(db, "SELECT version FROM models WHERE task_id = 'kb' ORDER BY version")
    ]
    assert versions == list(range(len(versions)))  # forward, no gaps
    assert len(versions) - 1 >= 8  # progress before and after the takeover
    per_version = dict(_query(db, "SELECT version, count(*) FROM ledger GROUP BY version"))
    assert set(per_version.values()) == {GOAL}  # each round aggregated exactly its goal
    assert doc["led_here"] and doc["version"] == versions[-1]
    for history in seen_versions.values():  # no device was ever sent back to an older model
        assert history == sorted(history)
    assert _query(db, "SELECT url FROM leaders WHERE task_id = 'kb'")[0][0] == survivor.url


def test_a_follower_forwards_once_and_otherwise_says_when_to_retry(bundle, tmp_path, postgres):
    """Two in-process servers on one database, their ticks driven by hand."""
    from edge_sdk.clock import FakeClock

    from .fleet import ADMIN, running_server

    db = postgres.new_database()
    ports = [free_port(), free_port()]

    def server(name: str, port: int):
        return running_server(
            tmp_path / name,
            FakeClock(),
            port=port,
            store_url=db,
            advertise_url=f"http://127.0.0.1:{port}",
            tick_interval_s=3600,
        )

    async def scenario():
        async with server("b", ports[1]) as (b_url, b), aiohttp.ClientSession() as session:
            async with server("a", ports[0]) as (a_url, a):
                status, _ = await create_task(session, a_url, bundle, {})
                assert status == 201 and a.leads("kb") and not b.leads("kb")
                phone = await enroll_phone(
                    b_url, session, bundle, tmp_path, 0, FakeClock(), lm_examples(0)
                )
                answer = await phone.transport.check_in("kb")  # forwarded from b to a
                assert answer["assignment"]["round_id"] == 1
                assert phone.identity.device_id in a.tasks["kb"].coordinator.assigned
                token = {"Authorization": f"Bearer {phone.transport.token}"}
                async with session.post(
                    b_url + "/v1/checkin",
                    json={"task_id": "kb"},
                    headers=token | {"X-Edge-FL-Forwarded": "1"},
                ) as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "1"  # never twice
                    assert (await r.json())["error"]["code"] == "not_leader"
                async with session.post(
                    a_url + "/v1/admin/tasks/kb/pause", headers={"X-Admin-Token": ADMIN}
                ) as r:
                    assert r.status == 200 and (await r.json())["paused"]
                async with session.post(
                    b_url + "/v1/admin/tasks/kb/resume", headers={"X-Admin-Token": ADMIN}
                ) as r:
                    assert r.status == 200 and not (await r.json())["paused"]  # forwarded
            # a has stopped: its lock is free, but b has not ticked yet
            async with session.post(
                b_url + "/v1/checkin", json={"task_id": "kb"}, headers=token
            ) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
            async with session.get(b_url + "/v1/tasks/kb/model", headers=token) as r:
                assert r.status == 200  # models are served all the same
            b.tick()  # takes the task over, restored from the store
            assert b.leads("kb")
            again = await phone.transport.check_in("kb")
            assert again["assignment"] == answer["assignment"]  # its assignment survived
            async with session.post(
                b_url + "/v1/checkin", json={"task_id": "nope"}, headers=token
            ) as r:
                assert r.status == 404  # an unknown task is not a leadership question

    asyncio.run(scenario())
