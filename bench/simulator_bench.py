"""Simulator throughput at 10,000 devices: device-rounds per second of real time.

Devices hold sub-splits of the 1,419 Shakespeare users' data (more devices than users);
keyboard_cifg_tiny, in-process transport, sync rounds of 100.

    python -m bench.simulator_bench [--devices 10000] [--versions 5]
    python -m bench.simulator_bench --part stores [--devices 400]  # RSS: memory vs disk stores
    python -m bench.simulator_bench --part scale [--versions 3]    # 10k, 100k, 1M devices

`stores` runs the full keyboard_cifg (1.42M parameters, a 5.7 MB residual per device that
has trained) once with in-memory and once with on-disk device stores, each in its own
process, and prints each one's peak RSS.

`scale` runs a lazy population (fleet/lazy_fleet.py) of 10,000, 100,000 and 1,000,000
devices, 1,000 per round (sync, overselect 1.3), keyboard_cifg_tiny, in process, each
population in its own process; it prints accepted device-rounds per second of simulation
and the process's peak RSS (VmHWM) and peak PSS (sampled every 0.2 s, the process and
any children). `--ray` adds the 1M run on a two-node Ray cluster started with `ray start`
on this machine (training on one actor per node), its PSS summed over the driver and
every process of both nodes.
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
    parser.add_argument("--versions", type=int, help="model versions: 5, or 3 (--part scale)")
    parser.add_argument("--part", choices=("throughput", "stores", "scale"), default="throughput")
    parser.add_argument("--stores", action="store_true", help="the same as --part stores")
    parser.add_argument(
        "--populations",
        default="10000,100000,1000000",
        help="--part scale: the population sizes, comma-separated",
    )
    parser.add_argument(
        "--state-dir",
        help="--part scale: where the aggregator's state "
        "goes (default /dev/shm; '' for the system's temporary directory)",
    )
    parser.add_argument(
        "--ray",
        action="store_true",
        help="--part scale: also the largest population on a 2-node Ray cluster",
    )
    args = parser.parse_args(argv)
    if args.stores or args.part == "stores":
        return store_memory(args.devices or 400, args.versions or 5)
    if args.part == "scale":
        return scale(
            [int(n) for n in args.populations.split(",")],
            args.versions or 3,
            args.ray,
            SCALE_DIR if args.state_dir is None else args.state_dir,
        )
    args.versions = args.versions or 5
    args.devices = args.devices or 10_000
    from .keyboard_fleet import keyboard_fleet, run_fleet

    config = keyboard_fleet(
        args.devices, args.versions, sync={"goal": 100}, hours=48, eval_examples=200
    )
    start = time.perf_counter()
    report = run_fleet(config)
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


SCALE_GOAL = 1000
# the aggregator commits every check-in and upload durably (SQLite, synchronous=FULL): on
# a disk that is an fsync per event, which would measure the disk, not the simulator
SCALE_DIR = "/dev/shm" if Path("/dev/shm").is_dir() else ""


def scale_config(population: int, versions: int, **overrides):
    """The million-device config (fleet/lazy_fleet.py): rounds of 1,000 devices."""
    from fleet.config import SimulationConfig

    return SimulationConfig(
        **{
            "model": "keyboard_cifg_tiny",
            "devices": population,
            "vocabulary_size": 2000,
            "population": "lazy",
            "transport": "inprocess",
            "hours": 48,
            "max_versions": versions,
            "eval_every": versions,
            "eval_examples": 200,
            "task": {
                "mode": "sync",
                "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
                "sync": {
                    "goal": SCALE_GOAL,
                    "overselect": 1.3,
                    "selection_timeout_s": 600,
                    "report_deadline_s": 900,
                    "min_fraction": 0.7,
                },
            },
        }
        | overrides
    )


_SCALE_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from bench.memory import peak_rss_mb
from bench.simulator_bench import scale_config
from fleet.run import run
config = scale_config(int(sys.argv[1]), int(sys.argv[2]), **json.loads(sys.argv[3]))
start = time.perf_counter()
with tempfile.TemporaryDirectory(dir=sys.argv[4] or None) as tmp:
    report = run(config, Path(tmp), centralized_epochs=0, show_progress=False)
print(json.dumps({"population": config.devices, "backend": config.backend,
                  "peak_rss_mb": peak_rss_mb(), "total_s": time.perf_counter() - start,
                  "seconds": report["wall_seconds"], "cpu_seconds": report["cpu_seconds"],
                  "versions": report["versions"],
                  "sim_hours": report["sim_hours"], "funnel": report["funnel"],
                  "lazy": report["population"], "accuracy": report["final"]["accuracy"]}))
"""


def pss_mb(pids) -> float:
    """Proportional set size summed over processes (shared pages split among sharers)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return out


def run_sampled(command: list[str], env: dict | None, extra_pids=list) -> tuple[dict, float]:
    """Run a child printing one JSON line last; returns it and the peak PSS of the child,
    its descendants and `extra_pids()`, sampled every 0.2 s."""
    import threading

    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            peak[0] = max(peak[0], pss_mb(descendants(child.pid) + list(extra_pids())))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = child.communicate()
    done.set()
    sampler.join()
    if child.returncode:
        raise RuntimeError(f"the scale run failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak[0]


def scale(
    populations: list[int], versions: int, with_ray: bool = False, where: str = SCALE_DIR
) -> list[dict]:
    """`where`: the directory of the runs' aggregator state ("" for the system's temp)."""
    rows = []
    for population in populations:
        row, pss = run_sampled(
            [sys.executable, "-c", _SCALE_CHILD, str(population), str(versions), "{}", where], None
        )
        rows.append(row | {"peak_pss_mb": pss})
    if with_ray:
        from fleet.ray_cluster import local_ray_cluster

        with local_ray_cluster() as cluster:
            overrides = {"backend": "ray", "ray": {"address": cluster.address, "actors": 2}}
            row, pss = run_sampled(
                [
                    sys.executable,
                    "-c",
                    _SCALE_CHILD,
                    str(max(populations)),
                    str(versions),
                    json.dumps(overrides),
                    where,
                ],
                cluster.env,
                cluster.pids,
            )
        rows.append(row | {"peak_pss_mb": pss})
    print(
        f"\n== Simulator at scale: lazy populations, {SCALE_GOAL} devices per round "
        f"(sync, overselect 1.3), {versions} rounds, keyboard_cifg_tiny, in process, "
        f"aggregator state in {where or tempfile.gettempdir()} =="
    )
    print(
        f"{'population':>11s} {'backend':>8s} {'device-rounds/s':>16s} {'check-ins':>10s} "
        f"{'enrolled':>9s} {'peak live':>9s} {'peak RSS':>9s} {'peak PSS':>9s} {'run s':>6s} "
        f"{'CPU ms/device-round':>20s}"
    )
    for r in rows:
        accepted = r["funnel"]["accepted"]
        print(
            f"{r['population']:>11,d} {r['backend']:>8s} {accepted / r['seconds']:>16.1f} "
            f"{r['funnel']['checked_in']:>10,d} {r['lazy']['enrolled']:>9,d} "
            f"{r['lazy']['peak_busy']:>9,d} {r['peak_rss_mb']:>6.0f} MB {r['peak_pss_mb']:>6.0f} MB "
            f"{r['seconds']:>6.0f} {1000 * r['cpu_seconds'] / accepted:>20.1f}"
        )
    print(
        "device-rounds/s: accepted updates per second of simulation (after set-up); peak "
        "live: devices built at once; PSS of the ray row: driver and both nodes; CPU: the "
        "driver process's, per accepted update (on a shared machine, steadier than the rate)"
    )
    return rows


if __name__ == "__main__":
    main()
