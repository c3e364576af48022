"""Simulated time for many asyncio tasks: a task `await`s `sleep(dt)` and the clock jumps
to the next wake-up once every task is asleep, so a day of fleet time runs as fast as the
real work (training, encoding, aggregation) allows.

Every task started with `spawn` is either running or asleep here; while any runs (even
waiting on a socket) the clock stands still.

A sleep can stand for real work done elsewhere (a device's training on a worker process):
`sleep(dt, until=future)` lets the clock run on while the work computes and stops it at
the wake-up time until the work is done. Work of devices whose simulated spans overlap
so computes in parallel, and each result is used at its simulated time whatever order
the workers finish in.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Awaitable, Callable

from edge_sdk.clock import FakeClock


class VirtualTime:
    def __init__(self, clock: FakeClock):
        self.clock = clock
        self._sleepers: list = []
        self._seq = itertools.count()
        self._running = 0
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()  # the live ones: a finished task leaves
        self._parked: list[asyncio.Future] = []

    def now(self) -> float:
        return self.clock.now()

    def spawn(self, make: Callable[[], Awaitable[None]]) -> None:
        self._running += 1
        self._idle.clear()

        async def wrapper():
            try:
                await make()
            finally:
                self._running -= 1
                self._check_idle()

        task = asyncio.create_task(wrapper())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sleep(self, seconds: float, until: asyncio.Future | None = None) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._sleepers, (self.clock.now() + max(0.0, seconds), next(self._seq), future, until)
        )
        self._running -= 1
        self._check_idle()
        await future  # the driver counts us as running again before waking us

    async def park(self, seconds: float) -> None:
        """Sleep `seconds`, or less if `wake_parked()` comes first."""
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._sleepers, (self.clock.now() + max(0.0, seconds), next(self._seq), future, None)
        )
        self._parked.append(future)
        self._running -= 1
        self._check_idle()
        try:
            await future
        finally:
            if future in self._parked:  # woken by the time, not by wake_parked
                self._parked.remove(future)

    @property
    def parked(self) -> bool:
        return bool(self._parked)

    def wake_parked(self) -> None:
        """Wake every parked task (at the current time; it runs before the clock moves)."""
        parked, self._parked = self._parked, []
        for future in parked:  # its entry in the heap stays, and finds it done
            if not future.done():
                self._running += 1
                self._idle.clear()
                future.set_result(None)

    def _check_idle(self) -> None:
        if self._running == 0:
            self._idle.set()

    async def run_until(
        self, end: float, on_advance: Callable[[float], bool] | None = None
    ) -> None:
        """Advance time until `end`, until nothing is scheduled, or until `on_advance(now)`
        (called after every step of the clock) returns True."""
        while True:
            await self._idle.wait()
            if not self._sleepers or self._sleepers[0][0] > end:
                self.clock.set(
                    max(self.clock.now(), min(end, self._sleepers[0][0]) if self._sleepers else end)
                )
                return
            when = self._sleepers[0][0]
            self.clock.set(max(self.clock.now(), when))
            if on_advance and on_advance(self.clock.now()):
                return
            while self._sleepers and self._sleepers[0][0] <= when:
                _, _, future, until = heapq.heappop(self._sleepers)
                if until is not None and not until.done():
                    await asyncio.wait([until])  # the clock waits at `when` for the work
                if not future.done():  # cancelled, or woken early from `park`
                    self._running += 1
                    self._idle.clear()
                    future.set_result(None)

    async def shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for _, _, future, until in self._sleepers:
            future.cancel()
            if until is not None:
                until.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
