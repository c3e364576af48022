"""Running the web client (clients/web) under Node from pytest: where it is, whether it
can run, and a skip reason when it cannot (no node, or `npm ci` not run)."""

from __future__ import annotations

import json
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
