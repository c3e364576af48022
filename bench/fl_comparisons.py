"""Same heterogeneous fleet, two comparisons (in-process transport, simulated time):

1. sync FedAvg vs buffered async (FedBuff) on the same devices (profiles, data, seed,
   plan): simulated hours until each run's held-out top-1 reaches a target and *stays* at
   or above it for the rest of the run (a single lucky evaluation does not count), for
   targets below both runs' plateaus; the same for the held-out loss; and each run's
   update throughput, which sets most of the ratio (docs/async.md). Both runs get the
   same simulated time: async runs for as long as the sync run's `--versions` rounds took.
2. the default codec (top-k 5% int8 + error feedback) vs float32 uploads: final recall.

    python -m bench.fl_comparisons --part sync_async [--model keyboard_cifg] \\
        [--devices 600] [--versions 40] [--target 0.10] [--pretrain] [--quick] \\
        [--out DIR [--reuse | --rerun-async]]

The full comparison is the full keyboard_cifg (1.42M parameters, 10k words) on 600
devices; `--quick` is keyboard_cifg_tiny with 2,000 words, 300 devices, 15 rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

PLAN = {"epochs": 1, "batch_size": 16, "lr": 1.0}
# the demo's public pre-training (docs/demo.md) for one epoch instead of two: a start that
# leaves the fleet more to gain in a run that fits the bench
PRETRAIN = {"public": {"roles_every": 3, "offset": 1}, "epochs": 1, "batch_size": 64, "lr": 0.003}
# where along the way from the start to the common target the table also reports
STAGES = (0.5, 0.75, 1.0)
ASYNC_REPORT_DEADLINE_S = 600.0
TAIL = 0.25  # a run's plateau floor: its worst evaluation over the last quarter of its time


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
    buffer_size: int = 10  # async: updates per version (FedBuff's K = 10)
    # the aggregator's default is 10 at its default concurrency 20; twice the devices in
    # flight make updates about twice as stale
    max_staleness: int = 20
    eval_examples: int = 1000
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
                "staleness": "polynomial",
                # the aggregator's default, 600 s: about a sync round's length, the
                # patience a sync round effectively has (it closes at `goal` reports)
                "report_deadline_s": ASYNC_REPORT_DEADLINE_S,
            },
        }


QUICK = {"model": "keyboard_cifg_tiny", "vocabulary_size": 2000, "devices": 300}
QUICK_VERSIONS = 15


def simulation_config(fleet: Fleet, task: dict, versions: int, hours: float, codec="default"):
    """The fleet's SimulationConfig for one run: only `task`, `versions` and `hours`
    differ between the sync and the async run."""
    from fleet.config import ProfileSettings, SimulationConfig

    return SimulationConfig(
        model=fleet.model,
        devices=fleet.devices,
        vocabulary_size=fleet.vocabulary_size,
        task=task,
        transport="inprocess",
        hours=hours,
        max_versions=versions,
        eval_every=fleet.eval_every,
        eval_examples=fleet.eval_examples,
        codec=codec,
        seed=fleet.seed,
        backend=fleet.backend,
        pretrain=PRETRAIN if fleet.pretrain else None,
        profiles=ProfileSettings(speed_sigma=fleet.speed_sigma, step_time_s=fleet.step_time_s),
    )


def _run(config, out: Path) -> dict:
    from fleet.run import run

    return run(config, out, centralized_epochs=0, show_progress=False, fresh=True)


def _share_pretrain(done: Path, todo: Path) -> None:
    """The pre-trained start the first run cached (fleet/pretrain.py, OUT/pretrain/KEY),
    given to the second: the same start, trained once."""
    from fleet.pretrain import CACHE_DIR

    if (done / CACHE_DIR).is_dir() and not (todo / CACHE_DIR).exists():
        shutil.copytree(done / CACHE_DIR, todo / CACHE_DIR)


def _past(value: float, target: float, lower_is_better: bool) -> bool:
    return value <= target if lower_is_better else value >= target


def hours_to(timeline: list[dict], key: str, target: float, lower_is_better: bool) -> float | None:
    """Simulated hours of the first evaluation at or past `target` (a noisy curve's first
    crossing: reported beside the held one, never as the result), or None."""
    for point in timeline:
        if _past(point[key], target, lower_is_better):
            return point["sim_hours"]
    return None


def hours_held(
    timeline: list[dict], key: str, target: float, lower_is_better: bool
) -> float | None:
    """Simulated hours of the first evaluation from which every later one is at or past
    `target`, or None if the last one is not: the time the run reached the target for
    good. A version that jumps past the target and falls back does not count."""
    held = None
    for point in timeline:
        if _past(point[key], target, lower_is_better):
            held = point["sim_hours"] if held is None else held
        else:
            held = None
    return held


def plateau(timeline: list[dict], key: str, lower_is_better: bool, tail: float = TAIL) -> float:
    """The run's worst `key` over the last `tail` of its simulated time (at least the last
    evaluation): a level the run holds from there on, so `hours_held` of it exists."""
    end = timeline[-1]["sim_hours"]
    values = [p[key] for p in timeline if p["sim_hours"] >= (1 - tail) * end]
    return max(values) if lower_is_better else min(values)


def common_target(sync: list[dict], fedbuff: list[dict], key: str, lower_is_better: bool):
    """The level both runs reach and keep: the worse of their plateau floors."""
    floors = (plateau(sync, key, lower_is_better), plateau(fedbuff, key, lower_is_better))
    return max(floors) if lower_is_better else min(floors)


def throughput(report: dict) -> float:
    """Accepted updates per simulated hour."""
    return report["funnel"]["accepted"] / max(report["sim_hours"], 1e-9)


def examples_aggregated(run_dir: Path) -> float | None:
    """Training examples in the run's committed versions (the sum of each version's total
    weight: an update weighs its example count), from the aggregator's store in
    `run_dir`/server; None without one."""
    from fleet.simulator import TASK, open_run_store

    try:
        store = open_run_store(run_dir)
    except FileNotFoundError:
        return None
    try:
        history = store.model_history(TASK)
    finally:
        store.close()
    return float(
        sum(v["metrics"].get("measurements", {}).get("total_weight", 0.0) for v in history)
    )


def tail_spread(timeline: list[dict], key: str = "accuracy", tail: float = TAIL) -> float:
    """Standard deviation of `key` over the last `tail` of the run's simulated time: how
    far its evaluations swing around its plateau (version to version), not its trend."""
    end = timeline[-1]["sim_hours"]
    values = [p[key] for p in timeline if p["sim_hours"] >= (1 - tail) * end]
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def run_figures(report: dict, run_dir: Path) -> dict:
    """What the table says about one run beyond its timeline: throughput in updates and
    in examples, and the swing of its top-1 on its plateau."""
    examples = examples_aggregated(run_dir)
    hours = max(report["sim_hours"], 1e-9)
    accepted = report["funnel"]["accepted"]
    return {
        "updates_per_hour": throughput(report),
        "examples_per_hour": None if examples is None else examples / hours,
        "examples_per_update": None if examples is None or not accepted else examples / accepted,
        "tail_spread": tail_spread(report["timeline"]),
    }


def crossings(
    sync: list[dict], fedbuff: list[dict], key: str, target: float, lower_is_better: bool
) -> dict:
    """Held and first crossings of `target` by both timelines, and the held ratio."""
    h_sync, h_async = (hours_held(t, key, target, lower_is_better) for t in (sync, fedbuff))
    return {
        "target": target,
        "sync_hours": h_sync,
        "async_hours": h_async,
        "ratio": h_sync / h_async if h_sync and h_async else None,
        "sync_first_hours": hours_to(sync, key, target, lower_is_better),
        "async_first_hours": hours_to(fedbuff, key, target, lower_is_better),
    }


def compare_timelines(sync: list[dict], fedbuff: list[dict], target: float | None = None) -> dict:
    """Top-1 at STAGES of the way from the start (version 0, the same model in both runs)
    to `target` (default: the common plateau floor), and held-out loss at the common
    ceiling; timelines are lists of {"sim_hours", "accuracy", "mean_loss"} in time order."""
    top = target if target is not None else common_target(sync, fedbuff, "accuracy", False)
    start = sync[0]["accuracy"]
    result = {
        "accuracy": [
            {"stage": s, **crossings(sync, fedbuff, "accuracy", start + s * (top - start), False)}
            for s in STAGES
        ],
        "mean_loss": crossings(
            sync, fedbuff, "mean_loss", common_target(sync, fedbuff, "mean_loss", True), True
        ),
    }
    return result


def _hours(h: float | None) -> str:
    return "not held" if h is None else f"{h:.2f} h"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def async_config(fleet: Fleet, sync: dict):
    """The async run's config: the sync run's simulated hours; versions only as a cap
    (4x the sync run's updates)."""
    cap = max(1, 4 * sync["versions"] * fleet.goal // fleet.buffer_size)
    return simulation_config(fleet, fleet.async_task(), cap, hours=sync["sim_hours"])


def compare_sync_async(
    fleet: Fleet, versions: int, target: float | None = None, out: Path | None = None
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = out if out is not None else Path(tmp)
        sync = _run(
            simulation_config(fleet, fleet.sync_task(), versions, hours=24 * 14), root / "sync"
        )
        _share_pretrain(root / "sync", root / "async")
        fedbuff = _run(async_config(fleet, sync), root / "async")
        return _compare(fleet, sync, fedbuff, root, target)


def rerun_async(fleet: Fleet, out: Path, target: float | None = None) -> dict:
    """Only the async side again (e.g. after a change to async aggregation), against the
    sync run already in `out`/sync: the same simulated hours, the same start."""
    sync = _read_run(out / "sync")
    check_same_fleet(fleet, sync, fleet.sync_task(), out / "sync")
    _share_pretrain(out / "sync", out / "async")
    fedbuff = _run(async_config(fleet, sync), out / "async")
    return _compare(fleet, sync, fedbuff, out, target)


def _compare(fleet: Fleet, sync: dict, fedbuff: dict, root: Path, target: float | None) -> dict:
    result = {"fleet": asdict(fleet), "sync": _summary(sync), "async": _summary(fedbuff)}
    result |= compare_timelines(sync["timeline"], fedbuff["timeline"], target)
    result["throughput_ratio"] = throughput(fedbuff) / throughput(sync)
    result["sync"] |= run_figures(sync, root / "sync")
    result["async"] |= run_figures(fedbuff, root / "async")
    print_table(fleet, sync, fedbuff, result)
    return result


def print_table(fleet: Fleet, sync: dict, fedbuff: dict, result: dict) -> None:
    print(
        f"\n== Sync FedAvg vs buffered async on the same fleet ({fleet.model}, "
        f"{fleet.devices} devices, log-normal speed sigma {fleet.speed_sigma}, "
        f"{fleet.step_time_s:g} s per median step, seed {fleet.seed}"
        f"{', pre-trained start' if fleet.pretrain else ', random start'}) =="
    )
    sync_how = f"rounds of {fleet.goal} ({round(fleet.goal * 1.3)} selected)"
    async_how = (
        f"concurrency {fleet.concurrency}, buffer {fleet.buffer_size}, "
        f"max staleness {fleet.max_staleness}"
    )
    for name, r, how in (("sync", sync, sync_how), ("async", fedbuff, async_how)):
        t, figures = r["timeline"], result[name]
        examples = (
            ""
            if figures["examples_per_hour"] is None
            else f", {figures['examples_per_hour']:.0f} examples/h "
            f"({figures['examples_per_update']:.1f} per update)"
        )
        print(
            f"{name}, {how}: {r['versions']} versions in {r['sim_hours']:.2f} simulated "
            f"hours, {throughput(r):.0f} updates/h{examples}; top-1 start "
            f"{100 * t[0]['accuracy']:.2f}%, final {100 * t[-1]['accuracy']:.2f}%, "
            f"last-quarter floor {100 * plateau(t, 'accuracy', False):.2f}%, best "
            f"{100 * max(p['accuracy'] for p in t):.2f}%, last-quarter spread (std) "
            f"{100 * figures['tail_spread']:.2f} points"
        )
    print(
        "target (held: from that evaluation on, every one is at or past it) | sync | async "
        "| async sooner | (first touch: sync, async)"
    )
    rows = [
        (f"top-1 {100 * row['target']:.2f}% ({row['stage']:.0%} of the way)", row)
        for row in result["accuracy"]
    ]
    rows.append((f"held-out loss {result['mean_loss']['target']:.3f}", result["mean_loss"]))
    for label, row in rows:
        print(
            f"{label} | {_hours(row['sync_hours'])} | {_hours(row['async_hours'])} | "
            f"{_ratio(row['ratio'])} | ({_hours(row['sync_first_hours'])}, "
            f"{_hours(row['async_first_hours'])})"
        )
    ratio = result["accuracy"][-1]["ratio"]
    through = result["throughput_ratio"]
    per_update = f"{ratio / through:.2f}" if ratio else "-"
    print(
        f"update throughput: async {through:.2f}x sync's; progress per update at the "
        f"top-1 target: async {per_update} of sync's (ratio = throughput x progress)"
    )


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
    with tempfile.TemporaryDirectory() as tmp:
        default, float32 = (
            _run(
                simulation_config(fleet, fleet.sync_task(), versions, 24 * 14, codec=codec),
                Path(tmp) / codec,
            )
            for codec in ("default", "float32")
        )
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


def _read_run(out: Path) -> dict:
    """A finished run's report.json (what `compare_sync_async` needs from it)."""
    path = out / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"no finished run in {out} (no report.json): run without --reuse")
    return json.loads(path.read_text())


def check_same_fleet(fleet: Fleet, report: dict, task: dict, where: Path) -> None:
    """A stored run must be of `fleet` (else the table would compare, or label, another
    fleet's run): its config equal to this fleet's but for the run's length."""
    wanted = json.loads(json.dumps(simulation_config(fleet, task, 1, 1.0).to_json()))
    differ = sorted(
        k
        for k in wanted.keys() | report["config"].keys()
        if k not in ("max_versions", "hours") and wanted.get(k) != report["config"].get(k)
    )
    if differ:
        raise ValueError(
            f"the run in {where} was made with other settings ({', '.join(differ)}): give the "
            "options it was run with (e.g. --pretrain, --quick), or run both sides again"
        )


def reuse_sync_async(fleet: Fleet, out: Path, target: float | None = None) -> dict:
    """The comparison from the two runs already in `out` (sync/, async/), not re-run."""
    sync, fedbuff = _read_run(out / "sync"), _read_run(out / "async")
    check_same_fleet(fleet, sync, fleet.sync_task(), out / "sync")
    check_same_fleet(fleet, fedbuff, fleet.async_task(), out / "async")
    return _compare(fleet, sync, fedbuff, out, target)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=None, help="sync rounds (default 40)")
    parser.add_argument("--part", choices=("sync_async", "codec", "all"), default="all")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"keyboard_cifg_tiny, 2,000 words, 300 devices, {QUICK_VERSIONS} rounds "
        "(make bench); explicit --model/--devices/--versions still win",
    )
    parser.add_argument("--model", default=None, help="default keyboard_cifg")
    parser.add_argument("--vocabulary-size", type=int, default=None, help="default 10000")
    parser.add_argument("--devices", type=int, default=None, help="default 600")
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="top-1 target (default: the lower of the two runs' last-quarter floors)",
    )
    parser.add_argument("--speed-sigma", type=float, default=1.0)
    parser.add_argument("--goal", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=39)
    parser.add_argument("--buffer-size", type=int, default=10)
    parser.add_argument("--max-staleness", type=int, default=20)
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="both runs start from the model pre-trained on public roles",
    )
    parser.add_argument("--backend", choices=("local", "processes"), default="local")
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the runs (and a cached pre-trained start) here"
    )
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--reuse", action="store_true", help="print the table from the runs in --out, not re-run"
    )
    again.add_argument(
        "--rerun-async",
        action="store_true",
        help="run only the async side again, against the sync run in --out",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    if (args.reuse or args.rerun_async) and args.out is None:
        parser.error("--reuse and --rerun-async read the runs in --out: give --out")
    base = Fleet(**QUICK) if args.quick else Fleet()
    chosen = {
        "model": args.model,
        "vocabulary_size": args.vocabulary_size,
        "devices": args.devices,
    }
    fleet = replace(
        base,
        **{k: v for k, v in chosen.items() if v is not None},
        speed_sigma=args.speed_sigma,
        goal=args.goal,
        concurrency=args.concurrency,
        buffer_size=args.buffer_size,
        max_staleness=args.max_staleness,
        eval_examples=args.eval_examples,
        seed=args.seed,
        pretrain=args.pretrain,
        backend=args.backend,
    )
    versions = args.versions or (QUICK_VERSIONS if args.quick else 40)
    out = {}
    if args.part in ("sync_async", "all"):
        if args.reuse:
            out["sync_async"] = reuse_sync_async(fleet, args.out, args.target)
        elif args.rerun_async:
            out["sync_async"] = rerun_async(fleet, args.out, args.target)
        else:
            out["sync_async"] = compare_sync_async(fleet, versions, args.target, out=args.out)
    if args.part in ("codec", "all"):
        out["codec"] = compare_codecs(fleet, versions)
    if args.json:
        args.json.write_text(json.dumps(out.get("sync_async", {}), indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
