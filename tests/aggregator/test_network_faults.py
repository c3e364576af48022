"""Clients retry through resets, truncated answers, slow drips and duplicated requests;
the server's state stays exact: every update a device saw acknowledged counts once."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import aiohttp
import numpy as np

from edge_sdk.errors import TransportError

from .fault_proxy import FaultProxy
from .fleet import enroll_phone, lm_examples, normal_delta, server_with_task, signed_update


def test_retries_through_a_faulty_network_keep_the_server_exact(bundle, tmp_path):
    async def scenario():
        settings = {
            "mode": "async",
            "async_": {"concurrency": 100, "buffer_size": 7, "max_staleness": 1000},
        }
        async with server_with_task(tmp_path, bundle, settings) as env:
            proxy = FaultProxy(urlparse(env.url).port, np.random.default_rng(4), rate=0.35)
            port = await proxy.start()
            url = f"http://127.0.0.1:{port}"
            # one connection per request, so the proxy draws a fault for every request
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
            phones = []
            for i in range(12):  # enrollment also goes through the faulty proxy
                for _ in range(10):
                    try:
                        phones.append(
                            await enroll_phone(
                                url, session, bundle, tmp_path, i, env.clock, lm_examples(i)
                            )
                        )
                        break
                    except TransportError:
                        continue
            acknowledged: set[str] = set()
            rng = np.random.default_rng(0)

            async def device(phone, index):
                for j in range(3):
                    key = f"u{index}-{j}"
                    for attempt in range(8):  # the app retries a whole participation too
                        try:
                            a = (await phone.transport.check_in("kb"))["assignment"]
                            delta = normal_delta(bundle, rng)
                            version = a["model_version"]
                            data = signed_update(phone, bundle, delta, key, version, 2, rng=rng)
                            result = await phone.transport.upload("kb", data)
                            assert result["status"] in ("accepted", "duplicate")
                            acknowledged.add(key)
                            break
                        except TransportError:
                            continue

            await asyncio.gather(*[device(p, i) for i, p in enumerate(phones)])
            await session.close()
            await proxy.close()
            counts = proxy.counts
            service = env.service
            import sqlite3

            with sqlite3.connect(service.store.root / "aggregator.db") as db:
                counted = [
                    r[0]
                    for r in db.execute(
                        "SELECT idempotency_key FROM ledger UNION ALL SELECT idempotency_key FROM updates"
                    )
                ]
            return acknowledged, counted, counts, len(phones), service.tasks["kb"].coordinator

    acknowledged, counted, counts, n_phones, coordinator = asyncio.run(scenario())
    assert n_phones == 12
    assert all(counts[f] > 0 for f in ("reset_request", "truncate_response", "duplicate", "drip"))
    assert len(counted) == len(set(counted))  # never double-counted, duplicates included
    assert set(counted) == acknowledged  # nothing lost, nothing unacknowledged counted
    assert len(acknowledged) == 36
    assert coordinator.version == 36 // 7
