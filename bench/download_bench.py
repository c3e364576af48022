"""Download bytes per participation and the top-1 cost of compact model downloads.

The same simulated keyboard fleet (keyboard_cifg_tiny, Shakespeare users, in-process
transport, sync rounds, same seed) twice: every device downloading the float32 model,
then every device asking for "q8" (int8 with a scale per 256 values; a device holding
an older whole download gets an int4 difference from it: edge_sdk/protocol/
model_encoding.py). Prints bytes down per completed participation and the final top-1
on every held-out example of the federated users.

    python -m bench.download_bench [--devices 300] [--versions 12] [--goal 30]
"""

from __future__ import annotations

import argparse
import time


def simulate(encoding: str | None, args) -> dict:
    from edge_sdk.client import FederatedClient

    from .keyboard_fleet import keyboard_fleet, run_fleet

    config = keyboard_fleet(
        args.devices,
        args.versions,
        sync={"goal": args.goal},
        eval_examples=500,
        final_eval_all=True,
        seed=args.seed,
    )
    # the simulator builds its clients with the SDK's defaults; its config has no
    # download setting (yet), so the bench sets the default it runs under
    defaults = FederatedClient.__init__.__kwdefaults__
    saved = defaults["download_encoding"]
    defaults["download_encoding"] = encoding
    try:
        start = time.perf_counter()
        report = run_fleet(config)
        wall = time.perf_counter() - start
    finally:
        defaults["download_encoding"] = saved
    client = report["client"]
    completed = client["outcomes"].get("completed", 0)
    final = report.get("final_all", report["final"])
    return {
        "encoding": encoding or "f32",
        "versions": report["versions"],
        "completed": completed,
        "bytes_down": client["bytes_down"],
        "bytes_up": client["bytes_up"],
        "down_per_participation": client["bytes_down"] / max(completed, 1),
        "top1": 100 * final["accuracy"],
        "wall_s": wall,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--versions", type=int, default=12)
    parser.add_argument("--goal", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [simulate(None, args), simulate("q8", args)]
    print(
        f"\n== Downloads: keyboard_cifg_tiny, {args.devices} devices, sync rounds of "
        f"{args.goal}, {args.versions} versions, seed {args.seed} =="
    )
    print(
        f"{'download':>9} {'versions':>8} {'completed':>9} {'KB down/particip.':>18} "
        f"{'MB down':>8} {'MB up':>7} {'top-1 %':>8} {'wall s':>7}"
    )
    for r in rows:
        print(
            f"{r['encoding']:>9} {r['versions']:>8} {r['completed']:>9} "
            f"{r['down_per_participation'] / 1024:>18.1f} {r['bytes_down'] / 2**20:>8.2f} "
            f"{r['bytes_up'] / 2**20:>7.2f} {r['top1']:>8.2f} {r['wall_s']:>7.0f}"
        )
    f32, q8 = rows
    print(
        f"q8 downloads: {q8['down_per_participation'] / f32['down_per_participation']:.3f} "
        f"of float32's bytes per participation, top-1 {q8['top1'] - f32['top1']:+.2f} points"
    )
    return rows


if __name__ == "__main__":
    main()
