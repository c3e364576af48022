"""A two-node Ray cluster on this machine, as an operator starts one: `ray start --head`,
then `ray start --address` for a worker node, one CPU each; for trying the Ray backend
(fleet/ray_backend.py) across nodes, in tests and benchmarks. Each `ray start --block`
runs in its own session so that stopping it ends exactly the processes it started (never
`ray stop`, which stops every Ray instance of the user on the machine)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [
                str(RAY),
                "start",
                "--block",
                "--num-cpus=1",
                "--disable-usage-stats",
                "--node-ip-address=127.0.0.1",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=ROOT,
        )


@dataclass(frozen=True)
class LocalCluster:
    address: str  # the head's, "127.0.0.1:PORT"
    env: dict  # what a driver's environment needs to connect (the cluster's own token)
    sessions: list[int]  # each node's process session id, the head's first

    def pids(self) -> list[int]:
        """Every process of both nodes (raylets, stores, workers...)."""
        return _session_members(set(self.sessions))


def _session_members(leaders: set[int]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) in leaders:
                    pids.append(int(entry.name))
    return pids


def _stop(nodes: list[subprocess.Popen]) -> None:
    leaders = {p.pid for p in nodes}
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        members = _session_members(leaders)
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _session_members(leaders):
            for p in nodes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=0.1)
            time.sleep(0.2)


_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[2])
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
print(sum(n["Alive"] for n in ray.nodes()))
"""


@contextlib.contextmanager
def local_ray_cluster(nodes_timeout_s: float = 120.0):
    """Yields a LocalCluster once both nodes are up; stops both nodes after. The cluster
    has its own authentication token (not ~/.ray/auth_token, which every cluster of the
    user shares)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    # workers import this checkout's fleet package: the nodes' environment carries it
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    logs = Path(tempfile.mkdtemp(prefix="edge-fl-ray-logs-"))
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix socket paths
    nodes = [
        _start(
            ["--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false"],
            logs / "head.log",
            env,
        )
    ]
    try:
        _wait_for_port(port, nodes[0], logs / "head.log", nodes_timeout_s)
        nodes.append(_start([f"--address={address}"], logs / "worker.log", env))
        alive = subprocess.run(
            [sys.executable, "-c", _NODES, address, str(nodes_timeout_s)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if alive.strip().splitlines()[-1] != "2":
            raise RuntimeError(f"the worker node did not join: {(logs / 'worker.log').read_text()}")
        yield LocalCluster(address, env, [p.pid for p in nodes])
    finally:
        _stop(nodes)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)


def _wait_for_port(port: int, head: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start --head exited: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the head did not open port {port}: {log.read_text()}")
