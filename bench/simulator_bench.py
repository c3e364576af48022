"""Simulator throughput at 10,000 devices: device-rounds per second of real time.

Devices hold sub-splits of the 1,419 Shakespeare users' data (more devices than users);
keyboard_cifg_tiny, in-process transport, sync rounds of 100.

    python -m bench.simulator_bench [--devices 10000] [--versions 5]
    python -m bench.simulator_bench --stores [--devices 400]   # RSS: memory vs disk stores

The second form runs the full keyboard_cifg (1.42M parameters, a 5.7 MB residual per
device that has trained) once with in-memory and once with on-disk device stores, each in
its own process, and prints each one's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, help="default: 10,000 (throughput), 400 (--stores)")
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument(
        "--stores", action="store_true", help="peak RSS with in-memory vs on-disk device stores"
    )
    args = parser.parse_args(argv)
    if args.stores:
        return store_memory(args.devices or 400, args.versions)
    args.devices = args.devices or 10_000
    from fleet.config import SimulationConfig
    from fleet.run import run

    config = SimulationConfig(
        model="keyboard_cifg_tiny",
        devices=args.devices,
        vocabulary_size=2000,
        transport="inprocess",
        hours=48,
        max_versions=args.versions,
        eval_every=args.versions,
        eval_examples=200,
        task={
            "mode": "sync",
            "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
            "sync": {
                "goal": 100,
                "overselect": 1.3,
                "selection_timeout_s": 600,
                "report_deadline_s": 900,
                "min_fraction": 0.7,
            },
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = run(config, Path(tmp), centralized_epochs=0, show_progress=False)
        total = time.perf_counter() - start
    rounds = report["client"]["participations"]
    print(
        f"\n== Simulator: {args.devices} devices, rounds of 100, keyboard_cifg_tiny, in-process =="
    )
    print(
        f"{report['versions']} versions, {rounds} device participations (check-ins included) in "
        f"{report['wall_seconds']:.0f}s of simulation ({total:.0f}s with set-up): "
        f"{report['funnel']['accepted'] / report['wall_seconds']:.1f} accepted device-rounds/s, "
        f"{rounds / report['wall_seconds']:.0f} participation attempts/s; "
        f"{report['sim_hours']:.1f} simulated hours"
    )
    return report


_STORES_CHILD = r"""
import json, sys, tempfile
from pathlib import Path
from bench.memory import peak_rss_mb
from fleet.config import SimulationConfig
from fleet.run import run
devices, versions, stores = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
config = SimulationConfig(
    model="keyboard_cifg", devices=devices, transport="inprocess", hours=96,
    max_versions=versions, eval_every=versions, eval_examples=100, device_stores=stores,
    task={"mode": "sync", "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
          "sync": {"goal": 50, "overselect": 1.3, "selection_timeout_s": 600,
                   "report_deadline_s": 900, "min_fraction": 0.7}})
with tempfile.TemporaryDirectory() as tmp:
    report = run(config, Path(tmp), centralized_epochs=0, show_progress=False)
    disk = sum(f.stat().st_size for f in (Path(tmp) / "devices").glob("*")) if stores == "disk" else 0
print(json.dumps({"stores": stores, "peak_rss_mb": peak_rss_mb(), "disk_mb": disk / 2**20,
                  "accepted": report["funnel"]["accepted"], "seconds": report["wall_seconds"],
                  "accuracy": report["final"]["accuracy"]}))
"""


def store_memory(devices: int, versions: int) -> list[dict]:
    rows = []
    for stores in ("memory", "disk"):
        out = subprocess.run(
            [sys.executable, "-c", _STORES_CHILD, str(devices), str(versions), stores],
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n== Simulator memory: {devices} keyboard_cifg devices, {versions} rounds of 50 ==")
    for r in rows:
        print(
            f"{r['stores']:>6s} device stores: peak RSS {r['peak_rss_mb']:.0f} MB, device files "
            f"{r['disk_mb']:.0f} MB, {r['accepted']} accepted updates, {r['seconds']:.0f} s, "
            f"top-1 {100 * r['accuracy']:.2f}%"
        )
    return rows


if __name__ == "__main__":
    main()
