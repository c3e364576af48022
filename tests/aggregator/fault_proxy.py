"""A fault-injecting TCP proxy on loopback: per connection, by a seeded draw, it passes
bytes through, resets mid-request, truncates the response, drips the request slowly, or
sends the request to the server twice. Bounded: it serves until closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import numpy as np

FAULTS = ("pass", "reset_request", "truncate_response", "drip", "duplicate")


class FaultProxy:
    def __init__(self, upstream_port: int, rng: np.random.Generator, rate: float = 0.3):
        self.upstream_port, self.rng, self.rate = upstream_port, rng, rate
        self.counts: Counter = Counter()
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def _fault(self) -> str:
        if self.rng.random() >= self.rate:
            return "pass"
        return str(self.rng.choice(FAULTS[1:]))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        fault = self._fault()
        self.counts[fault] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        tasks = []
        try:
            if fault == "reset_request":
                data = await reader.read(int(self.rng.integers(1, 200)))
                up_writer.write(data)
                return  # both sides closed below: the request dies mid-body
            if fault == "duplicate":
                tasks.append(asyncio.create_task(self._duplicate(reader, up_writer)))
            else:
                tasks.append(asyncio.create_task(self._pipe(reader, up_writer, fault == "drip")))
            limit = int(self.rng.integers(10, 120)) if fault == "truncate_response" else None
            tasks.append(asyncio.create_task(self._pipe(up_reader, writer, False, limit)))
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=30)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await t
            for w in (writer, up_writer):
                w.close()

    async def _pipe(self, src, dst, drip: bool, limit: int | None = None):
        sent = 0
        while True:
            data = await src.read(64 if drip else 65536)
            if not data:
                break
            if limit is not None and sent + len(data) > limit:
                dst.write(data[: limit - sent])
                await dst.drain()
                return  # the response is cut short
            dst.write(data)
            await dst.drain()
            sent += len(data)
            if drip:
                await asyncio.sleep(0.002)

    async def _duplicate(self, src, dst):
        """Forward the client's bytes, and the same bytes again on a second connection
        whose answer nobody reads: the server sees every request twice."""
        _, twin = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                dst.write(data)
                twin.write(data)
                await dst.drain()
                await twin.drain()
        finally:
            await asyncio.sleep(0.05)
            twin.close()
