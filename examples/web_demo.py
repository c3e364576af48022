"""The keyboard demo with a browser tab as the device: `make demo-web`.

    python examples/web_demo.py [--model keyboard_cifg] [--port 8760] [--data-dir out/web_demo]

Compiles the keyboard bundle (keyboard_cifg_tiny by default: quick to build and to train in
a tab), starts `edge-fl serve` with a sync keyboard task small enough for one tab to move it
(goal 1), and serves clients/web, the bundle and the aggregator's API under one origin (the
aggregator sends no CORS headers, so the page must come from the API's origin, as behind a
reverse proxy). Open the printed URL: the page (clients/web/browser/demo.html) keeps typed
sentences in IndexedDB, suggests next words from the newest model and trains when its
policy allows (opt-in, tab hidden or user idle). What the tab reports is printed here.
Ctrl-C stops both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

from aggregator.operator_cli import AdminClient, AdminError
from edge_fl_cli import spawn_serve

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "clients" / "web"
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".html": "text/html",
    ".json": "application/json",
}
FORWARDED_REQUEST = ("Authorization", "Content-Type", "If-None-Match", "Range")
FORWARDED_RESPONSE = (
    "Content-Type",
    "ETag",
    "Last-Modified",
    "Retry-After",
    "X-Model-Version",
    "Content-Range",
    "Accept-Ranges",
)
TASK = "keyboard"
SESSION = web.AppKey("session", aiohttp.ClientSession)


def task_settings(goal: int) -> dict:
    """Rounds one tab can close: `goal` reports, short waits between check-ins."""
    return {
        "mode": "sync",
        "sync": {
            "goal": goal,
            "overselect": 1.0,
            "selection_timeout_s": 60,
            "report_deadline_s": 120,
            "min_fraction": 1.0,
        },
        "retry_min_s": 3,
        "retry_max_s": 10,
        "plan": {"epochs": 1, "batch_size": 8, "lr": 0.5},
    }


def static_file(root: Path, relative: str, types: dict[str, str] = TYPES) -> web.StreamResponse:
    """The file at `relative` under `root` (404 outside it), never cached; its
    Content-Type from `types` by suffix."""
    path = (root / relative).resolve()
    if root.resolve() not in path.parents or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        path,
        headers={
            "Content-Type": types.get(path.suffix, "application/octet-stream"),
            "Cache-Control": "no-store",
        },
    )


async def forward(
    session: aiohttp.ClientSession, api_url: str, request: web.Request
) -> web.Response:
    """`request` sent on to the aggregator at `api_url` (same path and query), and its
    reply, each with the headers the API needs."""
    headers = {k: request.headers[k] for k in FORWARDED_REQUEST if k in request.headers}
    async with session.request(
        request.method, api_url + request.path_qs, data=await request.read(), headers=headers
    ) as r:
        body = await r.read()
        kept = {k: r.headers[k] for k in FORWARDED_RESPONSE if k in r.headers}
        return web.Response(status=r.status, body=body, headers=kept)


def _print_report(event: dict) -> None:
    print("tab:", json.dumps(event)[:300], flush=True)


def page_app(
    api_url: str, bundle_dir: Path, config: dict, on_report=_print_report
) -> web.Application:
    """clients/web at /web/, the bundle at /bundle/, the page's settings at
    /demo/config.json, its reports at POST /demo/log (each JSON event to `on_report`),
    the API at /v1/ (proxied)."""
    app = web.Application(client_max_size=64 * 2**20)

    async def static(request):
        return static_file(WEB, request.match_info["path"])

    async def bundle(request):
        return static_file(bundle_dir, request.match_info["name"])

    async def settings(request):
        return web.json_response(config)

    async def log(request):
        try:
            on_report(json.loads(await request.text()))
        except ValueError:
            raise web.HTTPBadRequest()
        return web.Response(status=204)

    async def index(request):
        raise web.HTTPFound("/web/browser/demo.html")

    async def api(request):
        return await forward(app[SESSION], api_url, request)

    async def session_context(app):
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_context)
    app.add_routes(
        [
            web.get("/", index),
            web.get("/web/{path:.+}", static),
            web.get("/bundle/{name}", bundle),
            web.get("/demo/config.json", settings),
            web.post("/demo/log", log),
            web.route("*", "/v1/{path:.*}", api),
        ]
    )
    return app


def create_task(url: str, admin_token: str, bundle: Path, goal: int) -> None:
    try:
        created = AdminClient(url, admin_token).create(TASK, str(bundle), task_settings(goal))
        print("created task:", created["task_id"])
    except AdminError as e:
        if "exists" not in str(e):
            raise SystemExit(f"web_demo: {e}") from None
        print("task exists already:", e)


async def _serve_page(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1]
        print(
            f"open http://{host}:{bound}/ in a browser (several tabs or profiles make "
            "several devices); Ctrl-C stops.",
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="keyboard_cifg_tiny",
        help="zoo keyboard model (keyboard_cifg for the full one)",
    )
    parser.add_argument("--data-dir", default="out/web_demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8760, help="the page's port")
    parser.add_argument("--goal", type=int, default=1, help="reports per round")
    args = parser.parse_args(argv)
    from model_zoo.zoo import build_bundle

    data = Path(args.data_dir)
    print(f"compiling {args.model} ...", flush=True)
    bundle = build_bundle(args.model, data / "bundles" / args.model, with_vocabulary=True)
    admin_token = secrets.token_urlsafe(24)
    secret = secrets.token_urlsafe(16)
    # a state dir per model: a task's bundle cannot change under it
    try:
        server, api_url = spawn_serve(
            data / "state" / args.model,
            admin_token,
            {TASK: secret},
            host="127.0.0.1",
        )
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    try:
        create_task(api_url, admin_token, bundle, args.goal)
        app = page_app(api_url, bundle, {"population": TASK, "secret": secret, "task": TASK})
        print(
            f"aggregator at {api_url} (dashboard {api_url}/dashboard; admin token {admin_token})",
            flush=True,
        )
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the server too
        try:
            asyncio.run(_serve_page(app, args.host, args.port))
        except KeyboardInterrupt:
            pass
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
