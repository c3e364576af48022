"""Grouped commits against the real app on 127.0.0.1: an acknowledged update is already
committed (another connection to the database sees it), concurrent calls share one
commit, and a commit that fails loses only unacknowledged work: its callers get a 503,
the service reloads what is durable, and a retry counts once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3

import aiohttp
import numpy as np
import pytest

from aggregator.app import ServerConfig, build_app, make_service
from aggregator.connections import serve
from edge_sdk.clock import FakeClock
from edge_sdk.errors import TransportError
from edge_sdk.transport import RetryPolicy, ServerRejected, Transport

from .fleet import (
    ADMIN,
    SECRET,
    Env,
    create_task,
    normal_delta,
    server_with_task,
    signed_update,
)

SYNC = {"mode": "sync", "sync": {"goal": 50, "overselect": 1.0}}


def _update(bundle, phone, key: str) -> bytes:
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    return signed_update(phone, bundle, normal_delta(bundle, rng), key, rng=rng)


def _committed_keys(tmp_path) -> list[str]:
    """What a reader outside the server sees: only committed rows."""
    with sqlite3.connect(tmp_path / "data" / "aggregator.db") as db:
        return sorted(r[0] for r in db.execute("SELECT idempotency_key FROM updates"))


def test_an_acknowledged_update_is_committed_and_concurrent_calls_share_commits(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, SYNC) as env:
            store = env.service.store
            flushes = []
            flush = store.flush
            store.flush = lambda: flushes.append(1) or flush()
            phones = [await env.enroll(i) for i in range(12)]
            for phone in phones:
                await phone.transport.check_in("kb")
            first = await phones[0].transport.upload("kb", _update(bundle, phones[0], "k0"))
            assert first["status"] == "accepted" and _committed_keys(tmp_path) == ["k0"]
            flushes.clear()
            answers = await asyncio.gather(
                *[
                    p.transport.upload("kb", _update(bundle, p, f"k{i}"))
                    for i, p in enumerate(phones)
                    if i > 0
                ]
            )
            assert all(a["status"] == "accepted" for a in answers)
            assert _committed_keys(tmp_path) == sorted(f"k{i}" for i in range(12))
            assert 1 <= len(flushes) < 11  # eleven acknowledged uploads, fewer commits

    asyncio.run(scenario())


def test_a_failed_commit_is_a_503_and_a_retry_counts_once(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, SYNC) as env:
            failing = _fail_next_commits(env.service.store)
            phone = await env.enroll(0)
            await phone.transport.check_in("kb")
            data = _update(bundle, phone, "k0")
            once = Transport(
                env.url, env.session, retry=RetryPolicy(attempts=1), rng=np.random.default_rng(0)
            )
            once.token, once.device_id = phone.transport.token, phone.transport.device_id
            failing.append(True)
            with pytest.raises((ServerRejected, TransportError), match="503|store_unavailable"):
                await once.upload("kb", data)
            # nothing of it is stored, and the service forgot it too (reloaded)
            assert _committed_keys(tmp_path) == []
            assert env.service.describe("kb")["accepted"] == 0
            answer = await phone.transport.upload("kb", data)  # the device's retry
            assert answer["status"] == "accepted"
            assert _committed_keys(tmp_path) == ["k0"]
            assert env.service.describe("kb")["accepted"] == 1
            # and the server still serves everyone else
            assert "assignment" in await phone.transport.check_in("kb")

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def _served(tmp_path, bundle):
    """server_with_task's server whose store's commits can be made to fail."""
    # no ticks: a failing commit is then always a request's own
    cfg = ServerConfig(str(tmp_path / "data"), ADMIN, {"keyboard": SECRET}, tick_interval_s=1e6)
    clock = FakeClock()
    service = make_service(cfg, clock, np.random.default_rng(0))
    app = build_app(cfg, service)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with serve(app, cfg, sock), aiohttp.ClientSession() as session:
            status, doc = await create_task(session, url, bundle, SYNC)
            assert status == 201, doc
            yield Env(url, service, session, clock, bundle, tmp_path)
    finally:
        service.store.close()


def _fail_next_commits(store) -> list:
    failing = []

    def crash(point: str) -> None:
        if point == "group_written" and failing:
            failing.pop()
            raise OSError(28, "No space left on device")

    store._crash = crash
    return failing


def test_failed_commits_answer_503_and_retries_are_counted_once(bundle, tmp_path):
    async def scenario():
        async with _served(tmp_path, bundle) as env:
            failing = _fail_next_commits(env.service.store)
            phones = [await env.enroll(i) for i in range(8)]
            for phone in phones:
                await phone.transport.check_in("kb")
            updates = [_update(bundle, p, f"k{i}") for i, p in enumerate(phones)]
            # concurrent uploads while a commit fails: each answer is a 503 or committed
            failing.append(True)
            answers = await asyncio.gather(
                *[_upload_once(env, p, u) for p, u in zip(phones, updates)]
            )
            acknowledged = {f"k{i}" for i, a in enumerate(answers) if a == "accepted"}
            assert set(answers) <= {"accepted", "503"} and "503" in answers
            assert set(_committed_keys(tmp_path)) == acknowledged
            # every later failure: that upload alone is refused, and its retry counted
            for i, (phone, update) in enumerate(zip(phones, updates)):
                if f"k{i}" in acknowledged:
                    continue
                failing.append(True)
                assert await _upload_once(env, phone, update) == "503"
                assert await _upload_once(env, phone, update) == "accepted"
            assert _committed_keys(tmp_path) == sorted(f"k{i}" for i in range(8))

    asyncio.run(scenario())


async def _upload_once(env, phone, data: bytes) -> str:
    """One attempt (no retries): the answer's status, or "503"."""
    once = Transport(
        env.url, env.session, retry=RetryPolicy(attempts=1), rng=np.random.default_rng(0)
    )
    once.token, once.device_id = phone.transport.token, phone.transport.device_id
    try:
        return (await once.upload("kb", data))["status"]
    except (ServerRejected, TransportError) as e:
        assert "503" in str(e) or "store_unavailable" in str(e), e
        return "503"
