"""Running the web client (clients/web) under Node from pytest: where it is, whether it
can run, and a skip reason when it cannot (no node, or `npm ci` not run)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "clients" / "web"


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the web client's tests need Node >= 20")
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.skip(
            "clients/web/node_modules is missing: run `npm ci` in clients/web "
            "(scripts/install.sh does when npm exists)"
        )
    return node


def run_tool(tool: str, job: dict, timeout: float = 120) -> dict:
    """Run clients/web/tools/<tool> with `job` as JSON on stdin; its JSON answer."""
    node = node_or_skip()
    done = subprocess.run(
        [node, str(WEB / "tools" / tool)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=WEB,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


async def run_tool_async(tool: str, job: dict, timeout: float = 300) -> dict:
    """run_tool from a test's event loop (a real server answers on the same loop)."""
    proc = await asyncio.create_subprocess_exec(
        node_or_skip(),
        str(WEB / "tools" / tool),
        cwd=WEB,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(job).encode()), timeout)
    assert proc.returncode == 0, err.decode()[-4000:]
    return json.loads(out)


def run_node_tests(
    test_file: str, fixture_variable: str, fixture: dict, folder, timeout=600
) -> str:
    """`node --test clients/web/<test_file>` with `fixture` written as JSON to a file in
    `folder` and its path in the environment variable `fixture_variable`; its TAP output,
    once every test passed."""
    node = node_or_skip()
    path = Path(folder) / f"{fixture_variable.lower()}.json"
    path.write_text(json.dumps(fixture))
    done = subprocess.run(
        [node, "--test", test_file],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {fixture_variable: str(path)},
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return done.stdout
