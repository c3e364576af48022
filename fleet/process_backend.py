"""The simulator's process backend: devices' local training runs on a pool of worker
processes on this machine, one ONNX Runtime thread each, so a fleet uses every core.

Only the ORT step loop moves; each device's eligibility, check-in, download, encoding,
signing and upload stay on the driver. Combined with the simulator's paced training
(the clock runs on while a worker computes and waits at the device's simulated finish
time), results are the ones the local backend computes, bit for bit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from edge_sdk.bundle import Bundle
from edge_sdk.trainer import TrainingPlan

from .remote_trainer import RemoteTrainer

__all__ = ["ProcessTraining"]

_worker: RemoteTrainer | None = None


def _start(bundle_path: str) -> None:
    global _worker
    _worker = RemoteTrainer(bundle_path)


def _train(params, epochs, plan):
    return _worker.train(params, epochs, plan)


def _pid(_) -> int:
    import time

    time.sleep(0.1)  # long enough that the pool hands the next call to another worker
    return _worker.pid()


class ProcessTraining:
    """A TrainingRunner (edge_sdk.client) backed by `workers` processes (default: one per
    core). Workers are spawned, not forked: a fork of a process with ORT's and asyncio's
    threads running is not safe."""

    def __init__(self, bundle: Bundle, workers: int | None = None):
        workers = workers or os.cpu_count() or 1
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(str(bundle.path),),
        )
        self.trainings = 0

    def worker_pids(self) -> set[int]:
        return set(self._pool.map(_pid, range(4 * self.workers)))

    async def train(self, params, examples, plan: TrainingPlan, check):
        epochs = [list(examples(epoch)) for epoch in range(plan.epochs)]
        loop = asyncio.get_running_loop()
        result, delta = await loop.run_in_executor(self._pool, _train, params, epochs, plan)
        self.trainings += 1
        return result, delta

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
