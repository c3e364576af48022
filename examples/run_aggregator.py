"""Run the aggregator service and create a keyboard task on it, the way an operator would.

    python -m examples.run_aggregator --data-dir out/aggregator

Starts `edge-fl serve` (SQLite + files under --data-dir), compiles the keyboard bundle,
creates a sync task through the admin API, and prints where the dashboard and metrics are.
Stop it with Ctrl-C; start it again on the same data dir and it carries on.
"""
from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="out/aggregator")
    parser.add_argument("--port", type=int, default=8750)
    parser.add_argument("--admin-token", help="default: a random one, printed")
    parser.add_argument("--enrollment-secret", help="the keyboard population's secret "
                        "(default: a random one, printed)")
    args = parser.parse_args(argv)
    admin_token = args.admin_token or secrets.token_urlsafe(24)
    enrollment_secret = args.enrollment_secret or secrets.token_urlsafe(16)
    data = Path(args.data_dir)
    from model_zoo.zoo import build_bundle
    bundle = build_bundle("keyboard_cifg", data / "bundles" / "keyboard_cifg", with_vocabulary=True)
    server = subprocess.Popen([sys.executable, "-m", "edge_fl_cli", "serve", "--data-dir",
                               str(data / "state"), "--port", str(args.port), "--admin-token",
                               admin_token, "--enrollment-secret", f"keyboard={enrollment_secret}"],
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().split()[-1]
    request = urllib.request.Request(url + "/v1/admin/tasks", method="POST", data=json.dumps({
        "task_id": "keyboard", "bundle_dir": str(bundle), "settings": {
            "mode": "sync", "sync": {"goal": 100, "overselect": 1.3}}}).encode(),
        headers={"X-Admin-Token": admin_token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as r:
            print("created task:", json.loads(r.read())["task_id"])
    except urllib.error.HTTPError as e:
        print("task exists already:", json.loads(e.read())["error"]["message"])
    print(f"aggregator at {url}; dashboard {url}/dashboard; metrics {url}/metrics; "
          f"API {url}/openapi.json. Ctrl-C stops it.")
    print(f"admin token {admin_token}; devices enroll in population 'keyboard' with secret "
          f"{enrollment_secret} (pass both flags to keep them across restarts)")
    try:
        while server.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        server.terminate()


if __name__ == "__main__":
    main()
