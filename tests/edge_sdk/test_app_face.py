"""The SDK's face as an app sees it: `edge_sdk.__all__`, `connect` (enroll once, the
identity kept in the example store), `ClientConfig`, `Participation`; and the keyboard
example built on those names only, joining a real `edge-fl serve` on 127.0.0.1."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import edge_sdk
from edge_fl_cli import main as cli
from tests.aggregator.fleet import ADMIN, SECRET, ServerProcess, cli_create_task, free_port
from tests.fleet.toy_data import chatty_users

ROOT = Path(__file__).resolve().parents[2]


def test_import_edge_sdk_is_light_and_every_public_name_resolves():
    code = (
        "import sys, edge_sdk\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'onnxruntime', 'aiohttp', 'numpy', 'torch'})\n"
        "names = [n for n in edge_sdk.__all__ if getattr(edge_sdk, n, None) is None]\n"
        "print(heavy, names, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")[0]
    assert out == "[] [] False"
    assert len(set(edge_sdk.__all__)) == len(edge_sdk.__all__)
    assert set(edge_sdk.__all__) == set(edge_sdk._OWNERS)
    with pytest.raises(AttributeError, match="no attribute 'FederatedClient'"):
        edge_sdk.FederatedClient  # noqa: B018 (the inside is not on the face)


def test_the_keyboard_example_uses_only_names_of_edge_sdk_all():
    tree = ast.parse((ROOT / "examples" / "keyboard_app.py").read_text())
    used = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "edge_sdk"
        ):
            assert node.module == "edge_sdk", f"imports from the SDK's inside: {node.module}"
            used += [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("edge_sdk") for a in node.names)
    assert {"connect", "ClientConfig", "Participation"} <= set(used)
    assert set(used) <= set(edge_sdk.__all__)


def test_client_config_refuses_what_it_cannot_use():
    from edge_sdk import ClientConfig, MinLocalExamples, Policy

    config = ClientConfig(collection="typed", policy=Policy((MinLocalExamples(3),)), seed=7)
    assert config.eval_collection is None and config.train_in_thread
    with pytest.raises(ValueError, match="collection must be a non-empty string"):
        ClientConfig(collection="")
    with pytest.raises(TypeError, match="policy must be an edge_sdk.Policy"):
        ClientConfig(policy=[MinLocalExamples(3)])
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        ClientConfig(seed=-1)
    with pytest.raises(TypeError, match="clock must have a now"):
        ClientConfig(clock=object())


def test_participation_outcomes_carry_their_reason():
    from edge_sdk import Participation, ParticipationResult

    accepted = ParticipationResult("completed", server={"status": "accepted"})
    retried = ParticipationResult("completed", server={"status": "duplicate"})
    refused = ParticipationResult("rejected", "update_too_large")
    assert accepted.outcome is Participation.ACCEPTED
    assert retried.outcome is Participation.DUPLICATE
    assert (refused.outcome, refused.reason) == (Participation.REJECTED, "update_too_large")
    assert ParticipationResult("ineligible", "not_charging").outcome is Participation.NOT_ELIGIBLE
    assert ParticipationResult("later").outcome is Participation.COME_BACK_LATER
    assert ParticipationResult("aborted", "no_examples").outcome is Participation.STOPPED


@pytest.fixture(scope="module")
def keyboard_bundle(tmp_path_factory):
    """The tiny keyboard model with a word vocabulary (the app encodes what is typed)."""
    from model_zoo.zoo import build_bundle

    return build_bundle(
        "keyboard_cifg_tiny", tmp_path_factory.mktemp("kb") / "bundle", seed=0, with_vocabulary=True
    )


@pytest.fixture
def server(tmp_path):
    process = ServerProcess(tmp_path / "state", free_port())
    process.start()
    yield process
    process.stop()


def _phone_at_home(chat: Path, tmp_path: Path) -> list[str]:
    """keyboard_app arguments: the messages typed (`chat`), the phone's files under
    tmp_path/phone, training from 5 examples on."""
    return ["--data", str(chat), "--out", str(tmp_path / "phone"), "--min-examples", "5"]


def test_the_keyboard_app_joins_a_running_aggregator_and_its_updates_are_accepted(
    server, keyboard_bundle, tmp_path, capsys, monkeypatch
):
    from examples.keyboard_app import main as keyboard

    monkeypatch.setenv("EDGE_FL_ADMIN_TOKEN", ADMIN)
    settings = tmp_path / "task.toml"
    settings.write_text(
        'mode = "sync"\n[sync]\ngoal = 1\noverselect = 1.0\n[plan]\nbatch_size = 8\nlr = 0.5\n'
    )
    assert cli_create_task("kb", keyboard_bundle, settings, server.url) == 0
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps(r) + "\n" for r in chatty_users()))
    phone = ["--server", server.url, "--secret", SECRET, "--bundle", str(keyboard_bundle)]
    phone += [*_phone_at_home(chat, tmp_path), "--task", "kb"]
    capsys.readouterr()
    keyboard([*phone, "--nights", "2"])
    first = capsys.readouterr().out
    assert "(enrolled now)" in first
    assert "afternoon, in use: NOT_ELIGIBLE: not_charging,not_idle" in first
    assert "night 1, charging: ACCEPTED: trained v0 of kb on 10 examples" in first
    assert "night 2, charging: ACCEPTED: trained v1 of kb on 10 examples" in first
    assert "held-out next-word recall of model v2" in first  # the global model is in use
    keyboard([*phone, "--nights", "1"])
    second = capsys.readouterr().out
    device = first.split("device ")[1].split()[0]
    assert f"device {device} (enrolled before)" in second  # the identity from the store
    assert "night 1, charging: ACCEPTED: trained v2 of kb" in second
    # the server's own counters
    assert cli(["task", "show", "kb", "--json", "--server", server.url]) == 0
    task = json.loads(capsys.readouterr().out)
    assert task["version"] == 3 and len(task["versions"]) == 4
    assert task["funnel"]["accepted"] == 3 and task["funnel"]["reported"] == 3
    assert task["funnel"]["rejected"] == {}
    log = server.log.read_text()
    assert (
        "task kb v1: 1 checked in, 1 assigned, 1 uploaded, 1 accepted, 0 late, "
        "0 rejected (since created); loss " in log
    )
    assert "task kb v3: 1 checked in, 1 assigned, 1 uploaded, 1 accepted" in log


def test_connect_enrolls_once_per_server_and_population(server, tmp_path):
    import asyncio

    from edge_sdk import ExampleStore, FakeClock, ServerRejected, connect

    async def run():
        store = ExampleStore(tmp_path / "phone.db", clock=FakeClock())
        async with connect(server.url, "keyboard", SECRET, store) as first:
            ids = [first.device_id, first.enrolled_now]
        second = await connect(server.url, "keyboard", SECRET, store)
        ids += [second.device_id, second.enrolled_now]
        second.forget()  # e.g. after a 401: the next connection enrolls anew
        await second.close()
        async with connect(server.url, "keyboard", SECRET, store) as third:
            ids += [third.device_id, third.enrolled_now]
        with pytest.raises(ServerRejected, match="403"):
            async with connect(
                server.url,
                "keyboard",
                "wrong",
                ExampleStore(tmp_path / "other.db", clock=FakeClock()),
            ):
                pass
        store.close()
        return ids

    first_id, enrolled, second_id, enrolled_again, third_id, enrolled_third = asyncio.run(run())
    assert first_id == second_id and enrolled and not enrolled_again
    assert third_id != first_id and enrolled_third


@pytest.mark.slow  # ~40 s: run_aggregator compiles the full keyboard model
def test_the_two_terminal_demo_run_aggregator_and_a_keyboard_phone(tmp_path, capsys):
    import signal
    import urllib.request

    from examples.keyboard_app import main as keyboard

    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps(r) + "\n" for r in chatty_users()))
    log = tmp_path / "terminal1.err"
    with open(log, "w") as err:
        terminal1 = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "examples.run_aggregator",
                "--data",
                str(chat),
                "--vocabulary-size",
                "30",
                "--data-dir",
                str(tmp_path / "agg"),
                "--port",
                "0",
                "--admin-token",
                ADMIN,
                "--enrollment-secret",
                SECRET,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        printed = []
        while not printed or "edge-fl task show" not in printed[-1]:
            line = terminal1.stdout.readline()
            assert line, "".join(printed) + log.read_text()
            printed.append(line)
        assert "created keyboard\n" in printed
        phone = next(p for p in printed if "examples.keyboard_app" in p).split()
        url, bundle = phone[phone.index("--server") + 1], phone[phone.index("--bundle") + 1]
        keyboard(
            [*phone[phone.index("--server") :], *_phone_at_home(chat, tmp_path), "--nights", "2"]
        )
        out = capsys.readouterr().out
        assert "night 1, charging: ACCEPTED: trained v0 of keyboard" in out
        assert "night 2, charging: ACCEPTED: trained v1 of keyboard" in out
        assert Path(bundle).is_dir()
        request = urllib.request.Request(
            url + "/v1/admin/tasks/keyboard", headers={"X-Admin-Token": ADMIN}
        )
        with urllib.request.urlopen(request) as r:
            task = json.loads(r.read())
        assert task["version"] == 2 and task["funnel"]["accepted"] == 2
    finally:
        terminal1.send_signal(signal.SIGINT)  # Ctrl-C: the server stops with it
        assert terminal1.wait(60) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/v1/status", timeout=5)
    assert "task keyboard v2: 1 checked in, 1 assigned, 1 uploaded, 1 accepted" in log.read_text()


def test_the_screenful_in_docs_app_developer_runs_and_its_update_is_accepted(
    server, keyboard_bundle, tmp_path, capsys
):
    doc = (ROOT / "docs" / "app-developer.md").read_text()
    code = doc.split("```python\n")[1].split("```")[0]
    assert len(code.splitlines()) <= 60  # a screenful
    for old, new in (
        ('"https://fl.example.com"', repr(server.url)),
        ('"the population\'s secret"', repr(SECRET)),
        ('"assets/keyboard_bundle"', repr(str(keyboard_bundle))),
        ('"app_data/examples.db"', repr(str(tmp_path / "examples.db"))),
    ):
        assert old in code
        code = code.replace(old, new)
    typing = "".join(f"on_message_sent({r['text']!r})\n" for r in chatty_users()[:30])
    code = code.replace(
        "asyncio.run(on_background_slot())", typing + "asyncio.run(on_background_slot())"
    )
    settings = tmp_path / "task.json"
    settings.write_text(json.dumps({"sync": {"goal": 1, "overselect": 1.0}}))
    token_file = str(_token_file(tmp_path))
    assert (
        cli_create_task("kb", keyboard_bundle, settings, server.url, "--token-file", token_file)
        == 0
    )
    capsys.readouterr()
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert (
        cli(
            [
                "task",
                "show",
                "kb",
                "--json",
                "--server",
                server.url,
                "--token-file",
                str(_token_file(tmp_path)),
            ]
        )
        == 0
    )
    task = json.loads(capsys.readouterr().out)
    assert task["funnel"]["accepted"] == 1 and task["version"] == 1


def _token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(ADMIN)
    return path
