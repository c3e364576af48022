"""Refuse at the door, never store the bad; start-up never fails because of stored state:
a task that no longer loads is marked failed (store, admin API, status, log) and the
others serve. Against real servers on 127.0.0.1: the app in this process, and
`edge-fl serve` subprocesses restarted on their data dir."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from aggregator.config import SyncSettings, TaskSettings
from aggregator.service import AggregatorService
from aggregator.store import Device, SqliteStore
from edge_sdk.bundle import Bundle
from edge_sdk.clock import FakeClock
from edge_sdk.protocol import (
    UpdateMeta,
    UpdatePipeline,
    encode_parameters,
    encode_update,
    generate_signing_key,
    public_key_of,
)

from .fleet import ADMIN, SECRET, ServerProcess, admin, create_task, free_port, running_server

CHROMIUM = shutil.which("chromium")


def _files(root: Path) -> set[str]:
    """Every file under the data dir but SQLite's own (its WAL changes on reads too)."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("aggregator.db")
    }


def _bad_bundle(tmp: Path, bundle: Bundle, change) -> str:
    copy = tmp / f"bundle-{len(list(tmp.glob('bundle-*')))}"
    shutil.copytree(bundle.path, copy)
    change(copy)
    return str(copy)


def _nan_parameters(path: Path) -> None:
    with np.load(path / "parameters.npz") as npz:
        params = {k: npz[k] for k in npz.files}
    name = sorted(params)[0]
    params[name] = np.full_like(params[name], np.nan)
    np.savez(path / "parameters.npz", **params)


def _renamed_parameter(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["parameters"][0]["name"] = "renamed"
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_bad_create_requests_are_refused_with_the_field_and_store_nothing(bundle, tmp_path):
    good = str(bundle.path)
    refused = [  # (request, field the 400 names)
        (
            {
                "task_id": "kb",
                "bundle_dir": good,
                "settings": {"robust": {"kind": "trimmed_mean", "trim": 0.7}},
            },
            "settings.robust.trim",
        ),
        (
            {"task_id": "kb", "bundle_dir": good, "settings": {"server_optimizer": "fedadm"}},
            "settings.server_optimizer",
        ),
        (
            {"task_id": "kb", "bundle_dir": good, "settings": {"plan": {"epochz": 3}}},
            "settings.plan.epochz",
        ),
        (
            {
                "task_id": "kb",
                "bundle_dir": good,
                "settings": {
                    "dp": {
                        "clip_norm": 1.0,
                        "noise_multiplier": 1.0,
                        "population": 10,
                        "adaptive_quantil": 0.5,
                    }
                },
            },
            "settings.dp.adaptive_quantil",
        ),
        (
            {"task_id": "kb", "bundle_dir": good, "settings": {"sync": {"goal": 10**30}}},
            "settings.sync.goal",
        ),
        ({"task_id": "kb", "bundle_dir": good, "settings": []}, "settings"),
        *[
            ({"task_id": bad, "bundle_dir": good, "settings": {}}, "task_id")
            for bad in (
                "../../x",
                "tf/../tf",
                "",
                ".",
                "a//b",
                "KB",
                "-kb",
                "x" * 65,
                "kb\n",
                "kb/",
                "k b",
            )
        ],
        ({"task_id": "kb", "bundle_dir": str(tmp_path / "nowhere"), "settings": {}}, "bundle_dir"),
        (
            {
                "task_id": "kb",
                "bundle_dir": _bad_bundle(tmp_path, bundle, _nan_parameters),
                "settings": {},
            },
            "bundle_dir",
        ),
        (
            {
                "task_id": "kb",
                "bundle_dir": _bad_bundle(tmp_path, bundle, _renamed_parameter),
                "settings": {},
            },
            "bundle_dir",
        ),
    ]
    data = tmp_path / "data"

    async def first_run():
        async with (
            running_server(data, FakeClock()) as (url, service),
            aiohttp.ClientSession() as session,
        ):
            before = _files(data)
            for request, field in refused:
                status, doc = await admin(session, url, "POST", "/v1/admin/tasks", request)
                assert status == 400, (request, doc)
                # the message layer names its fields "task.<field>", the settings "settings.<...>"
                assert doc["error"]["field"].removeprefix("task.") == field, (request, doc)
                assert doc["error"]["code"] in ("bad_field", "bad_request")
            assert _files(data) == before  # no orphan model file, nothing outside the dir
            assert not (tmp_path / "x").exists() and not (data.parent / "x").exists()
            assert (await admin(session, url, "GET", "/v1/admin/tasks", None))[1] == {"tasks": []}
            status, doc = await admin(
                session,
                url,
                "POST",
                "/v1/admin/tasks",
                {"task_id": "kb_1", "bundle_dir": good, "settings": {"mode": "async"}},
            )
            assert status == 201 and doc["state"] == "active", doc

    async def second_run():  # the bad requests left nothing that breaks the next start
        async with (
            running_server(data, FakeClock()) as (url, service),
            aiohttp.ClientSession() as session,
        ):
            status, doc = await admin(session, url, "GET", "/v1/admin/tasks", None)
            assert status == 200
            assert [(t["task_id"], t["state"]) for t in doc["tasks"]] == [("kb_1", "active")]

    asyncio.run(first_run())
    asyncio.run(second_run())


# -- every part of a task's stored state, corrupted in turn (service level) -------------------
def _service(root: Path) -> AggregatorService:
    return AggregatorService(SqliteStore(root), FakeClock(), np.random.default_rng(0), {"p": "s"})


def _sql(root: Path, statement: str, params: tuple) -> None:
    with sqlite3.connect(root / "aggregator.db") as db:
        db.execute(statement, params)


def _corrupt_settings(root, task):
    _sql(
        root,
        "UPDATE tasks SET settings = ? WHERE task_id = ?",
        (json.dumps({"robust": {"kind": "trimmed_mean", "trim": 0.7}}), task),
    )


def _settings_not_json(root, task):
    _sql(root, "UPDATE tasks SET settings = ? WHERE task_id = ?", ("{not json", task))


def _specs_not_json(root, task):
    _sql(root, "UPDATE tasks SET specs = ? WHERE task_id = ?", ("[", task))


def _model_garbage(root, task):
    (root / "models" / task / "v0.eflm").write_bytes(b"EFLM" + b"\0" * 40)


def _model_missing(root, task):
    (root / "models" / task / "v0.eflm").unlink()


def _update_garbage(root, task):
    with sqlite3.connect(root / "aggregator.db") as db:  # where the update's bytes are
        (segment, offset, length), *more = db.execute(
            "SELECT segment, offset, length FROM update_segments WHERE path LIKE ?",
            (f"updates/{task}/%",),
        ).fetchall()
    assert not more
    with open(root / "segments" / segment, "r+b") as f:  # all but its first 50 bytes zeroed
        f.seek(offset + 50)
        f.write(b"\0" * (length - 50))


def _one_update_to_bad(service: AggregatorService, bundle: Bundle) -> tuple[Device, bytes, dict]:
    """Device d0 (population p) checks in to task "bad" and submits a delta of 0.01
    everywhere from version 0: the device, its signing key and the service's answer."""
    key = generate_signing_key()
    device = Device("d0", "p", public_key_of(key))
    service.check_in(device, "bad")
    delta = {s.name: np.full(s.shape, 0.01, np.float32) for s in bundle.parameter_specs}
    meta = UpdateMeta("bad", bundle.model_id, 0, "d0", "k0", 5)
    data = encode_update(
        delta,
        bundle.parameter_specs,
        meta,
        UpdatePipeline(),
        signing_key=key,
        rng=np.random.default_rng(0),
    )
    return device, key, service.submit_update(device, "bad", data)


@pytest.mark.parametrize(
    "corrupt, part",
    [
        (_corrupt_settings, "stored settings: settings.robust.trim"),
        (_settings_not_json, "stored settings: settings: must be an object, got null"),
        (_specs_not_json, "stored settings"),
        (_model_garbage, "model file"),
        (_model_missing, "model file: FileNotFoundError"),
        (_update_garbage, "pending update"),
    ],
)
def test_a_task_whose_stored_state_does_not_load_fails_alone(bundle, tmp_path, corrupt, part):
    root = tmp_path / "state"
    service = _service(root)
    settings = TaskSettings(sync=SyncSettings(goal=3, overselect=1.0))
    for task_id in ("bad", "good"):
        service.create_task(task_id, str(bundle.path), settings)
    device, key, answer = _one_update_to_bad(service, bundle)
    assert answer["status"] == "accepted"
    service.store.close()
    corrupt(root, "bad")

    restarted = _service(root)
    restarted.recover()  # does not raise
    failed = restarted.describe("bad")
    assert failed["state"] == "failed" and failed["error"].startswith(part), failed
    assert restarted.describe("good")["state"] == "active"
    assert restarted.store.failures() == {"bad": failed["error"]}  # persisted
    with pytest.raises(Exception) as e:
        restarted.check_in(device, "bad")
    assert getattr(e.value, "code", None) == "task_failed"
    assert restarted.check_in(Device("d1", "p", public_key_of(key)), "good").task_id == "good"


def test_a_non_finite_model_version_fails_its_task_only(bundle, tmp_path):
    """What the 1e38 update used to leave behind: a stored version holding NaN/Inf."""
    root = tmp_path / "state"
    service = _service(root)
    for task_id in ("bad", "good"):
        service.create_task(task_id, str(bundle.path), TaskSettings())
    specs = [{"name": s.name, "shape": list(s.shape)} for s in bundle.parameter_specs]
    params = {s.name: np.full(s.shape, np.inf, np.float32) for s in bundle.parameter_specs}
    service.store.close()
    (root / "models" / "bad" / "v0.eflm").write_bytes(
        encode_parameters(params, specs, bundle.model_id, 0)
    )
    restarted = _service(root)
    restarted.recover()
    assert "model file: NonFinite" in restarted.describe("bad")["error"]
    assert restarted.describe("good")["state"] == "active"


# -- a real `edge-fl serve`, restarted on its data dir ------------------------------------------
async def _enroll(session, url) -> str:
    key = base64.b64encode(public_key_of(generate_signing_key())).decode()
    async with session.post(
        url + "/v1/enroll", json={"population": "keyboard", "secret": SECRET, "public_key": key}
    ) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["token"]


async def _check_in(session, url, token, task_id):
    async with session.post(
        url + "/v1/checkin", json={"task_id": task_id}, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        return r.status, await r.json()


def test_serve_restarts_with_a_corrupted_task_marked_failed_and_serves_the_others(bundle, tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(data, free_port())

    async def create():
        async with aiohttp.ClientSession() as session:
            for task_id in ("good", "bad_settings", "bad_model"):
                status, doc = await create_task(session, server.url, bundle, {}, task_id)
                assert status == 201, doc

    async def after_restart():
        async with aiohttp.ClientSession() as session:
            status, doc = await admin(session, server.url, "GET", "/v1/admin/tasks")
            states = {t["task_id"]: t for t in doc["tasks"]}
            assert states["good"]["state"] == "active"
            assert states["bad_settings"]["state"] == "failed"
            assert "settings.robust.trim" in states["bad_settings"]["error"]
            assert "model file" in states["bad_model"]["error"]
            status, doc = await admin(session, server.url, "GET", "/v1/admin/tasks/bad_model")
            assert status == 200 and doc["state"] == "failed" and "versions" in doc
            status, doc = await admin(
                session, server.url, "POST", "/v1/admin/tasks/bad_settings/pause"
            )
            assert status == 409 and doc["error"]["code"] == "task_failed"
            token = await _enroll(session, server.url)
            status, doc = await _check_in(session, server.url, token, "good")
            assert status == 200 and doc["assignment"]["task_id"] == "good", doc
            status, doc = await _check_in(session, server.url, token, "bad_model")
            assert status == 409 and doc["error"]["code"] == "task_failed", doc
            for _ in range(6):  # a check-in for any task is never sent to a failed one
                status, doc = await _check_in(
                    session, server.url, await _enroll(session, server.url), None
                )
                assert (
                    status == 200 and doc.get("assignment", {}).get("task_id", "good") == "good"
                ), doc
            async with session.get(server.url + "/v1/status") as r:
                assert r.status == 200
                status_doc = json.loads(await r.text())
            failed = [t for t in status_doc["tasks"] if t.get("state") == "failed"]
            assert sorted(t["task_id"] for t in failed) == ["bad_model", "bad_settings"]

    async def after_repair():
        async with aiohttp.ClientSession() as session:
            status, doc = await admin(session, server.url, "GET", "/v1/admin/tasks")
            states = {t["task_id"]: t["state"] for t in doc["tasks"]}
            assert states == {"good": "active", "bad_settings": "active", "bad_model": "failed"}

    try:
        server.start()
        asyncio.run(create())
        server.stop()
        with sqlite3.connect(data / "aggregator.db") as db:
            stored = db.execute(
                "SELECT settings FROM tasks WHERE task_id = 'bad_settings'"
            ).fetchone()[0]
            db.execute(
                "UPDATE tasks SET settings = ? WHERE task_id = 'bad_settings'",
                (
                    json.dumps(
                        json.loads(stored) | {"robust": {"kind": "trimmed_mean", "trim": 0.7}}
                    ),
                ),
            )
        (data / "models" / "bad_model" / "v0.eflm").write_bytes(b"not a model")
        server.start()
        asyncio.run(after_restart())
        server.stop()
        log = server.log.read_text()
        assert "'bad_settings' does not load" in log and "'bad_model' does not load" in log
        with sqlite3.connect(data / "aggregator.db") as db:  # the operator repairs one
            db.execute("UPDATE tasks SET settings = ? WHERE task_id = 'bad_settings'", (stored,))
        server.start()
        asyncio.run(after_repair())
    finally:
        server.stop()


def test_serve_without_secrets_generates_an_admin_token_and_closes_enrollment(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_fl_cli",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert "listening on" in proc.stdout.readline()
        notice = proc.stderr.readline() + proc.stderr.readline()
        token = notice.split("admin token is ")[1].split()[0]
        assert len(token) >= 32 and "--admin-token" in notice
        assert "--enrollment-secret POPULATION=SECRET" in notice

        async def scenario():
            async with aiohttp.ClientSession() as session:
                async with session.get(
                    url + "/v1/admin/tasks", headers={"X-Admin-Token": token}
                ) as r:
                    assert r.status == 200
                async with session.get(
                    url + "/v1/admin/tasks", headers={"X-Admin-Token": ADMIN}
                ) as r:
                    assert r.status == 403
                key = base64.b64encode(public_key_of(generate_signing_key())).decode()
                for population, secret in (("default", "change-me"), ("keyboard", SECRET)):
                    async with session.post(
                        url + "/v1/enroll",
                        json={"population": population, "secret": secret, "public_key": key},
                    ) as r:
                        doc = await r.json()
                        assert r.status == 403 and doc["error"]["code"] == "enrollment_closed"
                        assert "--enrollment-secret" in doc["error"]["message"]

        asyncio.run(scenario())
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("state", ["nan", "shape", "garbage"])
def test_bad_server_optimizer_state_fails_its_task_only(bundle, tmp_path, state):
    root = tmp_path / "state"
    service = _service(root)
    settings = TaskSettings(sync=SyncSettings(goal=1, overselect=1.0), server_optimizer="fedavgm")
    for task_id in ("bad", "good"):
        service.create_task(task_id, str(bundle.path), settings)
    answer = _one_update_to_bad(service, bundle)[2]
    assert answer["version"] == 1
    service.store.close()
    (path,) = (root / "state" / "bad").glob("v1.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    first = sorted(arrays)[0]
    if state == "garbage":
        path.write_bytes(b"PK\x03\x04 not an npz")
    else:
        arrays[first] = (
            np.full_like(arrays[first], np.nan)
            if state == "nan"
            else np.zeros(arrays[first].size + 1, np.float32)
        )
        np.savez(path, **arrays)
    restarted = _service(root)
    restarted.recover()
    assert restarted.describe("bad")["error"].startswith("optimizer state"), restarted.describe(
        "bad"
    )
    assert restarted.describe("good")["state"] == "active"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_the_dashboard_shows_a_failed_task_with_its_reason(bundle, tmp_path):
    root = tmp_path / "data"
    service = _service(root)
    for task_id in ("bad", "good"):
        service.create_task(task_id, str(bundle.path), TaskSettings())
    service.store.close()
    _corrupt_settings(root, "bad")

    async def scenario():
        async with running_server(root, FakeClock()) as (url, _):
            proc = await asyncio.create_subprocess_exec(
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=3000",
                "--dump-dom",
                url + "/dashboard",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            dom, _ = await asyncio.wait_for(proc.communicate(), 60)
            return dom.decode()

    dom = asyncio.run(scenario())
    assert 'data-task="bad" data-state="failed"' in dom
    assert "bad — failed, not served" in dom and "settings.robust.trim" in dom
    assert 'data-task="good" data-state="active"' in dom and "model version 0" in dom
