"""The aggregator dies (kill -9, or an exit at a chosen point of a write) under a stream of
uploads; restarted, nothing acknowledged is lost or counted twice, versions only move
forward, and every stored model decodes."""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from aggregator.store import CRASH_POINTS
from edge_sdk.bundle import Bundle
from edge_sdk.clock import SystemClock
from edge_sdk.errors import TransportError
from edge_sdk.protocol import UpdateMeta, UpdatePipeline, decode_parameters, encode_update

from .fleet import ADMIN, SECRET, admin, enroll_phone, lm_examples


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, port: int):
        self.data_dir, self.port, self.proc = data_dir, port, None

    def start(self, crash_at: dict | None = None) -> str:
        config = self.data_dir.parent / f"config-{self.port}.json"
        config.write_text(json.dumps({"crash_at": crash_at or {}}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_fl_cli", "serve", "--data-dir", str(self.data_dir),
             "--port", str(self.port), "--admin-token", ADMIN, "--config", str(config),
             "--enrollment-secret", f"keyboard={SECRET}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, self.proc.stderr.read()
        return f"http://127.0.0.1:{self.port}"

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from model_zoo.zoo import build_bundle
    return Bundle.load(build_bundle("keyboard_cifg_tiny", tmp_path_factory.mktemp("b") / "kb"))


def _counted_keys(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "aggregator.db") as db:
        return [r[0] for r in db.execute("SELECT idempotency_key FROM ledger UNION ALL "
                                         "SELECT idempotency_key FROM updates")]


def _storm(server: Server, url: str, bundle: Bundle, tmp_path: Path, kill_after: int | None):
    """24 devices upload until the server dies (killed after `kill_after` acknowledgements,
    or by its own crash point). Returns (acknowledged keys, sent {key: (phone, bytes)})."""
    acknowledged: set[str] = set()
    sent: dict[str, tuple] = {}

    async def scenario():
        async with aiohttp.ClientSession() as session:
            await admin(session, url, "POST", "/v1/admin/tasks", {
                "task_id": "kb", "bundle_dir": str(bundle.path),
                "settings": {"mode": "async", "async_": {"concurrency": 40, "buffer_size": 5,
                                                         "max_staleness": 100}}})
            phones = [await enroll_phone(url, session, bundle, tmp_path, i, SystemClock(),
                                         lm_examples(i)) for i in range(24)]
            rng = np.random.default_rng(0)

            async def one(phone, index):
                for j in range(12):  # keep uploading until the server dies
                    answer = await phone.transport.check_in("kb")
                    if "assignment" not in answer:
                        await asyncio.sleep(0.01)
                        continue
                    delta = {s.name: rng.normal(0, 0.01, s.shape).astype(np.float32)
                             for s in bundle.parameter_specs}
                    key = f"update-{index}-{j}"
                    meta = UpdateMeta("kb", bundle.model_id, answer["assignment"]["model_version"],
                                      phone.identity.device_id, key, 3)
                    data = encode_update(delta, bundle.parameter_specs, meta, UpdatePipeline(),
                                         signing_key=phone.identity.signing_key, rng=rng)
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
            assert failed and all(isinstance(d, (TransportError, aiohttp.ClientError)) for d in failed)

    asyncio.run(scenario())
    server.proc.wait(10)
    return acknowledged, sent


def _recover_and_check(server: Server, bundle: Bundle, acknowledged: set, sent: dict):
    assert acknowledged <= set(_counted_keys(server.data_dir))  # acknowledged = durable
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
    counted = _counted_keys(server.data_dir)
    assert len(counted) == len(set(counted))  # exactly once
    assert acknowledged <= set(counted)
    versions = [v["version"] for v in doc["versions"]]
    assert versions == list(range(len(versions)))  # monotonic, no gaps
    for v in versions:  # the store is whole
        decode_parameters((server.data_dir / "models" / "kb" / f"v{v}.eflm").read_bytes(),
                          bundle.parameter_specs)


def test_kill_9_under_load_loses_nothing_acknowledged(bundle, tmp_path, kill_after):
    server = Server(tmp_path / "data", _free_port())
    try:
        url = server.start()
        acknowledged, sent = _storm(server, url, bundle, tmp_path, kill_after)
        print(f"acknowledged before the kill: {len(acknowledged)} of {len(sent)} sent")
        _recover_and_check(server, bundle, acknowledged, sent)
    finally:
        server.stop()


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_dying_inside_a_write_loses_nothing_acknowledged(bundle, tmp_path, point):
    server = Server(tmp_path / "data", _free_port())
    try:
        # the 3rd time: after a few uploads and at least one version flush
        url = server.start(crash_at={point: 3})
        acknowledged, sent = _storm(server, url, bundle, tmp_path, kill_after=None)
        assert server.proc.returncode == 137  # it died at the crash point, not otherwise
        _recover_and_check(server, bundle, acknowledged, sent)
    finally:
        server.stop()
