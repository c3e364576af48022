"""Grouped commits against the real app on 127.0.0.1: an acknowledged update is already
committed (another connection to the database sees it), concurrent calls share one
commit, and a commit that fails loses only unacknowledged work: its callers get a 503,
the service reloads what is durable, and a retry counts once."""

from __future__ import annotations

import asyncio
import sqlite3

import numpy as np
import pytest

from edge_sdk.errors import TransportError
from edge_sdk.transport import RetryPolicy, ServerRejected, Transport

from .fleet import normal_delta, server_with_task, signed_update

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
            store = env.service.store
            failing = []

            def crash(point: str) -> None:
                if point == "group_written" and failing:
                    failing.pop()
                    raise OSError(28, "No space left on device")

            store._crash = crash
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
