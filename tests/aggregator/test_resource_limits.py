"""Resource limits: one request can never hurt the next. Against the real app on
127.0.0.1: `edge-fl serve` in a subprocess for the connection deadlines, declared sizes
and encodings; an in-process server (with a fake clock) on its guarded connections for
throttling, upload sessions and what the public views show."""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import gzip
import json
import os
import select
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from aggregator.app import ServerConfig
from aggregator.connections import ConnectionGuard
from aggregator.disclosure import public_task
from aggregator.middleware import TokenBuckets
from aggregator.vocabulary import FAILURE_REASONS, failure_reason, safe_text
from edge_sdk.clock import FakeClock

from .fleet import ADMIN, SECRET, ServerProcess, ThreadedServer, free_port


# -- helpers ---------------------------------------------------------------------------------
def call(
    url: str, method: str = "GET", doc=None, headers: dict | None = None, data: bytes | None = None
):
    """(status, headers, parsed JSON or raw bytes)."""
    headers = dict(headers or {})
    if doc is not None:
        data = json.dumps(doc).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, h, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, h, body = e.code, e.headers, e.read()
    try:
        return status, h, json.loads(body) if body else None
    except ValueError:
        return status, h, body


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def tiny_bundle(path: Path) -> Path:
    """A bundle directory as create_task reads it: a manifest and the parameters."""
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "parameters.npz", w=np.zeros((4, 3), np.float32))
    (path / "manifest.json").write_text(
        json.dumps(
            {
                "model_id": "tiny",
                "parameters_file": "parameters.npz",
                "parameters": [{"name": "w", "shape": [4, 3]}],
            }
        )
    )
    return path


def add_task(url: str, bundle: Path, task_id: str = "kb", settings: dict | None = None):
    status, _, doc = call(
        url + "/v1/admin/tasks",
        "POST",
        {"task_id": task_id, "bundle_dir": str(bundle), "settings": settings or {}},
        headers={"X-Admin-Token": ADMIN},
    )
    assert status == 201, doc


def enroll(url: str) -> dict:
    status, _, doc = call(
        url + "/v1/enroll",
        "POST",
        {
            "population": "keyboard",
            "secret": SECRET,
            "public_key": base64.b64encode(os.urandom(32)).decode(),
        },
    )
    assert status == 201, doc
    return {"Authorization": f"Bearer {doc['token']}"}


# -- connection deadlines, declared sizes, encodings: the real `edge-fl serve` --------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    server = ServerProcess(tmp / "data", free_port())
    # short read deadlines; the idle timeout (aiohttp's keep-alive) far longer, so that
    # only the header and body deadlines can close the slow connections below
    server.start(header_timeout_s=0.5, body_timeout_s=0.5, idle_timeout_s=120)
    try:
        yield server
    finally:
        server.stop()


def test_slow_header_and_slow_body_connections_are_closed_while_others_are_served(served):
    """200 connections dripping header bytes and 50 dripping a body, one byte per 0.1 s
    each (so no inactivity timer would fire), are all closed well before the idle
    timeout; slow bodies get 408 first; a normal client is served meanwhile."""
    slow_header = b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nX-Drip: "
    slow_body = (
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    socks = {}
    for i in range(250):
        s = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        s.sendall(slow_header if i < 200 else slow_body)
        s.setblocking(False)
        socks[s] = b""
    open_, answers, normal = set(socks), {}, None
    give_up = time.monotonic() + 60  # half the idle timeout: only the deadlines close them
    while open_ and time.monotonic() < give_up:
        readable, _, _ = select.select(list(open_), [], [], 0.1)
        for s in readable:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if data:
                answers[s] = answers.get(s, b"") + data
            else:
                open_.discard(s)
        for s in list(open_):
            with contextlib.suppress(BlockingIOError):
                try:
                    s.send(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    open_.discard(s)
        if normal is None:
            normal = call(served.url + "/v1/status")[0]
    try:
        assert not open_, f"{len(open_)} slow connections still open"
        assert normal == 200
        body_answers = [answers.get(s, b"") for i, s in enumerate(socks) if i >= 200]
        assert all(a.startswith(b"HTTP/1.1 408") for a in body_answers), body_answers[:3]
        assert all(b"body_timeout" in a for a in body_answers)
        assert call(served.url + "/v1/status")[0] == 200  # and still after the attack
    finally:
        for s in socks:
            s.close()


class _Transport(asyncio.Transport):
    closed = False

    def close(self):
        self.closed = True


def test_the_guard_finds_the_end_of_headers_split_across_packets():
    """The header deadline ends at the blank line, wherever the packets split it (asyncio
    runs timers in order, so the sleeps below outlast the 0.05 s deadline)."""

    async def scenario():
        inner = asyncio.Protocol()
        guard = ConnectionGuard(inner, header_timeout_s=0.05, idle_timeout_s=10)
        transport = _Transport()
        guard.connection_made(transport)
        for part in (b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"):
            guard.data_received(part)
        await asyncio.sleep(0.2)
        assert not transport.closed  # the headers ended in time: the request is the app's
        guard.request_finished()
        guard.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the next one never ends
        await asyncio.sleep(0.2)
        assert transport.closed

    asyncio.run(scenario())


def test_a_declared_body_over_the_limit_is_answered_at_once_and_the_connection_closes(served):
    for path in ("/v1/enroll", "/v1/tasks/kb/updates"):  # no credentials needed to be refused
        answer = raw_exchange(
            served.port,
            (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {10**12}\r\n\r\n").encode(),
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"Connection: close" in head
        assert json.loads(body)["error"]["code"] == "payload_too_large"
    # JSON calls take far less than updates (max_json_bytes, 64 KiB by default)
    status, _, doc = call(
        served.url + "/v1/enroll",
        "POST",
        data=b" " * (65 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and doc["error"]["max_bytes"] == 64 * 1024


def test_a_body_must_declare_its_length(served):
    answer = raw_exchange(
        served.port,
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 411") and b"length_required" in answer


def test_an_oversized_header_line_is_refused(served):
    answer = raw_exchange(
        served.port, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    )
    assert answer.split(b" ", 2)[1] in (b"400", b"431")


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_gzip_bomb_is_refused_without_being_inflated(served):
    bomb = gzip.compress(b"\0" * (64 * 2**20), 9)  # 64 MiB in ~64 KB
    assert len(bomb) < 100_000
    before = _peak_rss_kb(served.proc.pid)
    for path in ("/v1/tasks/kb/updates", "/v1/enroll"):
        status, _, doc = call(
            served.url + path,
            "POST",
            data=bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
        )
        assert status == 415 and doc["error"]["code"] == "unsupported_content_encoding"
    # inflating it even once would raise the peak by tens of MB
    assert _peak_rss_kb(served.proc.pid) - before < 16 * 1024


# -- per-address throttling of failed credentials --------------------------------------------
def test_failed_credentials_are_throttled_per_address(tmp_path):
    with ThreadedServer(
        tmp_path / "d", FakeClock(), auth_failures_per_s=0.001, auth_failure_burst=3
    ) as srv:
        good = enroll(srv.url)
        wrong = {
            "population": "keyboard",
            "secret": "guess",
            "public_key": base64.b64encode(b"k" * 32).decode(),
        }
        assert call(srv.url + "/v1/enroll", "POST", wrong)[0] == 403
        assert call(srv.url + "/v1/checkin", "POST", {}, {"Authorization": "Bearer nope"})[0] == 401
        assert call(srv.url + "/v1/admin/tasks", headers={"X-Admin-Token": "x" * 20})[0] == 403
        # the bucket is empty: every credentialed call from this address waits, even a
        # right secret (it is not even checked), with Retry-After
        for attempt in (wrong, wrong | {"secret": SECRET}):
            status, headers, doc = call(srv.url + "/v1/enroll", "POST", attempt)
            assert status == 429 and doc["error"]["code"] == "rate_limited"
            assert int(headers["Retry-After"]) >= 1
        assert call(srv.url + "/v1/checkin", "POST", {}, good)[0] == 429
        assert call(srv.url + "/v1/status")[0] == 200  # no credentials, no throttle


def test_an_admin_token_that_is_not_ascii_is_refused_not_a_500(tmp_path):
    with ThreadedServer(tmp_path / "d", FakeClock()) as srv:
        answer = raw_exchange(
            srv.port,
            b"GET /v1/admin/tasks HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\nX-Admin-Token: \xff\xfe\xc3\x28\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 403"), answer[:100]


def test_token_buckets_keep_bounded_memory():
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=100)
    for i in range(10_000):
        buckets.take(f"10.0.{i // 256}.{i % 256}", now=0.0)
    assert len(buckets.state) == 100
    assert buckets.take("10.0.39.15", now=0.0) == 0.0  # among the newest: one token left
    assert buckets.take("10.0.39.15", now=0.0) > 0
    # buckets that filled up again are dropped as soon as they are the oldest
    buckets.take("fresh", now=1000.0)
    assert list(buckets.state) == ["fresh"]


# -- resumable upload sessions: expiry and quota ---------------------------------------------
def _begin(url, headers, task="kb", size=100):
    return call(
        url + f"/v1/tasks/{task}/uploads", "POST", {"size": size, "sha256": "0" * 64}, headers
    )


def test_an_expired_upload_session_is_refused_and_removed_by_the_ticker_and_at_start_up(tmp_path):
    clock, data = FakeClock(), tmp_path / "d"
    # no tick during the first part: the request, not the ticker, meets the expiry
    with ThreadedServer(data, clock, upload_session_ttl_s=60, tick_interval_s=3600) as srv:
        add_task(srv.url, tiny_bundle(tmp_path / "b"))
        device = enroll(srv.url)
        status, _, first = _begin(srv.url, device)
        assert status == 201
        upload = srv.url + f"/v1/uploads/{first['upload_id']}"
        assert (
            call(upload + "?offset=0", "PUT", data=b"x" * 40, headers=device)[2]["received"] == 40
        )
        assert (data / "partial" / first["upload_id"]).exists()
        clock.advance(61)
        status, _, doc = call(upload, headers=device)
        assert status == 410 and doc["error"]["code"] == "upload_expired"
        assert call(upload, headers=device)[0] == 404  # gone, with its bytes
        assert not (data / "partial" / first["upload_id"]).exists()
    with ThreadedServer(data, clock, upload_session_ttl_s=60) as srv:
        # the ticker removes one nobody asks about
        second = _begin(srv.url, device)[2]["upload_id"]
        clock.advance(61)
        for _ in range(600):  # the row goes first, then its bytes
            if (
                srv.service.store.upload_info(second) is None
                and not (data / "partial" / second).exists()
            ):
                break
            time.sleep(0.05)
        assert srv.service.store.upload_info(second) is None
        assert not (data / "partial" / second).exists()
        third = _begin(srv.url, device)[2]["upload_id"]
    (data / "partial" / "orphan").write_bytes(b"left by a crash before its row committed")
    clock.advance(61)  # while the server is down
    with ThreadedServer(data, clock, upload_session_ttl_s=60) as srv:
        assert srv.service.store.upload_info(third) is None
        assert sorted(p.name for p in (data / "partial").iterdir()) == []


def test_a_device_holds_a_bounded_number_of_upload_sessions_and_bytes(tmp_path):
    with ThreadedServer(
        tmp_path / "d", FakeClock(), max_uploads_per_device=1, max_upload_bytes_per_device=4096
    ) as srv:
        bundle = tiny_bundle(tmp_path / "b")
        add_task(srv.url, bundle, "kb")
        add_task(srv.url, bundle, "kb2")
        device, other = enroll(srv.url), enroll(srv.url)
        first = _begin(srv.url, device, "kb")[2]["upload_id"]
        status, headers, doc = _begin(srv.url, device, "kb2")
        assert status == 429 and doc["error"]["code"] == "upload_quota_sessions"
        assert int(headers["Retry-After"]) >= 1
        assert _begin(srv.url, other, "kb2")[0] == 201  # per device
        # a new upload for the same task replaces the unfinished one: never locked out
        status, _, doc = _begin(srv.url, device, "kb")
        assert status == 201 and doc["upload_id"] != first
        assert call(srv.url + f"/v1/uploads/{first}", headers=device)[0] == 404
        status, _, doc = _begin(srv.url, enroll(srv.url), "kb", size=5000)
        assert status == 413 and doc["error"]["code"] == "upload_quota_bytes"


# -- free text: bounded, sanitised, never a 500 ----------------------------------------------
def test_a_lone_surrogate_failure_reason_never_breaks_metrics_before_or_after_a_restart(tmp_path):
    clock, data = FakeClock(), tmp_path / "d"
    with ThreadedServer(data, clock) as srv:
        add_task(srv.url, tiny_bundle(tmp_path / "b"), settings={"mode": "async"})
        device = enroll(srv.url)
        assert "assignment" in call(srv.url + "/v1/checkin", "POST", {"task_id": "kb"}, device)[2]
        status, _, doc = call(
            srv.url + "/v1/tasks/kb/failures",
            "POST",
            data=b'{"reason": "\\ud800"}',
            headers=device | {"Content-Type": "application/json"},
        )
        assert status == 400 and doc["error"]["code"] == "malformed_json"  # refused at the door
        # a valid reason outside the vocabulary is counted as "other"
        status, _, _ = call(
            srv.url + "/v1/tasks/kb/failures",
            "POST",
            data='{"reason": "\u2028 évil\\u0007 <b>"}'.encode(),
            headers=device | {"Content-Type": "application/json"},
        )
        assert status == 204
        status, _, text = call(srv.url + "/metrics")
        assert status == 200
        assert 'edgefl_dropouts{reason="other",task="kb"} 1.0' in text.decode()
        # a reason stored before this vocabulary existed (an old data dir) is still safe
        task = srv.service.tasks["kb"]
        task.coordinator.assigned["dev-old"] = 0
        task.coordinator.report_failure("dev-old", "\ud800\n" + "x" * 500, clock.now())
        srv.service.store.save_snapshot("kb", task.coordinator.snapshot())
        assert call(srv.url + "/metrics")[0] == 200
    with ThreadedServer(data, clock) as srv:
        status, _, text = call(srv.url + "/metrics")
        assert status == 200 and "\\ud800" not in text.decode()
        assert call(srv.url + "/v1/status")[0] == 200


def test_failure_reasons_are_a_fixed_vocabulary_covering_the_sdks_own():
    source = Path(__file__).parents[2] / "edge_sdk" / "eligibility.py"
    codes = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "deny":
            code = node.args[0]  # a literal, or `"a" if ... else "b"`
            branches = [code.body, code.orelse] if isinstance(code, ast.IfExp) else [code]
            codes |= {c.value for c in branches if isinstance(c, ast.Constant)}
    assert codes and codes <= FAILURE_REASONS
    assert {"bundle_mismatch", "diverged", "no_examples"} <= FAILURE_REASONS
    assert failure_reason("not_charging") == "not_charging"
    assert failure_reason("x" * 10_000) == failure_reason("\ud800") == failure_reason(3) == "other"
    assert safe_text("a\ud800\n\x00" + "b" * 100, 8) == "a???bbbb"


# -- what the public views show ----------------------------------------------------------------
def test_status_shows_no_task_settings_or_dp_figures_unless_turned_on(tmp_path):
    settings = {"mode": "async", "plan": {"epochs": 1, "batch_size": 4, "lr": 0.0123457}}
    for public in (False, True):
        with ThreadedServer(
            tmp_path / f"d{public}", FakeClock(), public_status_settings=public
        ) as srv:
            add_task(srv.url, tiny_bundle(tmp_path / "b"), settings=settings)
            _, _, status = call(srv.url + "/v1/status")
            _, _, metrics = call(srv.url + "/metrics")
            _, _, admin = call(srv.url + "/v1/admin/tasks/kb", headers={"X-Admin-Token": ADMIN})
            assert admin["settings"]["plan"]["lr"] == 0.0123457  # the operator always sees them
            assert ("settings" in status["tasks"][0]) is public
            assert ("0.0123457" in json.dumps(status)) is public
            assert b"0.0123457" not in metrics


def test_public_task_drops_dp_figures_from_versions_and_events():
    doc = {
        "task_id": "t",
        "settings": {"dp": {"noise_multiplier": 1.1}},
        "versions": [
            {
                "version": 1,
                "metrics": {
                    "mean_loss": 2.0,
                    "epsilon": 0.5,
                    "delta": 1e-5,
                    "measurements": {"noise": 1},
                },
            }
        ],
        "events": [{"event": "privacy_budget_reached", "epsilon": 8.0, "round": 3}],
    }
    public = public_task(doc, show_settings=False)
    assert public == {
        "task_id": "t",
        "versions": [{"version": 1, "metrics": {"mean_loss": 2.0}}],
        "events": [{"event": "privacy_budget_reached", "round": 3}],
    }
    assert doc["versions"][0]["metrics"]["epsilon"] == 0.5  # not mutated
    assert public_task(doc, show_settings=True) is doc


def test_limits_are_validated_when_the_config_is_built(tmp_path):
    for bad in (
        {"header_timeout_s": 0},
        {"body_timeout_s": float("inf")},
        {"idle_timeout_s": "10"},
        {"max_uploads_per_device": 0},
        {"max_json_bytes": 10},
        {"public_status_settings": "yes"},
        {"auth_failure_burst": True},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServerConfig(str(tmp_path), ADMIN, {}, **bad)
