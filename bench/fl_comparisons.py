"""Same heterogeneous fleet, two comparisons (keyboard_cifg_tiny, in-process, simulated time):

1. sync FedAvg vs buffered async (FedBuff): simulated hours until each reaches the sync
   run's *final* held-out loss and top-1 (a late target: where sync ends, not where
   both runs are still at the start);
2. the default codec (top-k 5% int8 + error feedback) vs float32 uploads: final recall.

    python -m bench.fl_comparisons [--versions 40] [--part sync_async|codec|all]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

PLAN = {"epochs": 1, "batch_size": 16, "lr": 1.0}
SYNC = {
    "mode": "sync",
    "plan": PLAN,
    "sync": {
        "goal": 30,
        "overselect": 1.3,
        "selection_timeout_s": 600,
        "report_deadline_s": 3600,
        "min_fraction": 0.7,
    },
}
# FedBuff: K = 10 per version, so 3 async versions carry as many updates as 1 round; the
# delta of an update s versions stale is scaled by 1/sqrt(1 + s)
FEDBUFF = {
    "mode": "async",
    "plan": PLAN,
    "async_": {"concurrency": 39, "buffer_size": 10, "max_staleness": 20},
}


def _run(task: dict, versions: int, codec: str = "default", devices: int = 600) -> dict:
    from fleet.config import ProfileSettings, SimulationConfig
    from fleet.run import run

    config = SimulationConfig(
        model="keyboard_cifg_tiny",
        devices=devices,
        vocabulary_size=2000,
        task=task,
        transport="inprocess",
        hours=24 * 14,
        max_versions=versions,
        eval_every=1,
        eval_examples=400,
        codec=codec,
        seed=5,
        profiles=ProfileSettings(speed_sigma=1.0, step_time_s=20.0),
    )
    with tempfile.TemporaryDirectory() as tmp:
        return run(config, Path(tmp), centralized_epochs=0, show_progress=False)


def _hours_to(report: dict, key: str, target: float, lower_is_better: bool) -> float | None:
    for point in report["timeline"]:
        if (point[key] <= target) if lower_is_better else (point[key] >= target):
            return point["sim_hours"]
    return None


def _describe(hours: float | None, report: dict) -> str:
    if hours is None:
        return f"not reached in {report['sim_hours']:.2f} h ({report['versions']} versions)"
    return f"{hours:.2f} h"


def compare_sync_async(versions: int) -> dict:
    sync = _run(SYNC, versions)
    fedbuff = _run(FEDBUFF, versions * 6)  # room to reach sync's end, if it can
    final = sync["timeline"][-1]
    print(
        "\n== Sync FedAvg vs buffered async on the same fleet (keyboard_cifg_tiny, 600 "
        "devices, log-normal speed sigma 1.0) =="
    )
    print(
        f"sync, rounds of 30 (39 selected): {sync['versions']} versions in "
        f"{sync['sim_hours']:.2f} simulated hours; final loss {final['mean_loss']:.3f}, "
        f"top-1 {100 * final['accuracy']:.2f}%"
    )
    best = min(fedbuff["timeline"], key=lambda p: p["mean_loss"])
    print(
        f"async, concurrency 39, buffer 10: {fedbuff['versions']} versions in "
        f"{fedbuff['sim_hours']:.2f} simulated hours; best loss {best['mean_loss']:.3f}, "
        f"top-1 {100 * max(p['accuracy'] for p in fedbuff['timeline']):.2f}%"
    )
    out = {"sync": sync, "async": fedbuff}
    for key, label, lower in (("mean_loss", "held-out loss", True), ("accuracy", "top-1", False)):
        target = final[key]
        h_sync = _hours_to(sync, key, target, lower)
        h_async = _hours_to(fedbuff, key, target, lower)
        shown = f"{target:.3f}" if lower else f"{100 * target:.2f}%"
        ratio = f"; async {h_sync / h_async:.2f}x sooner" if h_async else ""
        print(
            f"to sync's final {label} {shown}: sync {_describe(h_sync, sync)}, async "
            f"{_describe(h_async, fedbuff)}{ratio}"
        )
        out[key] = (h_sync, h_async)
    return out


def compare_codecs(versions: int) -> dict:
    default, float32 = _run(SYNC, versions), _run(SYNC, versions, codec="float32")
    d, f = default["final"], float32["final"]
    print(f"\n== Default codec vs float32 uploads ({versions} sync rounds) ==")
    print(
        f"float32: top-1 {100 * f['accuracy']:.2f}%, top-3 {100 * f['top3_accuracy']:.2f}%, "
        f"up {float32['client']['bytes_up'] / 2**20:.1f} MB"
    )
    print(
        f"default: top-1 {100 * d['accuracy']:.2f}%, top-3 {100 * d['top3_accuracy']:.2f}%, "
        f"up {default['client']['bytes_up'] / 2**20:.1f} MB "
        f"({100 * (d['accuracy'] - f['accuracy']):+.2f} points top-1)"
    )
    return {"default": default, "float32": float32}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=40)
    parser.add_argument("--part", choices=("sync_async", "codec", "all"), default="all")
    args = parser.parse_args(argv)
    out = {}
    if args.part in ("sync_async", "all"):
        out["sync_async"] = compare_sync_async(args.versions)
    if args.part in ("codec", "all"):
        out["codec"] = compare_codecs(args.versions)
    return out


if __name__ == "__main__":
    main()
