"""Simulator throughput at 10,000 devices: device-rounds per second of real time.

Devices hold sub-splits of the 1,419 Shakespeare users' data (more devices than users);
keyboard_cifg_tiny, in-process transport, sync rounds of 100.

    python -m bench.simulator_bench [--devices 10000] [--versions 5]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=5)
    args = parser.parse_args(argv)
    from fleet.config import SimulationConfig
    from fleet.run import run
    config = SimulationConfig(
        model="keyboard_cifg_tiny", devices=args.devices, vocabulary_size=2000,
        transport="inprocess", hours=48, max_versions=args.versions, eval_every=args.versions,
        eval_examples=200, task={"mode": "sync", "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
                                  "sync": {"goal": 100, "overselect": 1.3, "selection_timeout_s": 600,
                                           "report_deadline_s": 900, "min_fraction": 0.7}})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = run(config, Path(tmp), centralized_epochs=0, show_progress=False)
        total = time.perf_counter() - start
    rounds = report["client"]["participations"]
    print(f"\n== Simulator: {args.devices} devices, rounds of 100, keyboard_cifg_tiny, in-process ==")
    print(f"{report['versions']} versions, {rounds} device participations (check-ins included) in "
          f"{report['wall_seconds']:.0f}s of simulation ({total:.0f}s with set-up): "
          f"{report['funnel']['accepted'] / report['wall_seconds']:.1f} accepted device-rounds/s, "
          f"{rounds / report['wall_seconds']:.0f} participation attempts/s; "
          f"{report['sim_hours']:.1f} simulated hours")
    return report


if __name__ == "__main__":
    main()
