from __future__ import annotations

import asyncio

from edge_sdk.clock import FakeClock
from fleet.virtual_time import VirtualTime


def test_tasks_wake_in_simulated_time_order_without_real_waiting():
    async def scenario():
        vt = VirtualTime(FakeClock(0.0))
        log = []

        async def worker(name, delays):
            for d in delays:
                await vt.sleep(d)
                log.append((vt.now(), name))

        vt.spawn(lambda: worker("a", [10, 10, 10]))
        vt.spawn(lambda: worker("b", [15, 1000]))
        await vt.run_until(100.0)
        await vt.shutdown()
        return log, vt.now()

    import time
    start = time.perf_counter()
    log, now = asyncio.run(scenario())
    assert log == [(10.0, "a"), (15.0, "b"), (20.0, "a"), (30.0, "a")]
    assert now == 100.0 and time.perf_counter() - start < 2.0


def test_the_clock_waits_for_tasks_doing_real_io():
    async def scenario():
        vt = VirtualTime(FakeClock(0.0))
        seen = []

        async def worker():
            await asyncio.sleep(0.05)  # real I/O-like wait: time must not jump meanwhile
            seen.append(vt.now())
            await vt.sleep(5)
            seen.append(vt.now())

        vt.spawn(worker)
        await vt.run_until(10.0)
        await vt.shutdown()
        return seen

    assert asyncio.run(scenario()) == [0.0, 5.0]


def test_run_until_stops_when_asked():
    async def scenario():
        vt = VirtualTime(FakeClock(0.0))

        async def ticker():
            while True:
                await vt.sleep(1)

        vt.spawn(ticker)
        await vt.run_until(1000.0, on_advance=lambda now: now >= 7)
        await vt.shutdown()
        return vt.now()

    assert asyncio.run(scenario()) == 7.0
