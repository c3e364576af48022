"""`edge-fl task create|list|show|pause|resume` against a real `edge-fl serve` on
127.0.0.1: settings files checked before sending, refusals as one line (no traceback)."""

from __future__ import annotations

import json

import pytest

from aggregator.operator_cli import read_settings
from edge_fl_cli import main as cli

from .fleet import ADMIN, ServerProcess, admin, cli_create_task, free_port


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from model_zoo.zoo import build_bundle

    return build_bundle("mlp", tmp_path_factory.mktemp("mlp") / "bundle", seed=0)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_FL_ADMIN_TOKEN", ADMIN)
    monkeypatch.delenv("EDGE_FL_SERVER", raising=False)
    process = ServerProcess(tmp_path / "state", free_port())
    process.start()
    yield process
    process.stop()


def _tasks(url: str) -> dict:
    import asyncio

    import aiohttp

    async def get():
        async with aiohttp.ClientSession() as session:
            status, doc = await admin(session, url, "GET", "/v1/admin/tasks")
            assert status == 200
            return {t["task_id"]: t for t in doc["tasks"]}

    return asyncio.run(get())


def test_create_list_show_pause_resume_against_the_real_server(server, bundle, tmp_path, capsys):
    url = ["--server", server.url]
    toml = tmp_path / "task.toml"
    toml.write_text('mode = "async"\n[async]\nbuffer_size = 3\n[plan]\nlr = 0.05\n')
    assert cli_create_task("tabular", bundle, toml, server.url) == 0
    assert capsys.readouterr().out.startswith("created task tabular: active, async, version 0")
    plain = tmp_path / "task.json"
    plain.write_text(json.dumps({"settings": {"sync": {"goal": 2}}}))
    assert cli_create_task("second", bundle, plain, server.url) == 0
    created = _tasks(server.url)
    assert created["tabular"]["settings"]["async_"]["buffer_size"] == 3
    assert created["tabular"]["settings"]["plan"]["lr"] == 0.05
    assert created["second"]["settings"]["sync"]["goal"] == 2
    capsys.readouterr()

    assert cli(["task", "list", *url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["TASK", "STATE", "MODE", "VERSION", "ROUND"]
    assert sorted(line.split()[:3] for line in table[1:]) == [
        ["second", "active", "sync"],
        ["tabular", "active", "async"],
    ]

    assert cli(["task", "pause", "tabular", *url]) == 0
    assert capsys.readouterr().out.startswith("task tabular: paused, async")
    assert _tasks(server.url)["tabular"]["paused"] is True
    assert cli(["task", "show", "tabular", *url]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("task tabular: paused, async, version 0")
    assert "since created: 0 checked in, 0 assigned" in shown and '"buffer_size": 3' in shown
    assert cli(["task", "resume", "tabular", *url]) == 0
    assert capsys.readouterr().out.startswith("task tabular: active")
    assert _tasks(server.url)["tabular"]["paused"] is False
    assert cli(["task", "list", "--json", *url]) == 0
    assert {t["task_id"]: t["state"] for t in json.loads(capsys.readouterr().out)} == {
        "tabular": "active",
        "second": "active",
    }


def test_a_bad_settings_file_is_refused_before_anything_is_sent(
    server, bundle, tmp_path, capsys, monkeypatch
):
    cases = {
        "goal.toml": ("[sync]\ngoal = 0\n", "settings.sync.goal: must be an integer >= 1"),
        "typo.json": (
            json.dumps({"plan": {"epochz": 2}}),
            "settings.plan.epochz: unknown key; did you mean 'epochs'?",
        ),
        "broken.toml": ("[sync\n", "is not valid TOML"),
        "list.json": ("[1, 2]", "must hold an object of task settings"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        assert cli_create_task("bad", bundle, tmp_path / name, server.url) == 2, name
        err = capsys.readouterr().err
        assert message in err, (name, err)
        assert err.startswith("edge-fl task create: settings file ") and "Traceback" not in err
    assert _tasks(server.url) == {}  # nothing reached the server
    monkeypatch.delenv("EDGE_FL_ADMIN_TOKEN")  # the file is checked before the token
    assert cli_create_task("bad", bundle, tmp_path / "goal.toml", server.url) == 2
    assert "settings.sync.goal" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot read settings file"):
        read_settings(tmp_path / "missing.toml")


def test_refusals_and_an_unreachable_server_are_one_line_without_traceback(
    server, bundle, tmp_path, capsys, monkeypatch
):
    url = ["--server", server.url]
    assert cli(["task", "create", "kb", "--bundle", str(bundle), *url]) == 0
    assert cli(["task", "create", "kb", "--bundle", str(bundle), *url]) == 1
    assert "400 bad_request: task 'kb' exists (field task_id)" in capsys.readouterr().err
    assert cli(["task", "create", "other", "--bundle", str(tmp_path / "nothing"), *url]) == 1
    assert "cannot use the bundle at" in capsys.readouterr().err
    assert cli(["task", "show", "nope", *url]) == 1
    assert (
        capsys.readouterr().err.strip()
        == "edge-fl task show: GET /v1/admin/tasks/nope: 404 not_found: unknown task 'nope'"
    )
    token = tmp_path / "token"
    token.write_text("a-wrong-admin-token-of-some-length\n")
    assert cli(["task", "pause", "kb", "--token-file", str(token), *url]) == 1
    assert "403 forbidden: admin token required" in capsys.readouterr().err
    monkeypatch.delenv("EDGE_FL_ADMIN_TOKEN")
    assert cli(["task", "list", *url]) == 2
    assert "no admin token: set EDGE_FL_ADMIN_TOKEN or pass --token-file" in capsys.readouterr().err
    token.write_text(ADMIN + "\n")  # the token file's newline is not part of the token
    assert cli(["task", "pause", "kb", "--token-file", str(token), *url]) == 0
    capsys.readouterr()
    server.stop()
    assert cli(["task", "list", "--token-file", str(token), *url]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"edge-fl task list: cannot reach {server.url}") and "Traceback" not in err
    )
