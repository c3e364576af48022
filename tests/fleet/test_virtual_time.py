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


def test_a_sleep_standing_for_real_work_lets_the_clock_run_on_then_waits_for_the_work():
    """Device a's training (real work in a thread, 0.2 s) spans simulated 0..50; device b
    acts at 10 and 20 meanwhile; a wakes at 50 only once its work is done, and the clock
    does not pass 50 before that."""

    async def scenario():
        vt = VirtualTime(FakeClock(0.0))
        log = []

        def work():
            import time

            time.sleep(0.2)
            return "trained"

        async def device_a():
            job = asyncio.ensure_future(asyncio.to_thread(work))
            await vt.sleep(50, until=job)
            log.append((vt.now(), "a", job.result()))

        async def device_b():
            for _ in range(5):
                await vt.sleep(10)
                log.append((vt.now(), "b", None))

        vt.spawn(device_a)
        vt.spawn(device_b)
        await vt.run_until(100.0)
        await vt.shutdown()
        return log

    log = asyncio.run(scenario())
    assert log[:4] == [(10.0, "b", None), (20.0, "b", None), (30.0, "b", None), (40.0, "b", None)]
    assert (50.0, "a", "trained") in log[4:6]  # same instant as b's fifth wake-up


def test_shutdown_cancels_work_a_sleeper_waits_for():
    async def scenario():
        vt = VirtualTime(FakeClock(0.0))
        never = asyncio.get_running_loop().create_future()

        async def device():
            await vt.sleep(5, until=never)

        vt.spawn(device)
        await vt.run_until(1.0)  # stops before the wake-up: nothing waits on `never` yet
        await vt.shutdown()
        return never

    assert asyncio.run(scenario()).cancelled()


def test_a_parked_task_wakes_when_woken_or_at_its_time_and_never_holds_the_clock():
    async def scenario():
        vt = VirtualTime(FakeClock(0.0))
        log = []

        async def parked():
            await vt.park(100)  # woken at 7 by the other task
            log.append(("woken", vt.now()))
            await vt.park(50)  # nobody wakes it: its own time
            log.append(("timed out", vt.now()))

        async def waker():
            await vt.sleep(7)
            assert vt.parked
            vt.wake_parked()
            await vt.sleep(1)
            log.append(("waker", vt.now()))

        vt.spawn(parked)
        vt.spawn(waker)
        await vt.run_until(1000.0)
        await vt.shutdown()
        return log, vt.parked

    log, still_parked = asyncio.run(scenario())
    assert log == [("woken", 7.0), ("waker", 8.0), ("timed out", 57.0)]
    assert not still_parked
