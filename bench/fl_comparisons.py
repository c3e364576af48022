"""Same heterogeneous fleet, two comparisons (in-process transport, simulated time):

1. sync FedAvg vs buffered async (FedBuff) on the same devices (profiles, data, seed):
   simulated hours until each run's held-out top-1 first reaches a target (`--target`,
   else the sync run's final top-1: a late target, where sync ends), and the same for
   the held-out loss; also each run's update throughput, which sets most of the ratio
   (docs/async.md);
2. the default codec (top-k 5% int8 + error feedback) vs float32 uploads: final recall.

    python -m bench.fl_comparisons --part sync_async [--model keyboard_cifg] \\
        [--devices 600] [--versions 40] [--target 0.10] [--pretrain]

The full comparison is the full keyboard_cifg (1.42M parameters, 10k words) on 600
devices; `--model keyboard_cifg_tiny --vocabulary-size 2000` is the quick one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

PLAN = {"epochs": 1, "batch_size": 16, "lr": 1.0}
PRETRAIN = {"public": {"roles_every": 3, "offset": 1}, "epochs": 2, "batch_size": 64, "lr": 0.003}


@dataclass(frozen=True)
class Fleet:
    """What both runs share: model, devices (profiles and data from `seed`), plan, how
    often they are scored."""

    model: str = "keyboard_cifg"
    vocabulary_size: int = 10000
    devices: int = 600
    speed_sigma: float = 1.0  # log-normal spread of compute speed: the stragglers
    step_time_s: float = 20.0  # a median device's seconds per local step
    goal: int = 30  # sync: updates per round (goal x 1.3 selected)
    concurrency: int = 39  # async: devices training at once (= sync's selected)
    buffer_size: int = 10  # async: updates per version
    max_staleness: int = 20
    eval_examples: int = 400
    eval_every: int = 1
    seed: int = 5
    pretrain: bool = False
    backend: str = "local"

    def sync_task(self) -> dict:
        return {
            "mode": "sync",
            "plan": PLAN,
            "sync": {
                "goal": self.goal,
                "overselect": 1.3,
                "selection_timeout_s": 600,
                "report_deadline_s": 3600,
                "min_fraction": 0.7,
            },
        }

    def async_task(self) -> dict:
        # FedBuff: the delta of an update s versions stale is scaled by 1/sqrt(1 + s)
        return {
            "mode": "async",
            "plan": PLAN,
            "async_": {
                "concurrency": self.concurrency,
                "buffer_size": self.buffer_size,
                "max_staleness": self.max_staleness,
            },
        }


def _run(
    fleet: Fleet, task: dict, versions: int, codec: str = "default", out: Path | None = None
) -> dict:
    from fleet.config import ProfileSettings, SimulationConfig
    from fleet.run import run

    config = SimulationConfig(
        model=fleet.model,
        devices=fleet.devices,
        vocabulary_size=fleet.vocabulary_size,
        task=task,
        transport="inprocess",
        hours=24 * 14,
        max_versions=versions,
        eval_every=fleet.eval_every,
        eval_examples=fleet.eval_examples,
        codec=codec,
        seed=fleet.seed,
        backend=fleet.backend,
        pretrain=PRETRAIN if fleet.pretrain else None,
        profiles=ProfileSettings(speed_sigma=fleet.speed_sigma, step_time_s=fleet.step_time_s),
    )
    if out is not None:  # kept: the pre-trained start is cached there for the next run
        return run(config, out, centralized_epochs=0, show_progress=False, fresh=True)
    with tempfile.TemporaryDirectory() as tmp:
        return run(config, Path(tmp), centralized_epochs=0, show_progress=False)


def hours_to(report: dict, key: str, target: float, lower_is_better: bool) -> float | None:
    """Simulated hours of the first evaluation at or past `target`, or None."""
    for point in report["timeline"]:
        if (point[key] <= target) if lower_is_better else (point[key] >= target):
            return point["sim_hours"]
    return None


def _describe(hours: float | None, report: dict) -> str:
    if hours is None:
        return f"not reached in {report['sim_hours']:.2f} h ({report['versions']} versions)"
    return f"{hours:.2f} h"


def throughput(report: dict) -> float:
    """Accepted updates per simulated hour."""
    return report["funnel"]["accepted"] / max(report["sim_hours"], 1e-9)


def compare_sync_async(
    fleet: Fleet,
    versions: int,
    target: float | None = None,
    async_factor: int = 6,
    out: Path | None = None,
) -> dict:
    sync = _run(fleet, fleet.sync_task(), versions, out=out and out / "sync")
    final = sync["timeline"][-1]
    # room for async to reach sync's end: a version carries buffer_size updates, a round goal
    fedbuff = _run(
        fleet,
        fleet.async_task(),
        versions * max(1, async_factor * fleet.goal // (3 * fleet.buffer_size)),
        out=out and out / "async",
    )
    print(
        f"\n== Sync FedAvg vs buffered async on the same fleet ({fleet.model}, "
        f"{fleet.devices} devices, log-normal speed sigma {fleet.speed_sigma}, "
        f"{fleet.step_time_s:g} s per median step"
        f"{', pre-trained start' if fleet.pretrain else ''}) =="
    )
    sync_how = f"rounds of {fleet.goal} ({round(fleet.goal * 1.3)} selected)"
    async_how = f"concurrency {fleet.concurrency}, buffer {fleet.buffer_size}"
    for name, r, how in (("sync", sync, sync_how), ("async", fedbuff, async_how)):
        best = max(p["accuracy"] for p in r["timeline"])
        print(
            f"{name}, {how}: {r['versions']} versions in {r['sim_hours']:.2f} simulated "
            f"hours, {throughput(r):.0f} updates/h; start top-1 "
            f"{100 * r['timeline'][0]['accuracy']:.2f}%, final "
            f"{100 * r['timeline'][-1]['accuracy']:.2f}%, best {100 * best:.2f}%"
        )
    result = {"fleet": fleet.__dict__, "sync": _summary(sync), "async": _summary(fedbuff)}
    targets = (
        ("accuracy", "top-1", False, target if target is not None else final["accuracy"]),
        ("mean_loss", "held-out loss", True, final["mean_loss"]),
    )
    for key, label, lower, value in targets:
        h_sync, h_async = hours_to(sync, key, value, lower), hours_to(fedbuff, key, value, lower)
        shown = f"{value:.3f}" if lower else f"{100 * value:.2f}%"
        ratio = f"; async {h_sync / h_async:.2f}x sooner" if h_async and h_sync else ""
        where = "" if key == "accuracy" and target is not None else "sync's final "
        print(
            f"to {where}{label} {shown}: sync {_describe(h_sync, sync)}, async "
            f"{_describe(h_async, fedbuff)}{ratio}"
        )
        result[key] = {
            "target": value,
            "sync_hours": h_sync,
            "async_hours": h_async,
            "ratio": h_sync / h_async if h_async and h_sync else None,
        }
    result["throughput_ratio"] = throughput(fedbuff) / throughput(sync)
    print(f"update throughput: async {result['throughput_ratio']:.2f}x sync's")
    return result


def _summary(report: dict) -> dict:
    return {
        "versions": report["versions"],
        "sim_hours": report["sim_hours"],
        "wall_seconds": report["wall_seconds"],
        "accepted": report["funnel"]["accepted"],
        "timeline": [
            {k: p[k] for k in ("version", "sim_hours", "accuracy", "mean_loss")}
            for p in report["timeline"]
        ],
    }


def compare_codecs(fleet: Fleet, versions: int) -> dict:
    default = _run(fleet, fleet.sync_task(), versions)
    float32 = _run(fleet, fleet.sync_task(), versions, codec="float32")
    d, f = default["final"], float32["final"]
    print(f"\n== Default codec vs float32 uploads ({versions} sync rounds, {fleet.model}) ==")
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
    parser.add_argument("--versions", type=int, default=40, help="sync rounds")
    parser.add_argument("--part", choices=("sync_async", "codec", "all"), default="all")
    parser.add_argument("--model", default="keyboard_cifg")
    parser.add_argument("--vocabulary-size", type=int, default=10000)
    parser.add_argument("--devices", type=int, default=600)
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="top-1 target (default: the sync run's final top-1)",
    )
    parser.add_argument("--speed-sigma", type=float, default=1.0)
    parser.add_argument("--goal", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=39)
    parser.add_argument("--buffer-size", type=int, default=10)
    parser.add_argument("--eval-examples", type=int, default=400)
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="both runs start from the model pre-trained on public roles",
    )
    parser.add_argument("--backend", choices=("local", "processes"), default="local")
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the runs (and a cached pre-trained start) here"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    fleet = Fleet(
        model=args.model,
        vocabulary_size=args.vocabulary_size,
        devices=args.devices,
        speed_sigma=args.speed_sigma,
        goal=args.goal,
        concurrency=args.concurrency,
        buffer_size=args.buffer_size,
        eval_examples=args.eval_examples,
        pretrain=args.pretrain,
        backend=args.backend,
    )
    out = {}
    if args.part in ("sync_async", "all"):
        out["sync_async"] = compare_sync_async(fleet, args.versions, args.target, out=args.out)
    if args.part in ("codec", "all"):
        out["codec"] = compare_codecs(fleet, args.versions)
    if args.json:
        args.json.write_text(json.dumps(out.get("sync_async", {}), indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
