"""The held-out evaluator: one task, polled through the aggregator's admin API.

Each pass reads the task's history, and if the newest model version has no held-out
metrics yet, downloads it, evaluates it and posts the metrics. A worker that falls behind
evaluates the newest version, not every one in between (`every_version` evaluates all).
A lost connection or a server answering 5xx is waited out; a refusal (4xx: a task not
created yet, a wrong token) ends the pass with an error saying what the server said,
which `run` logs before it polls again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from edge_sdk.bundle import Bundle
from edge_sdk.evaluator import Evaluator
from edge_sdk.protocol import decode_parameters

from .heldout_set import read_heldout_set

log = logging.getLogger("edge_fl.heldout")


class ServerRefused(RuntimeError):
    """The aggregator answered a worker's call with a 4xx (bad token, unknown task...)."""


@dataclass(frozen=True)
class WorkerConfig:
    server: str  # the aggregator's base URL, http(s)://host:port
    admin_token: str
    task_id: str
    bundle: str  # the task's bundle directory (its eval graph runs here)
    examples: str  # the held-out set, JSON lines (heldout_set.py)
    poll_s: float = 10.0
    every_version: bool = False
    batch_size: int = 64

    def __post_init__(self):
        if not self.server.startswith(("http://", "https://")):
            raise ValueError(f"server must be an http(s):// URL, got {self.server!r}")
        if len(self.admin_token) < 16:
            raise ValueError("admin_token must be the aggregator's admin token (>= 16 characters)")
        if not Path(self.examples).is_file():
            raise ValueError(f"examples file {self.examples} does not exist")
        if not (Path(self.bundle) / "manifest.json").is_file():
            raise ValueError(f"{self.bundle} is not a bundle directory (no manifest.json)")
        if self.poll_s <= 0 or self.batch_size < 1:
            raise ValueError("poll_s must be > 0 and batch_size >= 1")


class HeldoutWorker:
    def __init__(self, config: WorkerConfig, session: aiohttp.ClientSession):
        self.config, self.session = config, session
        self.bundle = Bundle.load(config.bundle)
        self.examples = read_heldout_set(config.examples, self.bundle)
        self.evaluator = Evaluator(self.bundle)
        self._base = f"{config.server.rstrip('/')}/v1/admin/tasks/{config.task_id}"
        self._headers = {"X-Admin-Token": config.admin_token}

    async def evaluate_pending(self) -> list[int]:
        """One pass: the versions evaluated and posted (none if all are done)."""
        task = await self._json("GET", self._base)
        done = {e["version"] for e in task.get("heldout_evaluation", [])}
        versions = [v["version"] for v in task["versions"]]
        todo = (
            [v for v in versions if v not in done]
            if self.config.every_version
            else [v for v in versions[-1:] if v not in done]
        )
        for version in todo:
            metrics = await self.evaluate(version)
            await self._json(
                "POST", f"{self._base}/versions/{version}/heldout", json={"metrics": metrics}
            )
        return todo

    async def evaluate(self, version: int) -> dict[str, float]:
        async with self.session.get(
            f"{self._base}/model", params={"version": str(version)}, headers=self._headers
        ) as r:
            await _raise_for(r)
            data = await r.read()
        _, params = decode_parameters(data, self.bundle.parameter_specs)
        # ORT releases the GIL: the worker's event loop stays responsive
        return await asyncio.to_thread(
            self.evaluator.evaluate, params, self.examples, self.config.batch_size
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until `stop` is set, waiting out a server that is down or restarting."""
        stop = stop or asyncio.Event()
        said = None  # the refusal logged last: said once, not at every poll
        while not stop.is_set():
            try:
                await self.evaluate_pending()
                said = None
            except (aiohttp.ClientError, asyncio.TimeoutError, _Unavailable):
                pass  # the server is starting, restarting or busy: next poll
            except ServerRefused as e:  # e.g. the task is not created yet: say so, go on
                if str(e) != said:
                    log.warning(
                        "held-out evaluation of %s: %s (polling every %g s)",
                        self.config.task_id,
                        e,
                        self.config.poll_s,
                    )
                said = str(e)
            try:
                await asyncio.wait_for(stop.wait(), self.config.poll_s)
            except asyncio.TimeoutError:
                pass

    async def _json(self, method: str, url: str, **kw) -> dict:
        async with self.session.request(method, url, headers=self._headers, **kw) as r:
            await _raise_for(r)
            return await r.json()


class _Unavailable(Exception):
    pass


async def _raise_for(r: aiohttp.ClientResponse) -> None:
    if r.status >= 500:
        raise _Unavailable(r.status)
    if r.status >= 400:
        raise ServerRefused(f"{r.method} {r.url.path}: {r.status} {await r.text()}")
