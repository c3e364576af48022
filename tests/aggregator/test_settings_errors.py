"""Settings with several mistakes are refused once, naming every one: the admin API
answers one 400 listing each bad field with its path (a real server on 127.0.0.1), and
nothing of the refused task is created; `edge-fl serve --config` prints them all."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp

from edge_sdk.clock import FakeClock

from .fleet import admin, cli_create_task, create_task, running_server

THREE_MISTAKES = {
    "mode": "synch",  # a Literal the decoder refuses
    "sync": {"goal": 0},  # SyncSettings.__post_init__ refuses
    "plan": {"epochz": 2, "lr": -1.0},  # an unknown key and a __post_init__ refusal
    "server_lr": -0.5,  # TaskSettings.__post_init__, checked though mode failed to decode
}


def test_a_task_with_several_bad_fields_gets_one_answer_naming_each(bundle, tmp_path):
    async def scenario():
        async with (
            running_server(tmp_path / "data", FakeClock()) as (url, service),
            aiohttp.ClientSession() as session,
        ):
            status, doc = await create_task(session, url, bundle, THREE_MISTAKES)
            assert status == 400, doc
            error = doc["error"]
            assert error["code"] == "bad_field"
            named = {e["field"]: e["message"] for e in error["errors"]}
            assert set(named) == {
                "settings.mode",
                "settings.sync.goal",
                "settings.plan.epochz",
                "settings.plan.lr",
                "settings.server_lr",
            }
            assert "did you mean 'sync'?" in named["settings.mode"]
            assert named["settings.sync.goal"] == "must be an integer >= 1, got 0"
            assert "did you mean 'epochs'?" in named["settings.plan.epochz"]
            assert "> 0" in named["settings.plan.lr"] and "> 0" in named["settings.server_lr"]
            assert error["field"] == "settings.mode"  # the first, for older readers
            for path in named:
                assert path in error["message"]
            # nothing half-created: the task does not exist, and the same id is free
            assert (await admin(session, url, "GET", "/v1/admin/tasks"))[1]["tasks"] == []
            assert not service.store.has_task("kb")
            status, doc = await create_task(session, url, bundle, {"sync": {"goal": 2}})
            assert status == 201, doc

    asyncio.run(scenario())


def test_a_hostile_task_of_many_bad_fields_gets_a_bounded_answer(bundle, tmp_path):
    settings = {f"k{i}": i for i in range(2000)} | {"server_lr_decay": {"at": ["x"] * 2000}}

    async def scenario():
        async with (
            running_server(tmp_path / "data", FakeClock()) as (url, _),
            aiohttp.ClientSession() as session,
        ):
            status, doc = await create_task(session, url, bundle, settings)
            assert status == 400 and doc["error"]["code"] == "bad_field"
            assert len(doc["error"]["errors"]) == 20
            assert "stopped looking after 20" in doc["error"]["message"]
            # each quoted error is under 600 characters (test_settings.py), twice over
            assert len(json.dumps(doc)) < 2 * 20 * 600

    asyncio.run(scenario())


def test_serve_names_every_bad_config_field(tmp_path):
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"burst": 0, "rate_per_s": "fast", "max_body_byte": 4096}))
    done = subprocess.run(
        [sys.executable, "-m", "edge_fl_cli", "serve", "--config", str(config)]
        + ["--data-dir", str(tmp_path / "d"), "--host", "127.0.0.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    for path in ("config.max_body_byte", "config.rate_per_s", "config.burst"):
        assert path in done.stderr
    assert "did you mean 'max_body_bytes'?" in done.stderr


def test_task_create_names_every_bad_setting_before_it_sends_anything(tmp_path, capsys):
    settings = tmp_path / "bad.json"
    settings.write_text(json.dumps(THREE_MISTAKES))
    # nothing listens at this URL: the file is refused before any request
    code = cli_create_task("kb", tmp_path, settings, "http://127.0.0.1:9")
    err = capsys.readouterr().err
    assert code == 2, err
    for path in (
        "settings.mode",
        "settings.sync.goal",
        "settings.plan.epochz",
        "settings.server_lr",
    ):
        assert path in err
