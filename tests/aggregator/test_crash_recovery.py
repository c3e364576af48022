"""The aggregator dies (kill -9, or an exit at a chosen point of a write) under a stream of
uploads; restarted, nothing acknowledged is lost or counted twice, versions only move
forward, and every stored model decodes. Each test runs with SQLite + files and with
PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from aggregator.store import CRASH_POINTS
from edge_sdk.bundle import Bundle
from edge_sdk.errors import TransportError
from edge_sdk.protocol import decode_parameters

from .fleet import (
    ServerProcess,
    admin,
    create_task,
    free_port,
    normal_delta,
    signed_update,
)


def _select(server: ServerProcess, sql: str) -> list[tuple]:
    """Straight from the server's database (SQLite in its data dir, or PostgreSQL)."""
    if server.store_url is None:
        with sqlite3.connect(server.data_dir / "aggregator.db") as db:
            return db.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(server.store_url) as db:
        return db.execute(sql).fetchall()


def _counted_keys(server: ServerProcess) -> list[str]:
    return [
        r[0]
        for r in _select(
            server,
            "SELECT idempotency_key FROM ledger UNION ALL SELECT idempotency_key FROM updates",
        )
    ]


def _model_bytes(server: ServerProcess, version: int) -> bytes:
    path = f"models/kb/v{version}.eflm"
    if server.store_url is None:
        return (server.data_dir / path).read_bytes()
    return bytes(_select(server, f"SELECT data FROM blobs WHERE path = '{path}'")[0][0])


def _storm(server: ServerProcess, url: str, bundle: Bundle, tmp_path: Path, kill_after: int | None):
    """24 devices upload until the server dies (killed after `kill_after` acknowledgements,
    or by its own crash point). Returns (acknowledged keys, sent {key: (phone, bytes)})."""
    acknowledged: set[str] = set()
    sent: dict[str, tuple] = {}

    async def scenario():
        async with aiohttp.ClientSession() as session:
            await create_task(
                session,
                url,
                bundle,
                {
                    "mode": "async",
                    "async_": {"concurrency": 40, "buffer_size": 5, "max_staleness": 100},
                },
            )
            phones = [await server.enroll(session, bundle, tmp_path, i) for i in range(24)]
            rng = np.random.default_rng(0)

            async def one(phone, index):
                for j in range(12):  # keep uploading until the server dies
                    answer = await phone.transport.check_in("kb")
                    if "assignment" not in answer:
                        await asyncio.sleep(0.01)
                        continue
                    delta = normal_delta(bundle, rng)
                    key = f"update-{index}-{j}"
                    version = answer["assignment"]["model_version"]
                    data = signed_update(phone, bundle, delta, key, version, 3, rng=rng)
                    sent[key] = (phone, data)
                    await phone.transport.upload("kb", data)
                    acknowledged.add(key)

            tasks = [asyncio.create_task(one(p, i)) for i, p in enumerate(phones)]
            if kill_after is not None:
                while len(acknowledged) < kill_after:
                    await asyncio.sleep(0.005)
                server.kill9()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            failed = [d for d in done if isinstance(d, BaseException)]
            assert failed and all(
                isinstance(d, (TransportError, aiohttp.ClientError)) for d in failed
            )

    asyncio.run(scenario())
    server.proc.wait(10)
    return acknowledged, sent


def _recover_and_check(server: ServerProcess, bundle: Bundle, acknowledged: set, sent: dict):
    assert acknowledged <= set(_counted_keys(server))  # acknowledged = durable
    url = server.start()

    async def after_restart():
        async with aiohttp.ClientSession() as session:
            for key, (phone, data) in sent.items():  # clients retry what they sent
                phone.transport.session = session
                try:
                    await phone.transport.upload("kb", data)
                    acknowledged.add(key)
                except TransportError:
                    pass  # e.g. no longer assigned: refused, and so not counted
            return (await admin(session, url, "GET", "/v1/admin/tasks/kb"))[1]

    doc = asyncio.run(after_restart())
    counted = _counted_keys(server)
    assert len(counted) == len(set(counted))  # exactly once
    assert acknowledged <= set(counted)
    versions = [v["version"] for v in doc["versions"]]
    assert versions == list(range(len(versions)))  # monotonic, no gaps
    for v in versions:  # the store is whole
        decode_parameters(_model_bytes(server, v), bundle.parameter_specs)


def test_kill_9_under_load_loses_nothing_acknowledged(bundle, tmp_path, kill_after, store_url):
    server = ServerProcess(tmp_path / "data", free_port(), store_url)
    try:
        url = server.start()
        acknowledged, sent = _storm(server, url, bundle, tmp_path, kill_after)
        print(f"acknowledged before the kill: {len(acknowledged)} of {len(sent)} sent")
        _recover_and_check(server, bundle, acknowledged, sent)
    finally:
        server.stop()


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_dying_inside_a_write_loses_nothing_acknowledged(bundle, tmp_path, point, store_url):
    if point == "group_written" and store_url is not None:
        pytest.skip("PostgreSQL commits every write alone (it does not group)")
    server = ServerProcess(tmp_path / "data", free_port(), store_url)
    try:
        # the 3rd time: after a few uploads and at least one version flush (a group is
        # committed per enrollment first: 24 of them, and the task's)
        times = 40 if point == "group_written" else 3
        url = server.start(crash_at={point: times}, tick_interval_s=3600)  # no tick first
        acknowledged, sent = _storm(server, url, bundle, tmp_path, kill_after=None)
        assert server.proc.returncode == 137  # it died at the crash point, not otherwise
        _recover_and_check(server, bundle, acknowledged, sent)
    finally:
        server.stop()
