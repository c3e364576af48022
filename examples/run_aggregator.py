"""Run the aggregator service and create a keyboard task on it, the way an operator would.

    python -m examples.run_aggregator --data-dir out/aggregator [--data my_messages.jsonl]
        [--settings examples/configs/keyboard_task.toml]

Starts `edge-fl serve` (SQLite + files under --data-dir), compiles the keyboard bundle,
creates the task as `edge-fl task create` does (its settings file checked before it is
sent), and prints where the dashboard and metrics are, and the command of the second
terminal: a phone (examples/keyboard_app.py) that joins the task. The server's log shows
a line per committed version.
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
import signal
import time
from pathlib import Path

from aggregator.operator_cli import AdminClient, AdminError, read_settings
from edge_fl_cli import spawn_serve

SETTINGS = Path(__file__).parent / "configs" / "keyboard_task.toml"


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
    parser.add_argument(
        "--settings",
        default=str(SETTINGS),
        help="the task's settings, JSON or TOML (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        settings = read_settings(args.settings)  # before anything is built or started
    except ValueError as e:
        parser.error(str(e))
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
    server, url = spawn_serve(
        data / "state",
        admin_token,
        {"keyboard": enrollment_secret},
        port=args.port,
        options=tuple(serve_config),
    )
    admin = AdminClient(url, admin_token)
    try:
        print("created", admin.create("keyboard", str(bundle), settings)["task_id"])
    except AdminError as e:
        if "exists" not in str(e):
            server.terminate()
            raise SystemExit(f"run_aggregator: {e}") from None
        print("task keyboard exists already: it carries on")
    print(
        f"aggregator at {url}; dashboard {url}/dashboard; metrics {url}/metrics; "
        f"API {url}/openapi.json. Ctrl-C stops it."
    )
    print(
        f"admin token {admin_token}; devices enroll in population 'keyboard' with secret "
        f"{enrollment_secret} (pass both flags to keep them across restarts)"
    )
    print(
        f"\na phone, in a second terminal:\n  python -m examples.keyboard_app --server {url} "
        f"--secret {enrollment_secret} --bundle {bundle}"
    )
    print(
        f"the task, as an operator sees it:\n  EDGE_FL_ADMIN_TOKEN={admin_token} "
        f"edge-fl task show keyboard --server {url}\n",
        flush=True,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops the server too
    try:
        while server.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        server.terminate()
        server.wait()


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
