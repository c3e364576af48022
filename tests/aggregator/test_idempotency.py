"""Idempotency bound to identity, against the real app on 127.0.0.1: the server scopes
keys to (task, device), so a device cannot shadow another device's update and one key in
two tasks is two updates; the SDK names each participation by a random nonce, reused
only by a retry of that participation, and takes `duplicate` for success only when the
key went out before."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
import numpy as np
import pytest

from aggregator.store import PendingUpdate, TaskRecord, open_store
from edge_sdk.client import PARTICIPATION_KEY
from edge_sdk.errors import TransportError
from edge_sdk.transport import RetryPolicy, Transport

from .fault_proxy import FaultProxy
from .fleet import create_task, good_state, normal_delta, server_with_task, signed_update


def _update(bundle, phone, key: str, task_id: str = "kb", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return signed_update(phone, bundle, normal_delta(bundle, rng), key, task_id=task_id, rng=rng)


def _rows(service, sql: str) -> list[tuple]:
    return service.store._query(sql)


def test_a_device_cannot_shadow_another_devices_update_with_its_key(bundle, tmp_path, store_url):
    async def scenario():
        settings = {"mode": "sync", "sync": {"goal": 3, "overselect": 1.0}}
        async with server_with_task(tmp_path, bundle, settings, store_url=store_url) as env:
            thief, victim = [await env.enroll(i) for i in range(2)]
            for phone in (thief, victim):
                await phone.transport.check_in("kb")
            # the thief signs its own update under the key the victim will use
            stolen = await thief.transport.upload(
                "kb", _update(bundle, thief, "victims-key", seed=1)
            )
            real = _update(bundle, victim, "victims-key", seed=2)
            assert stolen["status"] == "accepted"
            assert (await victim.transport.upload("kb", real))["status"] == "accepted"
            assert (await victim.transport.upload("kb", real))["status"] == "duplicate"
            assert env.service.describe("kb")["accepted"] == 2
            devices = sorted(u.device_id for u in env.service.store.pending_updates("kb"))
            assert devices == sorted([thief.identity.device_id, victim.identity.device_id])

    asyncio.run(scenario())


def test_one_key_in_two_tasks_is_two_updates_and_leaves_no_orphan(bundle, tmp_path):
    async def scenario():
        settings = {"mode": "async", "async_": {"buffer_size": 10}}
        async with server_with_task(tmp_path, bundle, settings) as env:
            status, doc = await create_task(env.session, env.url, bundle, settings, "kb2")
            assert status == 201, doc
            phone = await env.enroll(0)
            for task_id in ("kb", "kb2"):
                assert "assignment" in await phone.transport.check_in(task_id)
                answer = await phone.transport.upload(
                    task_id, _update(bundle, phone, "same", task_id)
                )
                assert answer["status"] == "accepted"
            referenced = {r[0] for r in _rows(env.service, "SELECT path FROM updates")}
            stored = {r[0] for r in _rows(env.service, "SELECT path FROM update_segments")}
            stored |= {
                str(p.relative_to(tmp_path / "data"))
                for p in (tmp_path / "data" / "updates").rglob("*")
                if p.is_file()
            }
            assert len(referenced) == 2 and stored == referenced

    asyncio.run(scenario())


def test_two_participations_at_one_async_version_are_two_updates(bundle, tmp_path):
    """3 devices take part 5 times each while the model stays at version 0: 15
    acknowledged updates, 15 counted."""

    async def scenario():
        settings = {
            "mode": "async",
            "async_": {"buffer_size": 100, "concurrency": 10},
            "plan": {"epochs": 1, "batch_size": 4, "lr": 0.1},
        }
        async with server_with_task(tmp_path, bundle, settings) as env:
            phones = [await env.enroll(i) for i in range(3)]
            results = [
                await phone.client.participate(good_state, "kb")
                for _ in range(5)
                for phone in phones
            ]
            assert [r.status for r in results] == ["completed"] * 15
            assert {r.model_version for r in results} == {0}
            assert {r.server["status"] for r in results} == {"accepted"}
            assert env.service.describe("kb")["accepted"] == 15
            assert len(env.service.store.pending_updates("kb")) == 15

    asyncio.run(scenario())


class _LosesAnswers(Transport):
    """The server gets the upload, the device never hears back (it gives up, as after
    every retry failed, or it was killed)."""

    lose = 1

    async def upload(self, task_id: str, data: bytes) -> dict:
        answer = await super().upload(task_id, data)
        if self.lose:
            self.lose -= 1
            raise TransportError("the answer was lost")
        return answer


def _reroute(phone, transport: Transport) -> Transport:
    transport.token, transport.device_id = phone.transport.token, phone.transport.device_id
    phone.client.transport = phone.transport = transport
    return transport


def test_a_retried_participation_reuses_its_nonce_and_counts_once(bundle, tmp_path):
    async def scenario():
        settings = {"mode": "sync", "sync": {"goal": 2, "overselect": 1.0}}
        async with server_with_task(tmp_path, bundle, settings) as env:
            phone = await env.enroll(0)
            _reroute(phone, _LosesAnswers(env.url, env.session))
            with pytest.raises(TransportError):
                await phone.client.participate(good_state, "kb")
            state = phone.client.store.get_state(PARTICIPATION_KEY.format(task="kb"))
            kept = json.loads(state)
            assert kept["uploads"] == 1 and env.service.describe("kb")["accepted"] == 1
            # the device tries again: the same assignment, so the same participation
            result = await phone.client.participate(good_state, "kb")
            assert result.status == "completed" and result.server["status"] == "duplicate"
            assert env.service.describe("kb")["accepted"] == 1
            (pending,) = env.service.store.pending_updates("kb")
            assert pending.idempotency_key == kept["nonce"]
            assert phone.client.store.get_state(PARTICIPATION_KEY.format(task="kb")) is None

    asyncio.run(scenario())


class _TruncatesUploadAnswers(FaultProxy):
    """Every connection passes except the first that carries an upload: its answer is
    cut short after the server handled it."""

    def __init__(self, upstream_port: int, script: list[str]):
        super().__init__(upstream_port, np.random.default_rng(0), rate=0.0)
        self.script = script

    def _fault(self) -> str:
        return self.script.pop(0) if self.script else "pass"


def test_a_duplicate_answer_to_the_transports_own_retry_is_success(bundle, tmp_path):
    async def scenario():
        settings = {"mode": "sync", "sync": {"goal": 2, "overselect": 1.0}}
        async with server_with_task(tmp_path, bundle, settings) as env:
            phone = await env.enroll(0)
            port = int(env.url.rsplit(":", 1)[1])
            # check-in, model download, then the upload whose answer is lost
            proxy = _TruncatesUploadAnswers(port, ["pass", "pass", "truncate_response"])
            proxy_port = await proxy.start()
            try:
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)
                ) as session:
                    transport = _reroute(
                        phone,
                        Transport(
                            f"http://127.0.0.1:{proxy_port}",
                            session,
                            retry=RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05),
                            rng=np.random.default_rng(0),
                        ),
                    )
                    result = await phone.client.participate(good_state, "kb")
            finally:
                await proxy.close()
            assert proxy.counts["truncate_response"] == 1
            assert transport.last_attempts == 2
            assert result.status == "completed" and result.server["status"] == "duplicate"
            assert env.service.describe("kb")["accepted"] == 1

    asyncio.run(scenario())


def test_a_duplicate_for_a_key_never_sent_is_a_failure(bundle, tmp_path, monkeypatch):
    async def scenario():
        settings = {"mode": "sync", "sync": {"goal": 3, "overselect": 1.0}}
        async with server_with_task(tmp_path, bundle, settings) as env:
            phone = await env.enroll(0)
            await phone.transport.check_in("kb")
            # an update under the nonce the client is about to draw is already there
            # (another copy of this device's identity sent it)
            nonce = "0123456789abcdef0123456789abcdef"
            first = await phone.transport.upload("kb", _update(bundle, phone, nonce))
            assert first["status"] == "accepted"
            monkeypatch.setattr("edge_sdk.client.secrets.token_hex", lambda n: nonce)
            result = await phone.client.participate(good_state, "kb")
            assert (result.status, result.reason) == ("rejected", "unexpected_duplicate")
            assert result.server["status"] == "duplicate"
            assert env.service.describe("kb")["accepted"] == 1

    asyncio.run(scenario())


# -- the store: keys scoped per (task, device), and data dirs of before migrated ---------------
_OLD_TABLES = [
    """CREATE TABLE updates (
    idempotency_key TEXT PRIMARY KEY, task_id TEXT NOT NULL, round_id INTEGER NOT NULL,
    device_id TEXT NOT NULL, version_from INTEGER NOT NULL, weight {real} NOT NULL,
    staleness INTEGER NOT NULL, path TEXT NOT NULL, received {real} NOT NULL,
    metrics TEXT NOT NULL)""",
    "CREATE INDEX updates_by_task ON updates (task_id, received)",
    """CREATE TABLE ledger (
    idempotency_key TEXT PRIMARY KEY, task_id TEXT NOT NULL, version INTEGER NOT NULL)""",
    "INSERT INTO ledger VALUES ('old-aggregated', 'kb', 1)",
    (
        "INSERT INTO updates VALUES ('old-pending', 'kb', 2, 'dev-a', 1, 3.0, 0, "
        "'updates/kb/old.eflu', 5.0, '{{\"loss\": 2.0}}')"
    ),
]


def _make_old_store(tmp_path, store_url) -> None:
    if store_url is None:
        (tmp_path / "data").mkdir()
        with sqlite3.connect(tmp_path / "data" / "aggregator.db") as db:
            for statement in _OLD_TABLES:
                db.execute(statement.format(real="REAL"))
        (tmp_path / "data" / "updates" / "kb").mkdir(parents=True)
        (tmp_path / "data" / "updates" / "kb" / "old.eflu").write_bytes(b"old update")
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as db:
            for statement in _OLD_TABLES:
                db.execute(statement.format(real="DOUBLE PRECISION"))
            db.execute(
                "CREATE TABLE blobs (path TEXT PRIMARY KEY, data BYTEA NOT NULL, "
                "sha256 TEXT NOT NULL)"
            )
            db.execute("INSERT INTO blobs VALUES ('updates/kb/old.eflu', 'old update', '')")


def test_a_store_of_before_is_migrated_to_keys_scoped_by_device(tmp_path, store_url):
    _make_old_store(tmp_path, store_url)
    store = open_store(tmp_path / "data", store_url)
    try:
        assert store.try_lead("kb", None, 0.0)
        store.add_task(TaskRecord("kb", {}, "/b", "m", [{"name": "w", "shape": [2]}]), b"m0", 1.0)
        # a key aggregated before the migration (its device unknown) stays counted
        assert store.seen_update("kb", "dev-a", "old-aggregated") == 1
        assert store.seen_update("kb", "dev-b", "old-aggregated") == 1
        assert store.seen_update("other", "dev-a", "old-aggregated") is None
        (pending,) = store.pending_updates("kb")
        assert (pending.idempotency_key, pending.device_id, pending.round_id) == (
            "old-pending",
            "dev-a",
            2,
        )
        assert store.update_bytes(pending) == b"old update"
        assert store.pending_metrics("kb") == [{"loss": 2.0}]
        assert store.seen_update("kb", "dev-a", "old-pending") == -1
        assert store.seen_update("kb", "dev-b", "old-pending") is None
        # the same key from another device is another update
        store.save_update(
            "kb",
            PendingUpdate("old-pending", 2, "dev-b", 1, 3.0, 0),
            b"new",
            {},
            {"round_id": 2},
            6.0,
        )
        assert len(store.pending_updates("kb")) == 2
        store.commit_version("kb", 2, b"m2", {}, {"round_id": 3}, {}, 7.0)
        assert store.seen_update("kb", "dev-a", "old-pending") == 2
        assert store.seen_update("kb", "dev-b", "old-pending") == 2
        assert store.seen_update("kb", "dev-c", "old-pending") is None
    finally:
        store.close()
    reopened = open_store(tmp_path / "data", store_url)  # migrating twice changes nothing
    try:
        assert reopened.seen_update("kb", "dev-b", "old-aggregated") == 1
        assert reopened.seen_update("kb", "dev-b", "old-pending") == 2
    finally:
        reopened.close()
