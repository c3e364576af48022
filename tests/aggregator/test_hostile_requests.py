"""Requests an attacker or a broken client sends, against the real app on 127.0.0.1: each
gets a 4xx with a code (never a 500), and the server goes on answering. One test per
cause of 500 found in issue 18."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import threading

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from aggregator.app import ServerConfig, build_app, make_service
from aggregator.app_state import run_service
from aggregator.routes import OPERATIONS
from edge_sdk.clock import FakeClock
from edge_sdk.protocol import generate_signing_key, public_key_of

from .fleet import ADMIN, SECRET, running_server

KEY = base64.b64encode(public_key_of(generate_signing_key())).decode()


@contextlib.asynccontextmanager
async def server(tmp_path, **config):
    async with (
        running_server(tmp_path / "data", FakeClock(), **config) as (url, service),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(
            url + "/v1/enroll", json={"population": "keyboard", "secret": SECRET, "public_key": KEY}
        ) as r:
            assert r.status == 201
            token = (await r.json())["token"]
        yield url, service, session, {"Authorization": f"Bearer {token}"}


async def _post(session, url, data: bytes, headers=None, content_type="application/json"):
    async with session.post(
        url, data=data, headers={"Content-Type": content_type} | (headers or {})
    ) as r:
        return r.status, await r.json()


async def _raw(url: str, request: bytes) -> int:
    """One HTTP/1.1 request written byte for byte (headers aiohttp would not send); the
    status of the answer."""
    host, port = re.match(r"http://([^:]+):(\d+)", url).groups()
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


def run(tmp_path, check, **config):
    async def scenario():
        async with server(tmp_path, **config) as env:
            await check(*env)
            url, _, session, _ = env
            async with session.get(url + "/metrics") as r:  # still up, metrics still render
                assert r.status == 200

    asyncio.run(scenario())


def test_a_non_ascii_enrollment_secret_is_403_and_a_configured_one_works(tmp_path):
    async def check(url, service, session, auth):
        service.enrollment_secrets["umlaut"] = "pässwörd"
        status, doc = await _post(
            session,
            url + "/v1/enroll",
            json_bytes({"population": "keyboard", "secret": "pässwörd", "public_key": KEY}),
        )
        assert status == 403 and doc["error"]["code"] == "forbidden"
        status, doc = await _post(
            session,
            url + "/v1/enroll",
            json_bytes({"population": "umlaut", "secret": "pässwörd", "public_key": KEY}),
        )
        assert status == 201 and doc["device_id"].startswith("dev-")

    run(tmp_path, check)


def test_a_bogus_charset_is_ignored_the_body_is_read_as_utf8(tmp_path):
    async def check(url, service, session, auth):
        body = json_bytes({"population": "keyboard", "secret": SECRET, "public_key": KEY})
        for charset in ("bogus-7", "utf-16", "latin-1"):
            status, doc = await _post(
                session,
                url + "/v1/enroll",
                body,
                content_type=f"application/json; charset={charset}",
            )
            assert status == 201, doc
        status, doc = await _post(
            session,
            url + "/v1/enroll",
            '{"é": 1}'.encode("latin-1"),
            content_type="application/json; charset=latin-1",
        )
        assert status == 400 and doc["error"]["code"] == "malformed_json"

    run(tmp_path, check)


@pytest.mark.parametrize(
    "path", ["/v1/enroll", "/v1/checkin", "/v1/tasks/kb/failures", "/v1/admin/tasks"]
)
def test_deep_nesting_is_refused_before_parsing(tmp_path, path):
    async def check(url, service, session, auth):
        # deep, yet within the 64 KiB a JSON body may take: the depth limit refuses it
        for body in (b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000):
            status, doc = await _post(
                session, url + path, body, headers=auth | {"X-Admin-Token": ADMIN}
            )
            assert status == 400 and doc["error"] == {
                "code": "json_limit",
                "message": doc["error"]["message"],
                "limit": "max_depth",
                "max": 32,
            }, doc

    run(tmp_path, check)


def test_a_json_body_declared_over_the_limit_is_refused_before_it_is_read(tmp_path):
    async def check(url, service, session, auth):
        # 31 MiB declared, none sent: the answer comes without waiting for the body
        status = await asyncio.wait_for(
            _raw(
                url,
                b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: 32505856\r\n\r\n[[],",
            ),
            60,
        )
        assert status == 413  # over the call's max_json_bytes (docs/aggregator.md, Limits)
        body = b"[" + b"[]," * 400_000 + b"[]]"  # 1.2 MB of tiny lists, no Content-Length
        status, doc = await _post(session, url + "/v1/enroll", _chunks(body))
        assert status in (411, 413) or status == 400 and doc["error"]["limit"] == "max_bytes"

    run(tmp_path, check)


async def _chunks(data: bytes):
    for i in range(0, len(data), 1 << 16):
        yield data[i : i + (1 << 16)]


def test_numbers_of_thousands_of_digits_are_refused(tmp_path):
    async def check(url, service, session, auth):
        for path, body in [
            ("/v1/enroll", b'{"population": ' + b"9" * 5000 + b"}"),
            ("/v1/checkin", b'{"task_id": "kb", "eligibility": {"x": ' + b"1" * 5000 + b"}}"),
            ("/v1/tasks/kb/secagg/keys", b'{"round_id": ' + b"7" * 5000 + b"}"),
        ]:
            status, doc = await _post(session, url + path, body, headers=auth)
            assert status == 400 and doc["error"]["limit"] == "max_number_chars", (path, doc)
        for literal in (b"1e400", b"-1e999", b"NaN", b"Infinity", b"-Infinity"):
            status, doc = await _post(
                session,
                url + "/v1/checkin",
                b'{"eligibility": {"x": ' + literal + b"}}",
                headers=auth,
            )
            assert status == 400 and doc["error"]["code"] == "malformed_json", (literal, doc)

    run(tmp_path, check)


def test_a_bad_bearer_token_is_401_on_every_device_endpoint(tmp_path):
    async def check(url, service, session, auth):
        device_ops = [op for op in OPERATIONS if op.auth == "device"]
        assert len(device_ops) >= 12
        for op in device_ops:
            path = re.sub(r"{\w+}", "x", op.path)
            for token in (b"\xff\xfe\xfd", "t\u00f6ken".encode(), b"\xed\xa0\x80", b"a b"):
                status = await _raw(
                    url,
                    f"{op.method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
                    + b"Authorization: Bearer "
                    + token
                    + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                )
                assert status == 401, (op.method, op.path, token, status)

    run(tmp_path, check, auth_failure_burst=10_000)  # failures are throttled per address


def test_versions_are_bounded_decimal_integers(tmp_path):
    async def check(url, service, session, auth):
        admin = {"X-Admin-Token": ADMIN}
        # ², 30 nines, a sign, a fraction, nothing, a fullwidth 1
        for value in ("%C2%B2", "9" * 30, "-1", "1.0", "", "%EF%BC%91"):
            for path, headers in (
                ("/v1/tasks/kb/model", auth),
                ("/v1/admin/tasks/kb/model", admin),
            ):
                async with session.get(url + f"{path}?version={value}", headers=headers) as r:
                    assert r.status == 400, (path, value, r.status)
                    assert (await r.json())["error"]["field"] == "query.version"
            async with session.post(
                url + f"/v1/admin/tasks/kb/versions/{value}/heldout",
                json={"metrics": {"accuracy": 0.5}},
                headers=admin,
            ) as r:
                assert r.status in (400, 404), (value, r.status)  # "" leaves no route: 404

    run(tmp_path, check)


def test_huge_or_odd_numbers_in_secure_aggregation_steps_are_400(tmp_path):
    async def check(url, service, session, auth):
        bodies = {
            "shares": [
                {"round_id": 1, "shares": {"\u00b2": KEY}},
                {"round_id": 1, "shares": {"9" * 40: KEY}},
                {"round_id": 2**64, "shares": {}},
            ],
            "reveal": [
                {"round_id": 1, "reveal": {"0": ["b", "9" * 5000]}},
                {"round_id": 1, "reveal": {"0": ["b", "1\u00b2"]}},
                {"round_id": 1, "reveal": {"0": ["x", "1"]}},
            ],
            "keys": [
                {"round_id": 1, "c_public": "\u00e9", "s_public": KEY},
                {"round_id": 1.5, "c_public": KEY, "s_public": KEY},
            ],
        }
        for step, docs in bodies.items():
            for doc in docs:
                status, answer = await _post(
                    session, url + f"/v1/tasks/kb/secagg/{step}", json_bytes(doc), headers=auth
                )
                assert status == 400 and answer["error"]["code"] == "bad_field", (step, answer)
        for round_id in ("%C2%B2", "9" * 30):
            async with session.get(
                url + f"/v1/tasks/kb/secagg?round_id={round_id}", headers=auth
            ) as r:
                assert r.status == 400

    run(tmp_path, check)


def test_a_lone_surrogate_in_any_string_is_400_and_metrics_still_render(tmp_path):
    async def check(url, service, session, auth):
        for path, body in [
            ("/v1/tasks/kb/failures", b'{"reason": "\\ud800"}'),
            ("/v1/tasks/kb/failures", b'{"reason": "ok\\udfff"}'),
            ("/v1/enroll", (b'{"population": "\\udc80", "secret": "s", "public_key": "AA=="}')),
            ("/v1/checkin", b'{"eligibility": {"\\ud83d": 1}}'),
        ]:
            status, doc = await _post(session, url + path, body, headers=auth)
            assert status == 400 and doc["error"]["code"] == "malformed_json", (path, doc)
        status, doc = await _post(
            session, url + "/v1/tasks/kb/failures", b'{"reason": "ok \\ud83d\\ude00"}', headers=auth
        )
        assert status == 404  # a surrogate pair is a character: the request gets through

    run(tmp_path, check)


def test_unknown_fields_and_wrong_types_name_their_path(tmp_path):
    async def check(url, service, session, auth):
        for body, field in [
            (
                {"population": "keyboard", "secret": SECRET, "public_key": KEY, "extra": 1},
                "enroll.extra",
            ),
            ({"population": "keyboard", "secret": SECRET}, "enroll.public_key"),
            ({"population": "keyboard", "secret": 7, "public_key": KEY}, "enroll.secret"),
        ]:
            status, doc = await _post(session, url + "/v1/enroll", json_bytes(body))
            assert status == 400 and doc["error"]["field"] == field, doc

    run(tmp_path, check)


def test_service_calls_run_on_one_worker_thread_while_the_loop_answers(tmp_path):
    async def scenario():
        config = ServerConfig(str(tmp_path / "data"), ADMIN, {"keyboard": SECRET})
        service = make_service(config, FakeClock(), np.random.default_rng(0))
        threads = []
        for name in ("authenticate", "check_in", "enroll", "tick"):
            setattr(service, name, _recording(getattr(service, name), threads))
        app = build_app(config, service)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession() as session:
                status, doc = await _post(
                    session,
                    url + "/v1/enroll",
                    json_bytes({"population": "keyboard", "secret": SECRET, "public_key": KEY}),
                )
                assert status == 201
                auth = {"Authorization": f"Bearer {doc['token']}"}
                busy, release = threading.Event(), threading.Event()
                blocked = asyncio.ensure_future(
                    run_service(app, lambda: (busy.set(), release.wait(60)))
                )
                await asyncio.get_running_loop().run_in_executor(None, busy.wait, 60)
                # the service's thread is busy: a check-in waits for it, the loop does not
                waiting = asyncio.ensure_future(
                    session.post(url + "/v1/checkin", json={}, headers=auth)
                )
                for _ in range(3):
                    async with session.get(url + "/openapi.json") as r:
                        assert r.status == 200 and "paths" in await r.json()
                assert not waiting.done()
                release.set()
                await blocked
                async with await waiting as r:
                    assert r.status == 200 and "retry_at" in await r.json()
        finally:
            await runner.cleanup()
            service.store.close()
        assert {"authenticate", "check_in", "enroll"} <= {name for name, _ in threads}
        assert {thread for _, thread in threads} == {threads[0][1]}
        assert threads[0][1].startswith("edge-fl-service")

    asyncio.run(scenario())


def _recording(method, threads: list):
    def call(*args):
        threads.append((method.__name__, threading.current_thread().name))
        return method(*args)

    return call


def json_bytes(doc) -> bytes:
    import json

    return json.dumps(doc, ensure_ascii=False).encode()


def test_nul_in_a_path_parameter_or_a_string_is_refused_on_both_stores(tmp_path, store_url):
    """PostgreSQL text cannot hold U+0000: such ids and strings never reach a store."""

    async def check(url, service, session, auth):
        admin = {"X-Admin-Token": ADMIN}
        for method, path, headers in [
            ("GET", "/v1/tasks/a%00b/model", auth),
            ("GET", "/v1/tasks/%00/secagg?round_id=1", auth),
            ("POST", "/v1/tasks/%00/failures", auth),
            ("GET", "/v1/uploads/%00", auth),
            ("GET", "/v1/admin/tasks/%00", admin),
            ("POST", "/v1/admin/tasks/%00/pause", admin),
        ]:
            status = await _raw(
                url,
                f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
                + f"{next(iter(headers))}: {next(iter(headers.values()))}"
                "\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".encode(),
            )
            assert status == 404, (method, path, status)
        for path, body in [
            ("/v1/checkin", b'{"task_id": "a\\u0000b"}'),
            ("/v1/tasks/kb/failures", b'{"reason": "x\\u0000"}'),
        ]:
            status, doc = await _post(session, url + path, body, headers=auth)
            assert status == 400 and doc["error"]["code"] == "malformed_json", (path, doc)

    run(tmp_path, check, store_url=store_url)
