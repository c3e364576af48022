"""kill -9 the aggregator (a real subprocess) under load; restart it; nothing acknowledged
is lost or counted twice, and versions only move forward."""
from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.clock import SystemClock
from edge_sdk.protocol import UpdateMeta, UpdatePipeline, encode_update
from edge_sdk.errors import TransportError

from .fleet import ADMIN, SECRET, admin, enroll_phone, lm_examples


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, port: int):
        self.data_dir, self.port, self.proc = data_dir, port, None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_fl_cli", "serve", "--data-dir", str(self.data_dir),
             "--port", str(self.port), "--admin-token", ADMIN,
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


def test_kill_9_under_load_loses_nothing_acknowledged(bundle, tmp_path, kill_after):
    server = Server(tmp_path / "data", _free_port())
    url = server.start()
    acknowledged: set[str] = set()
    sent: dict[str, tuple] = {}
    versions_seen: list[int] = []

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
                    a = answer["assignment"]
                    delta = {s.name: rng.normal(0, 0.01, s.shape).astype(np.float32)
                             for s in bundle.parameter_specs}
                    key = f"update-{index}-{j}"
                    meta = UpdateMeta("kb", bundle.model_id, a["model_version"],
                                      phone.identity.device_id, key, 3)
                    data = encode_update(delta, bundle.parameter_specs, meta, UpdatePipeline(),
                                         signing_key=phone.identity.signing_key, rng=rng)
                    sent[key] = (phone, data)
                    result = await phone.transport.upload("kb", data)
                    acknowledged.add(key)
                    versions_seen.append(result["version"])

            async def killer():
                while len(acknowledged) < kill_after:
                    await asyncio.sleep(0.005)
                server.kill9()  # mid-stream: some uploads acknowledged, some in flight

            tasks = [asyncio.create_task(one(p, i)) for i, p in enumerate(phones)]
            await killer()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            failed = [d for d in done if isinstance(d, BaseException)]
            assert failed and all(isinstance(d, (TransportError, aiohttp.ClientError)) for d in failed)

    try:
        asyncio.run(scenario())
        assert acknowledged, "the kill came before any upload was acknowledged; slow machine?"
        print(f"acknowledged before the kill: {len(acknowledged)} of {len(sent)} sent")
        before = set(_counted_keys(server.data_dir))
        assert acknowledged <= before  # acknowledged means durable

        server.start()  # restart on the same data dir and port

        async def after_restart():
            async with aiohttp.ClientSession() as session:
                status, doc = await admin(session, url, "GET", "/v1/admin/tasks/kb")
                assert status == 200
                # clients retry what they sent; the server counts each key once
                for key, (phone, data) in sent.items():
                    phone.transport.session = session
                    try:
                        await phone.transport.upload("kb", data)
                        acknowledged.add(key)
                    except TransportError:
                        pass  # e.g. not selected any more: refused, not counted
                status, doc = await admin(session, url, "GET", "/v1/admin/tasks/kb")
                return doc

        doc = asyncio.run(after_restart())
        counted = _counted_keys(server.data_dir)
        assert len(counted) == len(set(counted))  # exactly once
        assert acknowledged <= set(counted)
        versions = [v["version"] for v in doc["versions"]]
        assert versions == sorted(versions) == list(range(len(versions)))
        assert doc["version"] >= max(versions_seen, default=0)
        # the store is whole: every model file decodes
        from edge_sdk.protocol import decode_parameters
        for v in versions:
            path = server.data_dir / "models" / "kb" / f"v{v}.eflm"
            decode_parameters(path.read_bytes(), bundle.parameter_specs)
    finally:
        server.stop()
