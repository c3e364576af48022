"""Train-step time of every zoo bundle in onnxruntime-web (Node, WASM, one thread) against
the Python SDK (onnxruntime, one thread), on the same batch, and the bytes of one update
of the default codec after those steps.

    python clients/web/tools/bench.py [--steps 20] [--batch 16] [--models logreg mlp ...]
                                      [--browser]

Needs torch (the bundles are compiled here) and `npm ci` in clients/web. Node runs with
--no-liftoff, so its steps are timed on optimized WASM. With --browser the same steps are
also timed in headless Chromium (browser/bench.html, served from 127.0.0.1), with V8 given
--no-liftoff too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "clients" / "web"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_sdk.bundle import Bundle  # noqa: E402
from edge_sdk.protocol import DEFAULT_CODEC, UpdateMeta, UpdatePipeline, encode_update  # noqa: E402
from edge_sdk.runtime import RuntimeOptions, StatefulStepRunner  # noqa: E402

# headless Chromium as a quiet test device: no GPU, no sandbox (root), no background work
HEADLESS_CHROMIUM = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

MODELS = [
    "logreg",
    "mlp",
    "femnist_cnn_tiny",
    "femnist_cnn",
    "shakespeare_char_tiny",
    "shakespeare_char",
    "keyboard_cifg_tiny",
    "keyboard_cifg",
]


def python_steps(bundle: Bundle, batch: dict, lr: float, warmup: int, steps: int):
    params = bundle.initial_parameters()
    state = {s["name"]: np.zeros_like(params[s["like"]]) for s in bundle.optimizer_state_specs}
    runner = StatefulStepRunner(
        bundle.graph_path("train_step"), params | state, RuntimeOptions(threads=1)
    )
    ms = []
    for i in range(warmup + steps):
        feeds = dict(batch) | {"lr": np.array(lr, np.float32), "step": np.array(i + 1, np.int64)}
        if bundle.uses_seed:
            feeds["seed"] = np.array(i, np.int64)
        t0 = time.perf_counter()
        runner.step(feeds)
        if i >= warmup:
            ms.append(1000 * (time.perf_counter() - t0))
    carried = runner.carried()
    delta = {s.name: carried[s.name] - params[s.name] for s in bundle.parameter_specs}
    return ms, delta


async def browser_steps(job: dict, bundles: dict[str, Path], tmp: Path) -> dict:
    """Serve the web client, the bundles and the job on 127.0.0.1; time in Chromium."""
    from aiohttp import web

    types = {
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".html": "text/html",
    }
    done = asyncio.get_running_loop().create_future()

    def serve(root: Path, relative: str):
        path = (root / relative).resolve()
        if root.resolve() not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(
            path, headers={"Content-Type": types.get(path.suffix, "application/octet-stream")}
        )

    async def results(request):
        if not done.done():
            done.set_result(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.add_routes(
        [
            web.get("/web/{p:.+}", lambda r: serve(WEB, r.match_info["p"])),
            web.get(
                "/bundles/{m}/{f}", lambda r: serve(bundles[r.match_info["m"]], r.match_info["f"])
            ),
            web.get("/job.json", lambda r: web.json_response(job)),
            web.post("/results", results),
        ]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/web/browser/bench.html"
    browser = await asyncio.create_subprocess_exec(
        shutil.which("chromium"),
        *HEADLESS_CHROMIUM,
        "--js-flags=--no-liftoff",
        f"--user-data-dir={tmp / 'profile'}",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out = await asyncio.wait_for(done, 1800)
    finally:
        browser.terminate()
        await browser.wait()
        await runner.cleanup()
    if "error" in out:
        raise RuntimeError(out["error"])
    return out


def main(argv=None) -> None:
    import torch

    from model_zoo.zoo import ZOO, build_bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--browser", action="store_true", help="also time headless Chromium")
    args = parser.parse_args(argv)
    rows, cases, paths = {}, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path = paths[name] = build_bundle(name, Path(tmp) / name, seed=0)
            bundle = Bundle.load(path)
            made = ZOO[name].batch(args.batch, torch.Generator().manual_seed(0))
            batch = {k: v.numpy() for k, v in made.items()}
            ms, delta = python_steps(bundle, batch, args.lr, args.warmup, args.steps)
            meta = UpdateMeta("bench", bundle.model_id, 0, "dev-bench", "k" * 32, args.batch)
            update = encode_update(
                delta,
                bundle.parameter_specs,
                meta,
                UpdatePipeline(DEFAULT_CODEC),
                signing_key=bytes(32),
                rng=np.random.default_rng(0),
            )
            n = sum(int(np.prod(s.shape)) for s in bundle.parameter_specs)
            rows[name] = {
                "parameters": n,
                "python_ms": statistics.median(ms),
                "update_bytes": len(update),
                "float32_bytes": 4 * n,
            }
            cases.append(
                {
                    "model": name,
                    "bundle_dir": str(path),
                    "lr": args.lr,
                    "warmup": args.warmup,
                    "steps": args.steps,
                    "batch": {
                        k: {
                            "dtype": str(v.dtype),
                            "shape": list(v.shape),
                            "hex": np.ascontiguousarray(v).tobytes().hex(),
                        }
                        for k, v in batch.items()
                    },
                }
            )
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"cases": cases}))
        done = subprocess.run(
            ["node", "--no-liftoff", str(WEB / "tools" / "bench_train.mjs"), str(job)],
            cwd=WEB,
            capture_output=True,
            text=True,
            check=True,
        )
        chromium = (
            asyncio.run(browser_steps({"cases": cases}, paths, Path(tmp))) if args.browser else {}
        )
    web = json.loads(done.stdout)
    print(f"batch {args.batch}, median of {args.steps} steps after {args.warmup}, one thread")
    print(
        f"{'model':24} {'params':>10} {'python ms':>10} {'node ms':>9} {'chromium ms':>12} "
        f"{'update B':>9} {'float32 B':>10}"
    )
    for name, r in rows.items():
        w = statistics.median(web[name]["ms"])
        c = f"{statistics.median(chromium[name]['ms']):>12.2f}" if chromium else f"{'-':>12}"
        print(
            f"{name:24} {r['parameters']:>10,} {r['python_ms']:>10.2f} {w:>9.2f} {c} "
            f"{r['update_bytes']:>9,} {r['float32_bytes']:>10,}"
        )


if __name__ == "__main__":
    main()
