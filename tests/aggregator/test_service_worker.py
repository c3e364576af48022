"""The service's thread (app_state.ServiceWorker) and the check-in bodies kept decoded
(app_state.CheckInBodies), driven directly: calls queued together run in order and share
one commit, a call cancelled before it started never runs, a failed commit reaches every
call of its batch; a check-in body decodes once, a bad one every time."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aggregator.app_state import CheckInBodies, ServiceWorker
from aggregator.errors import StoreUnavailable
from edge_sdk.protocol.errors import ProtocolError
from edge_sdk.protocol.jsontext import JsonLimits


class _Service:
    """What the worker asks of the service: the open group, and its commit."""

    def __init__(self, fail_flush: bool = False):
        self.group, self.flushes, self.fail_flush = None, [], fail_flush
        self.threads = set()

    def write(self, value):
        self.threads.add(threading.current_thread().name)
        self.group = 1
        return value

    def open_group(self):
        return self.group

    def flush(self):
        self.flushes.append(self.group)
        self.group = None
        if self.fail_flush:
            raise OSError(28, "No space left on device")


def test_calls_queued_together_run_in_order_and_share_one_commit():
    async def scenario():
        service = _Service()
        worker = ServiceWorker(service, asyncio.get_running_loop())
        gate = threading.Event()
        blocked = worker.call(gate.wait, (10,))  # the thread is busy: the next calls queue
        calls = [worker.call(service.write, (i,)) for i in range(5)]
        gate.set()
        assert await blocked is True
        assert await asyncio.gather(*calls) == list(range(5))
        assert service.flushes == [1]  # five writes, one commit
        assert service.threads == {"edge-fl-service"}
        await worker.stop()
        assert not worker.thread.is_alive()

    asyncio.run(scenario())


def test_a_call_cancelled_before_it_started_never_runs():
    async def scenario():
        service = _Service()
        worker = ServiceWorker(service, asyncio.get_running_loop())
        gate, ran = threading.Event(), []
        blocked = worker.call(gate.wait, (10,))
        cancelled = worker.call(ran.append, ("ran",))
        cancelled.cancel()
        gate.set()
        await blocked
        assert await worker.call(len, (ran,)) == 0 and ran == []
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await worker.stop()

    asyncio.run(scenario())


def test_a_failed_commit_reaches_every_call_of_its_batch_and_the_next_batch_is_served():
    async def scenario():
        service = _Service(fail_flush=True)
        worker = ServiceWorker(service, asyncio.get_running_loop())
        gate = threading.Event()
        blocked = worker.call(gate.wait, (10,))
        calls = [worker.call(service.write, (i,)) for i in range(3)]
        gate.set()
        # `blocked` wrote nothing, but if the thread took it with the writes, their
        # commit was its commit too: it fails with them
        await asyncio.gather(blocked, return_exceptions=True)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, StoreUnavailable) for o in outcomes)
        assert len({id(o) for o in outcomes}) == 3  # each caller its own error
        service.fail_flush = False
        assert await worker.call(service.write, ("next",)) == "next"
        await worker.stop()

    asyncio.run(scenario())


def test_a_check_in_body_decodes_once_and_a_bad_one_every_time():
    bodies, limits = CheckInBodies(size=2), JsonLimits()
    first = bodies.decode(b'{"task_id": "kb"}', limits)
    assert first.task_id == "kb" and bodies.decode(b'{"task_id": "kb"}', limits) is first
    for _ in range(2):  # refused each time, and never kept
        with pytest.raises(ProtocolError):
            bodies.decode(b'{"task_id": "kb", "unknown": 1}', limits)
    assert list(bodies.decoded) == [b'{"task_id": "kb"}']
    bodies.decode(b'{"task_id": "a"}', limits)
    bodies.decode(b'{"task_id": "b"}', limits)  # at most two: the oldest went
    assert list(bodies.decoded) == [b'{"task_id": "a"}', b'{"task_id": "b"}']
    long = b'{"task_id": "kb"' + b" " * 300 + b"}"  # a valid body, too long to keep
    assert bodies.decode(long, limits).task_id == "kb" and long not in bodies.decoded
