"""Same heterogeneous fleet, two comparisons (keyboard_cifg_tiny, in-process, simulated time):

1. sync FedAvg vs buffered async (FedBuff): simulated hours to reach a held-out loss target;
2. the default codec (top-k 5% int8 + error feedback) vs float32 uploads: final recall.

    python -m bench.fl_comparisons [--versions 40]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def _run(task: dict, versions: int, codec: str = "default", devices: int = 600) -> dict:
    from fleet.config import ProfileSettings, SimulationConfig
    from fleet.run import run
    config = SimulationConfig(
        model="keyboard_cifg_tiny", devices=devices, vocabulary_size=2000, task=task,
        transport="inprocess", hours=24 * 14, max_versions=versions, eval_every=1,
        eval_examples=400, codec=codec, seed=5,
        profiles=ProfileSettings(speed_sigma=1.0, step_time_s=20.0))
    with tempfile.TemporaryDirectory() as tmp:
        return run(config, Path(tmp), centralized_epochs=0, show_progress=False)


def _hours_to(report: dict, loss: float) -> float | None:
    for point in report["timeline"]:
        if point["mean_loss"] <= loss:
            return point["sim_hours"]
    return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=40)
    args = parser.parse_args(argv)
    plan = {"epochs": 1, "batch_size": 16, "lr": 1.0}
    sync = _run({"mode": "sync", "plan": plan, "sync": {
        "goal": 30, "overselect": 1.3, "selection_timeout_s": 600, "report_deadline_s": 3600,
        "min_fraction": 0.7}}, args.versions)
    # FedBuff: K = 10 per version, so 3 async versions carry as many updates as 1 round
    fedbuff = _run({"mode": "async", "plan": plan, "async_": {
        "concurrency": 39, "buffer_size": 10, "max_staleness": 20}}, args.versions * 3)
    target = max(min(p["mean_loss"] for p in sync["timeline"]),
                 min(p["mean_loss"] for p in fedbuff["timeline"]))
    h_sync, h_async = _hours_to(sync, target), _hours_to(fedbuff, target)
    print(f"\n== Sync FedAvg vs buffered async on the same fleet (keyboard_cifg_tiny) ==")
    print(f"target held-out loss {target:.3f} (the worse of the two runs' best)")
    print(f"sync, rounds of 30 (39 selected): {h_sync:.2f} simulated hours "
          f"({sync['versions']} versions)")
    print(f"async, concurrency 39, buffer 10: {h_async:.2f} simulated hours "
          f"({fedbuff['versions']} versions); speed-up {h_sync / h_async:.2f}x")
    float32 = _run({"mode": "sync", "plan": plan, "sync": {
        "goal": 30, "overselect": 1.3, "selection_timeout_s": 600, "report_deadline_s": 3600,
        "min_fraction": 0.7}}, args.versions, codec="float32")
    d, f = sync["final"], float32["final"]
    print(f"\n== Default codec vs float32 uploads ({args.versions} sync rounds) ==")
    print(f"float32: top-1 {100 * f['accuracy']:.2f}%, top-3 {100 * f['top3_accuracy']:.2f}%, "
          f"up {float32['client']['bytes_up'] / 2**20:.1f} MB")
    print(f"default: top-1 {100 * d['accuracy']:.2f}%, top-3 {100 * d['top3_accuracy']:.2f}%, "
          f"up {sync['client']['bytes_up'] / 2**20:.1f} MB "
          f"({100 * (d['accuracy'] - f['accuracy']):+.2f} points top-1)")
    return {"sync": sync, "async": fedbuff, "float32": float32}


if __name__ == "__main__":
    main()
