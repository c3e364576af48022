"""What serves browser devices in the tests: the clients/web tree, a bundle, each device's
examples and the aggregator's API under one origin (the aggregator sends no CORS headers,
so a page must come from the API's origin, as behind one reverse proxy), and a place to
post results. A real aiohttp server on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
from aiohttp import web

from examples.web_demo import TYPES as DEMO_TYPES
from examples.web_demo import forward, static_file

from .node import WEB

# the demo's proxy, serving the bundle's files too
TYPES = DEMO_TYPES | {".onnx": "application/octet-stream", ".npz": "application/octet-stream"}


def _file(root: Path, relative: str) -> web.StreamResponse:
    return static_file(root, relative, TYPES)


@contextlib.asynccontextmanager
async def page_server(api_url: str, bundle_dir: Path, examples: list[list[dict]]):
    """Yields (url, results): results[i] is a Future of device i's posted JSON."""
    loop = asyncio.get_running_loop()
    results = {i: loop.create_future() for i in range(len(examples))}

    async def static(request):
        return _file(WEB, request.match_info["path"])

    async def bundle(request):
        return _file(bundle_dir, request.match_info["name"])

    async def device_examples(request):
        i = int(request.match_info["i"])
        return web.json_response([{k: v.tolist() for k, v in e.items()} for e in examples[i]])

    async def result(request):
        i = int(request.match_info["i"])
        if not results[i].done():
            results[i].set_result(await request.json())
        return web.Response(status=204)

    async def api(request):
        return await forward(session, api_url, request)

    app = web.Application(client_max_size=64 * 2**20)
    app.add_routes(
        [
            web.get("/web/{path:.+}", static),
            web.get("/bundle/{name}", bundle),
            web.get(r"/examples/{i:\d+}.json", device_examples),
            web.post(r"/results/{i:\d+}", result),
            web.route("*", "/v1/{path:.*}", api),
        ]
    )
    async with aiohttp.ClientSession() as session:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}", results
        finally:
            await runner.cleanup()
