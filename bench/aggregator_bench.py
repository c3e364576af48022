"""Aggregator throughput and memory.

(a) in-process ingest of int8 keyboard_cifg updates (decode + verify + accumulate), per core;
(b) uploads/s over HTTP on loopback, many concurrent clients, server in its own process;
(c) peak RSS of the server process with 100 vs 10,000 updates in one round (flat = memory
    independent of the number of updates);
(http) check-in + upload of default-codec keyboard_cifg updates over HTTP with durable
    acknowledgements, server and clients in separate processes.

    python -m bench.aggregator_bench [--part a,b,c,load,http]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = str(Path(__file__).resolve().parents[1])


def _keyboard(tmp: Path, name: str = "keyboard_cifg") -> Path:
    from model_zoo.zoo import build_bundle

    return build_bundle(name, tmp / name)


def ingest(
    bundle_dir: Path,
    n: int = 200,
    compression_level: int | None = None,
    verify: bool = True,
    codec: str = "int8",
    deltas: list[dict] | None = None,
    batches: int = 9,
) -> dict:
    """Decode updates of the bundle's model into the mean stage, as the service does
    (checksum, optional signature check, the norm bound, fused dequantize-and-add), one
    core. `codec`:
    "int8" (dense, the issue's case) or "default" (what devices send: top-k 5% int8).
    `deltas` (cycled) default to four of N(0, 0.01) noise, the least compressible case.
    `compression_level` None is the codec's (what devices send). The figure is the median
    of `batches` batches of n updates; the best batch is reported beside it (the host's
    load only ever slows a batch down)."""
    from aggregator.numerics import norm_over
    from aggregator.stages import WeightedMean
    from edge_sdk.protocol import (
        UpdateMeta,
        UpdatePipeline,
        decode_update,
        encode_update,
        generate_signing_key,
        public_key_of,
    )
    from fleet.simulator import codec_of

    specs = json.loads((bundle_dir / "manifest.json").read_text())["parameters"]
    rng = np.random.default_rng(0)
    key = generate_signing_key()
    pipeline = UpdatePipeline(codec_of(codec), compression_level=compression_level)
    kind = "noise" if deltas is None else "trained"
    if deltas is None:
        deltas = [
            {s["name"]: rng.normal(0, 0.01, s["shape"]).astype(np.float32) for s in specs}
            for _ in range(4)
        ]
    messages = [
        encode_update(
            delta,
            specs,
            UpdateMeta("t", "m", 0, "d", f"k{i}", 5),
            pipeline,
            signing_key=key,
            rng=rng,
        )
        for i, delta in enumerate(deltas)
    ]
    public_key = public_key_of(key) if verify else None
    acc = WeightedMean().start()
    acc.add(decode_update(messages[0], specs, public_key=public_key, keep_parts=True).tensors, 5.0)
    times, cpu = [], []
    for _ in range(batches):
        t, c = time.perf_counter(), time.thread_time()
        for i in range(n):
            tensors = decode_update(
                messages[i % len(messages)], specs, public_key=public_key, keep_parts=True
            ).tensors
            norm_over(tensors, 100.0)  # the default max_update_norm, as the service checks it
            acc.add(tensors, 5.0)
        times.append((time.perf_counter() - t) / n)
        cpu.append((time.thread_time() - c) / n)
    per, best = float(np.median(times)), min(times)
    t = time.perf_counter()
    for i in range(n):  # the integrity hash alone: the floor of any ingest of these bytes
        hashlib.sha256(messages[i % len(messages)]).digest()
    checksum = (time.perf_counter() - t) / n
    params = sum(int(np.prod(s["shape"])) for s in specs)
    return {
        "updates_per_s": 1 / per,
        "best_batch_per_s": 1 / best,
        "ms_per_update": per * 1e3,
        "bytes": len(messages[0]),
        "cpu_ms_per_update": float(np.median(cpu)) * 1e3,  # differs from wall when contended
        "checksum_ms": checksum * 1e3,
        "decode_accumulate_per_s": 1 / (per - checksum),
        "params_per_s": params / per,
        "compression_level": pipeline.compression_level,
        "default_level": pipeline.compression_level == pipeline.codec.zstd_level,
        "signature_checked": verify,
        "codec": codec,
        "deltas": kind,
    }


TRAINED_ROLES = ("hamlet/HAMLET", "othello/IAGO", "macbeth/MACBETH", "king-lear/LEAR")


def _trained_delta(role: str) -> dict:
    """A real keyboard_cifg delta: one local epoch on a Shakespeare role (its top-k
    positions cluster in the rows of the words it saw, unlike noise)."""
    from bench.codec_bench import real_delta

    return real_delta(role)[0]


_RSS_CHILD = r"""
import json, sys
sys.path.insert(0, {root!r})
import numpy as np
from bench.memory import peak_rss_mb
from aggregator.config import SyncSettings, TaskSettings
from aggregator.service import AggregatorService
from aggregator.store import SqliteStore, Device
from edge_sdk.clock import FakeClock
from edge_sdk.protocol import (DEFAULT_CODEC, UpdateMeta, UpdatePipeline, encode_update,
                               generate_signing_key, public_key_of)
n = {n}
clock = FakeClock()
service = AggregatorService(SqliteStore({data!r}), clock, np.random.default_rng(0), {{"p": "s"}})
service.create_task("kb", {bundle!r}, TaskSettings(sync=SyncSettings(goal=n, overselect=1.0,
                    selection_timeout_s=1e9, report_deadline_s=1e9)))
specs = service.tasks["kb"].record.specs
model_id = service.tasks["kb"].record.model_id
key = generate_signing_key()
rng = np.random.default_rng(0)
base = {{s["name"]: rng.normal(0, 0.01, s["shape"]).astype(np.float32) for s in specs}}
baseline = peak_rss_mb()
for i in range(n):
    device = Device(f"d{{i}}", "p", public_key_of(key))
    service.check_in(device, "kb")
    meta = UpdateMeta("kb", model_id, 0, device.device_id, f"k{{i}}", 5)
    data = encode_update(base, specs, meta, UpdatePipeline(DEFAULT_CODEC), signing_key=key, rng=rng)
    service.submit_update(device, "kb", data)
assert service.tasks["kb"].coordinator.version == 1
print(json.dumps({{"peak_rss_mb": peak_rss_mb(), "baseline_mb": baseline}}))
"""


def rss_flat(bundle_dir: Path, counts=(100, 10_000)) -> list[dict]:
    rows = []
    for n in counts:
        with tempfile.TemporaryDirectory() as data:
            code = _RSS_CHILD.format(root=ROOT, n=n, data=data, bundle=str(bundle_dir))
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(
                {"updates": n, "peak_rss_mb": r["peak_rss_mb"], "seconds": time.perf_counter() - t}
            )
    return rows


ADMIN = {"X-Admin-Token": "bench-admin-token-0123"}
ASYNC_TASK = {
    "mode": "async",
    "async_": {"concurrency": 100_000, "buffer_size": 200, "max_staleness": 1_000_000},
}


async def _create_task(session, url: str, bundle_dir: Path) -> None:
    async with session.post(
        url + "/v1/admin/tasks",
        headers=ADMIN,
        json={"task_id": "kb", "bundle_dir": str(bundle_dir), "settings": ASYNC_TASK},
    ) as r:
        assert r.status == 201, await r.text()


class _Connection:
    """One device's keep-alive HTTP/1.1 connection on raw asyncio streams: requests go
    out as prepared bytes, and of each answer only the status line, Content-Length and
    Connection are read before the body. A lean client, so the load generator's own CPU
    per cycle stays well below the server's (aiohttp's client costs more than the work
    a device must do per upload: a fresh signature over a unique update)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """Send one request (`head` ends with the blank line); (status, answer body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(head)
            self.writer.write(body)
            lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
            status, length, close = int(lines[0].split(b" ", 2)[1]), 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            answer = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def _request_head(method: str, path: str, host: str, token: str, kind: str, size: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {size}\r\n\r\n"
    ).encode()


async def _drive(
    url: str, bundle_dir: Path, clients: int, start: float, stop: float, codec: str, name: str
) -> dict:
    """`clients` devices that enroll, then from wall time `start` to `stop` check in and
    upload back to back. Returns each upload's (acknowledged at, latency) in wall seconds,
    and the counts of errors and 429s.

    Every check-in is a real one, and every upload a unique update, signed afresh by its
    device, that the server verifies in full (checksum, signature, decode); what is the
    same for every upload is prepared once: the encoded delta (encoding a full model's
    top-k per upload would make the load generator, not the server, the bottleneck) and
    each device's request heads."""
    from urllib.parse import urlsplit

    import aiohttp

    from edge_sdk.bundle import Bundle
    from edge_sdk.protocol import (
        DEFAULT_CODEC,
        CodecSpec,
        DecodeLimits,
        UpdateMeta,
        UpdatePipeline,
        encode_update,
        generate_signing_key,
        public_key_of,
    )
    from edge_sdk.protocol.message import UPDATE_MAGIC, _seal, _unframe
    from edge_sdk.protocol.messages import CheckInRequest
    from edge_sdk.transport import RetryPolicy, Transport

    bundle = Bundle.load(bundle_dir)
    acks, errors, limited = [], 0, 0
    rng = np.random.default_rng(0)
    delta = {
        s.name: rng.normal(0, 0.01, s.shape).astype(np.float32) for s in bundle.parameter_specs
    }
    pipeline = UpdatePipeline(DEFAULT_CODEC if codec == "default" else CodecSpec())
    template = encode_update(
        delta,
        bundle.parameter_specs,
        UpdateMeta("kb", bundle.model_id, 0, "template", "template", 3),
        pipeline,
        signing_key=generate_signing_key(),
        rng=rng,
    )
    # the protocol package's own framing (what reseal_update does), the template opened once
    frame = _unframe(template, UPDATE_MAGIC, DecodeLimits())
    header, body = dict(frame.header), bytes(frame.body)
    split = urlsplit(url)
    host = split.netloc
    check_in_body = json.dumps(CheckInRequest("kb", {}, "0.1").to_json()).encode()

    def failed(status: int, answer: bytes) -> None:
        nonlocal errors, limited
        if status == 429:
            limited += 1
            return
        errors += 1
        if errors == 1:
            print(f"first error: {status} {answer[:300]!r}", file=sys.stderr)

    async def device(i: int, session):
        key = generate_signing_key()
        t = Transport(url, session, retry=RetryPolicy(attempts=1), rng=np.random.default_rng(i))
        await t.enroll("bench", "secret", public_key_of(key))
        token = t.token
        check_in_head = _request_head(
            "POST", "/v1/checkin", host, token, "application/json", len(check_in_body)
        )
        upload_path = "/v1/tasks/kb/updates"
        connection = _Connection(split.hostname, split.port)
        await asyncio.sleep(max(0.0, start - time.time()))
        j = 0
        try:
            while time.time() < stop:
                j += 1
                status, answer = await connection.exchange(check_in_head, check_in_body)
                assignment = json.loads(answer).get("assignment") if status == 200 else None
                if assignment is None:
                    failed(status, answer)
                    continue
                meta = UpdateMeta(
                    "kb",
                    bundle.model_id,
                    assignment["model_version"],
                    t.device_id,
                    f"{name}{i}-{j}",
                    3,
                )
                meta.validate()
                data = _seal(UPDATE_MAGIC, header | {"meta": dict(meta.__dict__)}, body, key)
                head = _request_head(
                    "POST", upload_path, host, token, "application/octet-stream", len(data)
                )
                sent = time.time()
                status, answer = await connection.exchange(head, data)
                if status == 200:
                    now = time.time()
                    acks.append((now, now - sent))
                else:
                    failed(status, answer)
        finally:
            connection.close()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*[device(i, session) for i in range(clients)])
    return {
        "acks": acks,
        "errors": errors,
        "limited": limited,
        "bytes": len(template),
        "cpu_s": time.process_time(),
    }


def _summary(
    acks: list,
    since: float,
    until: float,
    clients: int,
    codec: str,
    nbytes: int,
    errors: int,
    limited: int,
) -> dict:
    window = [lat for at, lat in acks if since <= at < until]
    lat = np.array(window or [np.nan]) * 1e3
    return {
        "clients": clients,
        "codec": codec,
        "bytes": nbytes,
        "uploads": len(window),
        "uploads_per_s": len(window) / (until - since),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
        "rate_limited": limited,
    }


async def _http_load(
    url: str, bundle_dir: Path, clients: int, seconds: float, codec: str = "float32"
) -> dict:
    """Create the task, then drive it from this process for `seconds`."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        await _create_task(session, url, bundle_dir)
    start = time.time() + min(5.0, 0.02 * clients)  # enrollment first
    r = await _drive(url, bundle_dir, clients, start, start + seconds, codec, "d")
    return _summary(
        r["acks"], start, start + seconds, clients, codec, r["bytes"], r["errors"], r["limited"]
    )


def _proc_cpu_s(pid: int | str) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by thread id (the main thread's is pid)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = _proc_cpu_s(f"{pid}/task/{tid}")
        except OSError:  # the thread ended
            pass
    return out


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load_worker(argv: list[str]) -> None:
    """A load-generating process (see `http`): prints its result as one JSON line."""
    url, bundle, clients, start, stop, codec, name = argv
    r = asyncio.run(_drive(url, Path(bundle), int(clients), float(start), float(stop), codec, name))
    print(json.dumps(r))


def http(
    bundle_dir: Path,
    clients: int = 64,
    seconds: float = 10.0,
    codec: str = "float32",
    processes: int = 1,
    warmup_s: float = 0.0,
    config: dict | None = None,
    server_path: str | None = None,
) -> dict:
    """The server in its own process, `clients` devices in `processes` other ones (split
    evenly), uploading back to back for `warmup_s` + `seconds`; the figures cover the
    last `seconds` (acknowledgements in that window), with the server's CPU milliseconds
    per acknowledged upload and its RSS at the window's start and end. `server_path`:
    the PYTHONPATH of the server (another checkout, for an A/B; default this one's)."""
    import aiohttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        # each simulated client uploads back to back, far above a phone's rate: lift the cap
        server_config = Path(data) / "server.json"
        server_config.write_text(
            json.dumps({"rate_per_s": 10_000, "burst": 10_000} | (config or {}))
        )
        from edge_fl_cli import spawn_serve

        proc, _ = spawn_serve(
            Path(data) / "state",
            ADMIN["X-Admin-Token"],
            {"bench": "secret"},
            port=port,
            options=("--config", str(server_config)),
            cwd=server_path or ROOT,
            env=os.environ | ({"PYTHONPATH": server_path} if server_path else {}),
        )
        workers = []
        try:

            async def create():
                async with aiohttp.ClientSession() as session:
                    await _create_task(session, url, bundle_dir)

            asyncio.run(create())
            start = time.time() + 3.0 + 0.02 * clients  # the workers start and enroll first
            since, stop = start + warmup_s, start + warmup_s + seconds
            shares = [clients // processes + (i < clients % processes) for i in range(processes)]
            workers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.aggregator_bench",
                        "--load-worker",
                        url,
                        str(bundle_dir),
                        str(n),
                        repr(start),
                        repr(stop),
                        codec,
                        f"p{i}-",
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i, n in enumerate(shares)
            ]
            time.sleep(max(0.0, since - time.time()))
            cpu0, rss0 = _proc_cpu_s(proc.pid), _proc_rss_mb(proc.pid)
            threads0 = _threads_cpu_s(proc.pid)
            load0 = sum(_proc_cpu_s(w.pid) for w in workers)
            rss = [rss0]
            while time.time() < stop:  # RSS each second: flat, or growing with uploads?
                time.sleep(max(0.0, min(1.0, stop - time.time())))
                rss.append(_proc_rss_mb(proc.pid))
            cpu1 = _proc_cpu_s(proc.pid)
            threads1 = _threads_cpu_s(proc.pid)
            load1 = sum(_proc_cpu_s(w.pid) for w in workers)
            results = [json.loads(w.communicate()[0].strip().splitlines()[-1]) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
            proc.terminate()
            proc.wait()
    acks = [tuple(a) for r in results for a in r["acks"]]
    out = _summary(
        acks,
        since,
        stop,
        clients,
        codec,
        results[0]["bytes"],
        sum(r["errors"] for r in results),
        sum(r["limited"] for r in results),
    )

    def per_upload(seconds: float) -> float:
        return seconds * 1e3 / max(1, out["uploads"])

    out |= {
        "processes": processes,
        "uploads_by_process": [sum(since <= at < stop for at, _ in r["acks"]) for r in results],
        # the load processes' CPU in the window (from /proc, like the server's)
        "client_cpu_ms_per_upload": per_upload(load1 - load0),
        "server_cpu_ms_per_upload": per_upload(cpu1 - cpu0),
        # the event loop's thread (the main one), and the busiest other (the service's)
        "server_loop_ms_per_upload": per_upload(threads1[proc.pid] - threads0[proc.pid]),
        "server_other_thread_ms_per_upload": per_upload(
            max(c - threads0.get(t, 0.0) for t, c in threads1.items() if t != proc.pid)
        ),
        # at the window's start, its middle and its end
        "server_rss_mb": (rss[0], rss[len(rss) // 2], rss[-1]),
        "load_average": os.getloadavg(),
    }
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="a,b,c,load,http")
    parser.add_argument("--clients", type=int, default=64, help="(http) devices in all")
    parser.add_argument("--processes", type=int, default=2, help="(http) load-generating processes")
    parser.add_argument("--seconds", type=float, default=20.0, help="(http) measured window")
    args = parser.parse_args(argv)
    parts = args.part.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "a" in parts:
            bundle = _keyboard(tmp)
            rows = results["ingest"] = [
                ingest(bundle, compression_level=level, verify=verify)
                for level in (3, -1)
                for verify in (True, False)
            ]
            trained = [_trained_delta(role) for role in TRAINED_ROLES]
            rows += [
                ingest(
                    bundle, codec="default", compression_level=level, deltas=deltas, verify=verify
                )
                for deltas in (None, trained)
                for level in (-1, 3)
                for verify in (True, False)
            ]
            print("\n== Aggregator (a): in-process ingest of keyboard_cifg updates, 1 core ==")
            print(
                "(SHA-256 checksum, Ed25519 signature when checked, fused dequantize-and-add "
                "into the float32 sum; target 2,000 updates/s)"
            )
            print(
                "(updates/s: median of 9 batches of 200, then the best batch; * marks the "
                "codec's own zstd level, what devices send)"
            )
            for r in rows:
                print(
                    f"{r['codec']:>7s} codec, {r['deltas']:>7s} deltas, zstd level "
                    f"{r['compression_level']:>2}{'*' if r['default_level'] else ' '}, signature "
                    f"{'checked    ' if r['signature_checked'] else 'not checked'}: "
                    f"{r['updates_per_s']:5.0f} updates/s, best {r['best_batch_per_s']:5.0f} "
                    f"({r['ms_per_update']:.2f} ms each, "
                    f"{r['cpu_ms_per_update']:.2f} ms CPU, "
                    f"{r['bytes'] / 2**20:.2f} MB on the wire); of which SHA-256 checksum "
                    f"{r['checksum_ms']:.2f} ms; the rest (decompress, decode, accumulate) "
                    f"alone: {r['decode_accumulate_per_s']:.0f}/s"
                )
        if "b" in parts:
            r = results["http"] = http(_keyboard(tmp, "keyboard_cifg_tiny"))
            print(
                "\n== Aggregator (b): uploads over HTTP on loopback (keyboard_cifg_tiny, float32) =="
            )
            print(
                f"{r['clients']} concurrent clients: {r['uploads_per_s']:.0f} uploads/s, "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['errors']} errors, "
                f"{r['rate_limited']} rate-limited (target 300 uploads/s)"
            )
        if "load" in parts:
            r = results["load"] = http(
                _keyboard(tmp, "keyboard_cifg_tiny"), clients=1000, seconds=20.0
            )
            print("\n== Load: 1,000 concurrent devices checking in and uploading (one process) ==")
            print(
                f"{r['uploads']} uploads in 20 s: {r['uploads_per_s']:.0f}/s, p50 {r['p50_ms']:.0f} ms, "
                f"p99 {r['p99_ms']:.0f} ms, {r['errors']} errors, {r['rate_limited']} rate-limited"
            )
        if "http" in parts:
            r = results["http_default"] = http(
                _keyboard(tmp),
                clients=args.clients,
                seconds=args.seconds,
                codec="default",
                processes=args.processes,
                warmup_s=3.0,
            )
            print(
                "\n== Aggregator (http): check-in + upload over HTTP, default codec, "
                "keyboard_cifg, durable acknowledgements =="
            )
            print(
                f"{r['clients']} concurrent clients in {r['processes']} other processes, "
                f"{r['bytes'] / 1e3:.0f} kB per update, {args.seconds:g} s after a 3 s warm-up: "
                f"{r['uploads_per_s']:.0f} uploads/s, p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, {r['errors']} errors, {r['rate_limited']} "
                f"rate-limited (target 1,000/s, p99 < 250 ms)"
            )
            print(
                f"server CPU {r['server_cpu_ms_per_upload']:.2f} ms per check-in + upload "
                f"(event loop {r['server_loop_ms_per_upload']:.2f}, service thread "
                f"{r['server_other_thread_ms_per_upload']:.2f}); "
                f"server RSS {' -> '.join(f'{x:.0f}' for x in r['server_rss_mb'])} MB "
                f"(window start, middle, end); load generator CPU "
                f"{r['client_cpu_ms_per_upload']:.2f} ms per cycle; "
                f"load average {r['load_average'][0]:.2f}"
            )
        if "c" in parts:
            rows = results["rss"] = rss_flat(_keyboard(tmp))
            print(
                "\n== Aggregator (c): server peak RSS by updates in one round (keyboard_cifg, "
                "default codec) =="
            )
            for r in rows:
                print(
                    f"{r['updates']:6d} updates: peak RSS {r['peak_rss_mb']:.0f} MB "
                    f"({r['seconds']:.0f} s)"
                )
            print(
                f"ratio {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f} (target: within 1.20)"
            )
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load-worker"]:
        _load_worker(sys.argv[2:])
    else:
        main()
