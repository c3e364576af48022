"""Test helpers: a real aggregator on 127.0.0.1 (port 0, in this process, or a real
`edge-fl serve` subprocess) and real edge_sdk devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import numpy as np

from aggregator.app import ServerConfig, build_app, make_service
from aggregator.connections import serve
from edge_sdk.bundle import Bundle
from edge_sdk.client import DeviceIdentity, FederatedClient
from edge_sdk.eligibility import DeviceState, MinLocalExamples, Policy, RequireCharging
from edge_sdk.example_store import ExampleStore
from edge_sdk.protocol import CodecSpec, UpdatePipeline, generate_signing_key, public_key_of
from edge_sdk.protocol.message import UpdateMeta, encode_update
from edge_sdk.transport import RetryPolicy, Transport

ADMIN = "admin-token-for-tests"
SECRET = "population-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`edge-fl serve` in a subprocess on 127.0.0.1; its stderr goes to a log file."""

    def __init__(self, data_dir: Path, port: int, store_url: str | None = None):
        self.data_dir, self.port, self.store_url, self.proc = data_dir, port, store_url, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, crash_at: dict | None = None, **config) -> str:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        path = self.data_dir.parent / f"config-{self.port}.json"
        path.write_text(json.dumps({"crash_at": crash_at or {}} | config))
        store = ["--store-url", self.store_url] if self.store_url else []
        self.log = self.data_dir.parent / f"server-{self.port}.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_fl_cli",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--admin-token",
                ADMIN,
                "--config",
                str(path),
                "--enrollment-secret",
                f"keyboard={SECRET}",
                *store,
            ],
            stdout=subprocess.PIPE,
            stderr=open(self.log, "a"),
            text=True,
        )
        line = self.proc.stdout.readline()
        assert "listening on" in line, self.log.read_text()
        return self.url

    async def enroll(self, session, bundle: Bundle, tmp: Path, index: int) -> Phone:
        """Phone `index` enrolled here on the system clock, its store under tmp holding
        `lm_examples(index)`."""
        from edge_sdk.clock import SystemClock

        return await enroll_phone(
            self.url, session, bundle, tmp, index, SystemClock(), lm_examples(index)
        )

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, clock, port: int = 0, **config):
    cfg = ServerConfig(
        str(data_dir), ADMIN, {"keyboard": SECRET}, **({"tick_interval_s": 0.05} | config)
    )
    service = make_service(cfg, clock, np.random.default_rng(0))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    try:
        # as `edge-fl serve` runs it: every connection with its deadlines
        async with serve(build_app(cfg, service), cfg, sock):
            yield f"http://127.0.0.1:{port}", service
    finally:
        service.store.close()


@dataclass
class Env:
    url: str
    service: object
    session: aiohttp.ClientSession
    clock: object
    bundle: Bundle
    tmp: Path

    async def enroll(self, index: int = 0, examples: list[dict] | None = None) -> Phone:
        """Phone `index` enrolled on this server, its store under tmp holding `examples`
        (default: `lm_examples(index)`)."""
        if examples is None:
            examples = lm_examples(index)
        return await enroll_phone(
            self.url, self.session, self.bundle, self.tmp, index, self.clock, examples
        )


@contextlib.asynccontextmanager
async def server_with_task(
    tmp: Path, bundle: Bundle, settings: dict, task_id: str = "kb", store_url: str | None = None
):
    """A running server (fake clock), a client session, and one task created through the
    admin API; state in SQLite under tmp, or in the PostgreSQL database at store_url."""
    from edge_sdk.clock import FakeClock

    clock = FakeClock()
    async with (
        running_server(tmp / "data", clock, store_url=store_url) as (url, service),
        aiohttp.ClientSession() as session,
    ):
        status, doc = await create_task(session, url, bundle, settings, task_id)
        assert status == 201, doc
        yield Env(url, service, session, clock, bundle, tmp)


def good_state(**overrides) -> DeviceState:
    base = dict(
        charging=True,
        battery_level=0.9,
        network="unmetered",
        idle=True,
        thermal="nominal",
        free_storage_bytes=2**30,
        local_time=datetime(2026, 1, 1, 3),
    )
    return DeviceState(**(base | overrides))


@dataclass
class Phone:
    client: FederatedClient
    transport: Transport
    identity: DeviceIdentity


async def enroll_phone(
    url: str,
    session: aiohttp.ClientSession,
    bundle: Bundle,
    tmp: Path,
    index: int,
    clock,
    examples: list[dict],
    codec: CodecSpec = CodecSpec(),
) -> Phone:
    key = generate_signing_key()
    transport = Transport(
        url,
        session,
        retry=RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05),
        rng=np.random.default_rng(index),
    )
    doc = await transport.enroll("keyboard", SECRET, public_key_of(key))
    store = ExampleStore(tmp / f"phone{index}.db", clock=clock)
    store.add_many("keyboard", examples)
    identity = DeviceIdentity(doc["device_id"], key)
    client = FederatedClient(
        bundle,
        transport,
        store,
        identity,
        policy=Policy((RequireCharging(), MinLocalExamples(1))),
        clock=clock,
        rng=np.random.default_rng(100 + index),
        collection="keyboard",
        pipeline=UpdatePipeline(codec),
    )
    return Phone(client, transport, identity)


def normal_delta(bundle: Bundle, rng: np.random.Generator, scale: float = 0.01) -> dict:
    """A delta of N(0, scale) float32 noise for every parameter (draws from `rng`)."""
    return {
        s.name: rng.normal(0, scale, s.shape).astype(np.float32) for s in bundle.parameter_specs
    }


def full_delta(bundle: Bundle, value: float) -> dict:
    """A delta of `value` in every element of every parameter (float32)."""
    return {s.name: np.full(s.shape, value, np.float32) for s in bundle.parameter_specs}


def signed_update(
    phone: Phone,
    bundle: Bundle,
    delta: dict,
    key: str,
    version: int = 0,
    examples: int = 5,
    *,
    task_id: str = "kb",
    rng: np.random.Generator | None = None,
    specs: list | None = None,
    signing_key: bytes | None = None,
) -> bytes:
    """`delta` as the update `phone` uploads: computed from model `version` of `task_id`
    on `examples` examples, idempotency key `key`, default pipeline, signed by the phone's
    key (or `signing_key`, to forge one); `specs` overrides the bundle's parameter list;
    `rng` defaults to a fresh generator seeded 0."""
    meta = UpdateMeta(task_id, bundle.model_id, version, phone.identity.device_id, key, examples)
    return encode_update(
        delta,
        bundle.parameter_specs if specs is None else specs,
        meta,
        UpdatePipeline(),
        signing_key=phone.identity.signing_key if signing_key is None else signing_key,
        rng=np.random.default_rng(0) if rng is None else rng,
    )


async def admin(session, url, method, path, json=None):
    async with session.request(
        method, url + path, json=json, headers={"X-Admin-Token": ADMIN}
    ) as r:
        return r.status, await r.json()


def cli_create_task(task_id: str, bundle, settings: Path, url: str, *more: str) -> int:
    """`edge-fl task create TASK --bundle BUNDLE --settings SETTINGS --server URL [MORE]`
    in this process: its exit code."""
    from edge_fl_cli import main as cli

    return cli(
        ["task", "create", task_id, "--bundle", str(bundle), "--settings", str(settings)]
        + ["--server", url, *more]
    )


async def create_task(session, url, bundle, settings, task_id: str = "kb"):
    """POST /v1/admin/tasks: task `task_id` from `bundle` (a Bundle or anything with a
    `path`) with `settings`; returns (HTTP status, answer document)."""
    task = {"task_id": task_id, "bundle_dir": str(bundle.path), "settings": settings}
    return await admin(session, url, "POST", "/v1/admin/tasks", task)


def lm_examples(seed: int, n: int = 12, vocab: int = 500) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(4, vocab, size=int(rng.integers(4, 10)))
        out.append({"tokens": ids[:-1], "targets": ids[1:]})
    return out


class ThreadedServer:
    """build_app + serve() (the guarded connections of `edge-fl serve`) in a thread with
    its own event loop; `service` is the app's, driven by `clock`."""

    def __init__(self, data_dir: Path, clock, **config):
        self.config = ServerConfig(
            str(data_dir), ADMIN, {"keyboard": SECRET}, **({"tick_interval_s": 0.05} | config)
        )
        self.clock = clock

    def __enter__(self):
        self.service = make_service(self.config, self.clock, np.random.default_rng(0))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main():
            self.stop = asyncio.Event()
            async with serve(build_app(self.config, self.service), self.config, sock):
                ready.set()
                await self.stop.wait()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),))
        self.thread.start()
        assert ready.wait(30)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        self.loop.close()
        self.service.store.close()
