"""Run the aggregator service and create a keyboard task on it, the way an operator would.

    python -m examples.run_aggregator --data-dir out/aggregator [--data my_messages.jsonl]

Starts `edge-fl serve` (SQLite + files under --data-dir), compiles the keyboard bundle,
creates a sync task through the admin API, and prints where the dashboard and metrics are.
With --data (one's own text: JSON lines {"user": ..., "text": ...} or a directory of one
file per user) the keyboard's vocabulary is built from that text's training split
instead of Shakespeare's, and its held-out split is evaluated beside the server
(`edge-fl heldout`) as each version arrives.
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
    parser.add_argument(
        "--enrollment-secret",
        help="the keyboard population's secret (default: a random one, printed)",
    )
    parser.add_argument("--data", help="the keyboard's text (default: Shakespeare)")
    parser.add_argument("--vocabulary-size", type=int, default=10000)
    args = parser.parse_args(argv)
    admin_token = args.admin_token or secrets.token_urlsafe(24)
    enrollment_secret = args.enrollment_secret or secrets.token_urlsafe(16)
    data = Path(args.data_dir)
    serve_config = []
    if args.data:
        bundle = _bundle_for(args.data, args.vocabulary_size, data)
        serve_config = ["--config", str(data / "serve.json")]
    else:
        from model_zoo.zoo import build_bundle

        bundle = build_bundle(
            "keyboard_cifg", data / "bundles" / "keyboard_cifg", with_vocabulary=True
        )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_fl_cli",
            "serve",
            "--data-dir",
            str(data / "state"),
            "--port",
            str(args.port),
            "--admin-token",
            admin_token,
            "--enrollment-secret",
            f"keyboard={enrollment_secret}",
            *serve_config,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = server.stdout.readline().split()[-1]
    request = urllib.request.Request(
        url + "/v1/admin/tasks",
        method="POST",
        data=json.dumps(
            {
                "task_id": "keyboard",
                "bundle_dir": str(bundle),
                "settings": {"mode": "sync", "sync": {"goal": 100, "overselect": 1.3}},
            }
        ).encode(),
        headers={"X-Admin-Token": admin_token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as r:
            print("created task:", json.loads(r.read())["task_id"])
    except urllib.error.HTTPError as e:
        print("task exists already:", json.loads(e.read())["error"]["message"])
    print(
        f"aggregator at {url}; dashboard {url}/dashboard; metrics {url}/metrics; "
        f"API {url}/openapi.json. Ctrl-C stops it."
    )
    print(
        f"admin token {admin_token}; devices enroll in population 'keyboard' with secret "
        f"{enrollment_secret} (pass both flags to keep them across restarts)"
    )
    try:
        while server.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        server.terminate()


def _bundle_for(spec: str, vocabulary_size: int, data: Path) -> Path:
    """The keyboard bundle sized to the text's vocabulary, the text's held-out split as a
    held-out set, and a serve config that evaluates the task on it."""
    from fleet.config import SimulationConfig
    from fleet.data import open_dataset
    from fleet.datasets import spec_from_argument
    from fleet.datasets.summary import write_heldout
    from fleet.models import build_model_bundle

    config = SimulationConfig(
        model="keyboard_cifg", data=spec_from_argument(spec), vocabulary_size=vocabulary_size
    )
    dataset = open_dataset(config)
    if dataset.task().kind != "next_word":
        raise SystemExit(f"--data {spec}: the keyboard needs text (JSON lines or a directory)")
    bundle = build_model_bundle(config, dataset.task(), data / "bundles" / "keyboard_cifg")
    held = data / "heldout.jsonl"
    count = write_heldout(dataset, held)
    (data / "serve.json").write_text(
        json.dumps({"heldout": {"keyboard": {"bundle": str(bundle.path), "examples": str(held)}}})
    )
    print(
        f"{dataset.name}: vocabulary of {bundle.num_classes} words from the training split "
        f"of {len(dataset.users())} users; {count} held-out sentences in {held}"
    )
    return bundle.path


if __name__ == "__main__":
    main()
