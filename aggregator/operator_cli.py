"""`edge-fl task create|list|show|pause|resume`: the operator's commands over the admin
API (docs/operator.md).

The admin token comes from `--token-file` or the environment (EDGE_FL_ADMIN_TOKEN), never
from the command line, where other users of the machine could read it. A settings file
(JSON, or TOML by its `.toml` suffix) is checked here with the server's own TaskSettings
before anything is sent, so a mistake is named by its field path
(`settings.sync.goal: must be >= 1, got 0`) and nothing reaches the server. A refusal
of the server is printed as one line (status, code, message) and exits 1; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from .commit_log import funnel_text

TOKEN_ENV = "EDGE_FL_ADMIN_TOKEN"
SERVER_ENV = "EDGE_FL_SERVER"
DEFAULT_SERVER = "http://127.0.0.1:8750"


class AdminError(Exception):
    """An admin call that did not succeed: the server refused it (`status` >= 400, with
    its error `code`), or it was not reached (`status` 0)."""

    def __init__(self, message: str, status: int = 0, code: str = ""):
        super().__init__(message)
        self.status, self.code = status, code


class AdminClient:
    """The admin API's task calls; each returns the server's JSON answer."""

    def __init__(self, server: str, token: str, timeout_s: float = 30.0):
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"--server must be an http(s):// URL, got {server!r}")
        self.server, self.token, self.timeout_s = server.rstrip("/"), token, timeout_s

    def create(self, task_id: str, bundle_dir: str, settings: dict | None = None) -> dict:
        return self._call(
            "POST",
            "/v1/admin/tasks",
            {"task_id": task_id, "bundle_dir": bundle_dir, "settings": settings or {}},
        )

    def list(self) -> list[dict]:
        return self._call("GET", "/v1/admin/tasks")["tasks"]

    def show(self, task_id: str) -> dict:
        return self._call("GET", f"/v1/admin/tasks/{task_id}")

    def pause(self, task_id: str) -> dict:
        return self._call("POST", f"/v1/admin/tasks/{task_id}/pause")

    def resume(self, task_id: str) -> dict:
        return self._call("POST", f"/v1/admin/tasks/{task_id}/resume")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.server + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-Admin-Token": self.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            error = _error_of(e.read())
            code = error.get("code", "")
            field = f" (field {error['field']})" if error.get("field") else ""
            raise AdminError(
                f"{method} {path}: {e.code} {code}: {error.get('message') or e.reason}{field}",
                e.code,
                code,
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise AdminError(f"cannot reach {self.server}: {reason}") from None
        except ValueError as e:  # not JSON: not an edge-fl server
            raise AdminError(
                f"{method} {path}: the answer is not JSON ({e}); is "
                f"{self.server} an edge-fl server?"
            ) from None


def read_settings(path: str | Path) -> dict:
    """A settings file's document, checked as the server will check it (ValueError says
    which field, by its path, and how to fix it)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read settings file {path}: {e.strerror}") from None
    try:
        doc = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ValueError(f"settings file {path} is not valid {kind}: {e}") from None
    if isinstance(doc, dict) and set(doc) == {"settings"}:  # {"settings": {...}} as well
        doc = doc["settings"]
    if not isinstance(doc, dict):  # a ValueError like every other bad file
        raise ValueError(
            f"settings file {path} must hold an object of task settings "  # noqa: TRY004
            "(docs/aggregator.md lists the fields)"
        )
    # imported here: `edge-fl --help` need not load the aggregator's settings
    from .config import TaskSettings

    try:
        TaskSettings.from_json(doc)  # BadField names the path: settings.sync.goal
    except (ValueError, TypeError) as e:
        raise ValueError(f"settings file {path}: {e}") from None
    return doc


def read_token(token_file: str | None) -> str:
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise ValueError(f"cannot read --token-file {token_file}: {e.strerror}") from None
        if not token:
            raise ValueError(f"--token-file {token_file} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ValueError(
            f"no admin token: set {TOKEN_ENV} or pass --token-file FILE "
            "(edge-fl serve prints the token it generated, or takes "
            "--admin-token)"
        )
    return token


def _error_of(body: bytes) -> dict:
    """The `error` object of an error answer ({} if the body is not one)."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


# -- what is printed -------------------------------------------------------------------------
def describe_line(task: dict) -> str:
    if task.get("state") == "failed":
        return f"task {task['task_id']}: failed: {task.get('error', '')}"
    return (
        f"task {task['task_id']}: {task.get('state', '?')}, {task.get('mode', '?')}, "
        f"version {task.get('version', 0)}, round {task.get('round', 0)} "
        f"({task.get('phase', '?')}), {task.get('accepted', 0)} accepted in this round, "
        f"{task.get('in_flight', 0)} in flight"
    )


def task_table(tasks: list[dict]) -> str:
    rows = [("TASK", "STATE", "MODE", "VERSION", "ROUND", "ACCEPTED", "IN FLIGHT", "MODEL")]
    for t in tasks:
        rows.append(
            (
                t["task_id"],
                t.get("state", "?"),
                t.get("mode", "-"),
                str(t.get("version", "-")),
                str(t.get("round", "-")),
                str(t.get("accepted", "-")),
                str(t.get("in_flight", "-")),
                t.get("model_id", "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def task_report(task: dict) -> str:
    lines = [describe_line(task)]
    if "model_id" in task:
        lines.append(f"  model {task['model_id']}")
    funnel = task.get("funnel")
    if funnel:
        lines.append("  since created: " + funnel_text(funnel))
    versions = task.get("versions") or []
    if versions:
        lines.append(f"  versions: {len(versions)}; the newest:")
        for v in versions[-5:]:
            metrics = v.get("metrics") or {}
            loss = metrics.get("mean_loss")
            lines.append(
                f"    v{v['version']}"
                + (f": training loss {loss:.3f}" if isinstance(loss, (int, float)) else "")
            )
    heldout = task.get("heldout_evaluation") or []
    if heldout:
        last = heldout[-1]
        shown = ", ".join(
            f"{k} {v:.4g}"
            for k, v in last.items()
            if k != "version" and isinstance(v, (int, float))
        )
        lines.append(f"  held-out, v{last['version']}: {shown}")
    if task.get("settings"):
        lines.append("  settings: " + json.dumps(task["settings"], sort_keys=True))
    return "\n".join(lines)


# -- the subcommands ---------------------------------------------------------------------------
def _client(args) -> AdminClient:
    return AdminClient(
        args.server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER, read_token(args.token_file)
    )


def _create(args) -> str:
    settings = read_settings(args.settings) if args.settings else {}  # before the token
    return "created " + describe_line(_client(args).create(args.task_id, args.bundle, settings))


def _list(args) -> str:
    tasks = _client(args).list()
    if args.json:
        return json.dumps(tasks, indent=2)
    return task_table(tasks) if tasks else "no tasks (edge-fl task create makes one)"


def _show(args) -> str:
    task = _client(args).show(args.task_id)
    return json.dumps(task, indent=2) if args.json else task_report(task)


def _pause(args) -> str:
    return describe_line(_client(args).pause(args.task_id))


def _resume(args) -> str:
    return describe_line(_client(args).resume(args.task_id))


def add_task_commands(sub) -> None:
    """`task` and its subcommands, on the `edge-fl` parser's subparsers."""
    task = sub.add_parser(
        "task",
        help="create, list, inspect, pause and resume tasks on a running aggregator (admin API)",
    )
    commands = task.add_subparsers(dest="task_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server", help=f"the aggregator's URL (default: ${SERVER_ENV}, else {DEFAULT_SERVER})"
    )
    common.add_argument(
        "--token-file", help=f"a file holding the admin token (default: ${TOKEN_ENV})"
    )
    create = commands.add_parser("create", parents=[common], help="create a task from a bundle")
    create.add_argument("task_id")
    create.add_argument(
        "--bundle", required=True, help="the bundle directory, as the server's machine sees it"
    )
    create.add_argument(
        "--settings",
        help="task settings: FILE.json or FILE.toml "
        "(docs/aggregator.md; checked here before sending)",
    )
    create.set_defaults(func=_run(_create))
    listing = commands.add_parser("list", parents=[common], help="the tasks and their state")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_run(_list))
    show = commands.add_parser(
        "show", parents=[common], help="a task's state, funnel, versions and settings"
    )
    show.add_argument("task_id")
    show.add_argument("--json", action="store_true", help="the admin API's whole answer")
    show.set_defaults(func=_run(_show))
    for name, func, what in (
        ("pause", _pause, "stop assigning work"),
        ("resume", _resume, "assign work again"),
    ):
        command = commands.add_parser(name, parents=[common], help=f"{what} (task {name})")
        command.add_argument("task_id")
        command.set_defaults(func=_run(func))


def _run(command):
    def run(args) -> int:
        name = f"edge-fl task {args.task_command}"
        try:
            print(command(args))
        except ValueError as e:  # refused here, before anything was sent
            print(f"{name}: {e}", file=sys.stderr)
            return 2
        except AdminError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 1
        return 0

    return run
