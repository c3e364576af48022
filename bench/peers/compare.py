"""Side by side with Flower: the same FedAvg task run by our fleet simulator and by
Flower's simulation engine; per-round wall time, framework overhead per client-round,
peak memory (PSS of every process), start-up time and final accuracy.

    make bench-peers        # installs Flower into build/peers-venv first
    python -m bench.peers.compare [--rounds 5] [--clients-per-round 20] [--sides ours,flower]

The driver (this module, the project's venv) writes the split once (bench/peers/split.py)
from the simulator's own split of the data, with the compiled bundle's initial
parameters; then runs each side as its own process, one after the other, sampling the
PSS of that process and everything below it; then scores both final models with the same
evaluator on every held-out example. docs/benchmarks-peers.md explains each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import accounting
from .process_tree import PeakSampler, become_subreaper, end_descendants
from .split import add_task_arguments, read_split, write_split

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TASK_KEYS = ("model", "clients", "eval_examples", "seed")


def build_split(args, work: Path) -> Path:
    """The split (and our bundle) for the task, written once per task settings."""
    split_dir, bundle_dir = work / "split", work / "bundle"
    task = {k: getattr(args, k) for k in TASK_KEYS}
    meta = split_dir / "meta.json"
    if (
        meta.is_file()
        and json.loads(meta.read_text()).get("task") == task
        and (bundle_dir / "manifest.json").is_file()
    ):
        return split_dir
    from fleet.config import SimulationConfig
    from fleet.data import assign_devices, prepare

    config = SimulationConfig(
        model=args.model,
        devices=args.clients,
        seed=args.seed,
        eval_examples=args.eval_examples,
        data={"kind": "fashion_mnist", "options": {"partition": {"users": args.clients}}},
    )
    data = prepare(config, bundle_dir)
    clients = [stack(train) for train, _ in assign_devices(data, args.clients)]
    write_split(
        split_dir,
        clients,
        stack(data.test),
        stack(data.test_all),
        data.bundle.initial_parameters(),
        {"task": task, "data": data.name, "users_from": data.split_note},
    )
    return split_dir


def stack(examples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Example dicts {"x", "targets"} -> (x [n, ...] float32, y [n] int64)."""
    return (
        np.stack([e["x"] for e in examples]).astype(np.float32),
        np.array([e["targets"] for e in examples], np.int64),
    )


def task_arguments(args) -> list[str]:
    return [
        "--rounds",
        str(args.rounds),
        "--clients-per-round",
        str(args.clients_per_round),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--seed",
        str(args.seed),
    ]


def side_command(side: str, args, split_dir: Path, out: Path) -> tuple[list[str], dict]:
    env = dict(os.environ)
    if side == "ours":
        cmd = [
            sys.executable,
            "-m",
            "bench.peers.ours_side",
            "--bundle",
            str(args.work / "bundle"),
            "--transport",
            args.transport,
        ]
        if args.state_dir:
            cmd += ["--state-dir", args.state_dir]
        env["PYTHONPATH"] = str(ROOT)
    else:
        cmd = [args.flower_python, str(HERE / "flower_side.py"), "--model", args.model]
        # `split` from here, the model's module from the project (it needs torch only)
        env["PYTHONPATH"] = f"{HERE}{os.pathsep}{ROOT}"
    return cmd + ["--split", str(split_dir), "--out", str(out)] + task_arguments(args), env


def run_side(side: str, args, split_dir: Path) -> dict:
    """Run one side in its own process; its record with the launch time and peak PSS."""
    out = args.work / f"{side}.json"
    out.unlink(missing_ok=True)
    cmd, env = side_command(side, args, split_dir, out)
    log = args.work / f"{side}.log"
    print(f"running {side} ({' '.join(cmd[:3])} ...); log: {log}", flush=True)
    load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    try:
        with open(log, "w") as f, PeakSampler(os.getpid(), args.sample_interval) as pss:
            launched = time.time()
            # a side that hangs (Ray's node can time out starting on a busy machine and
            # leave Flower waiting for nodes) is killed after --timeout
            code = subprocess.run(
                cmd,
                env=env,
                cwd=ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=args.timeout,
            ).returncode
            ended = time.time()
            pss.sample()
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{side} side ran over {args.timeout} s; see {log}") from None
    finally:
        leftovers = end_descendants()
    if code != 0:
        raise RuntimeError(f"{side} side exited with {code}; see {log}")
    record = json.loads(out.read_text())
    # files on tmpfs are memory that no process maps (our simulated server's store)
    in_files = record.get("state_mib", 0.0) if record.get("state_on_tmpfs") else 0.0
    record |= {
        "launched": launched,
        "ended": ended,
        "peak_pss_mib": pss.peak_mib + in_files,
        "tmpfs_mib": in_files,
        "peak_processes": pss.peak_processes,
        "pss_samples": pss.samples,
        "peak_parts": sorted(pss.peak_parts, key=lambda p: -p[2]),
        "leftover_processes": len(leftovers),
        "load_average": (load + os.getloadavg()[0]) / 2,
    }
    return record


def final_accuracy(args, side: str, split_dir: Path) -> dict:
    """The side's final parameters scored by our evaluator on every held-out example."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.evaluator import Evaluator

    split = read_split(split_dir)
    with np.load(args.work / f"{side}-final.npz") as f:
        params = {k: f[k].astype(np.float32) for k in f.files}
    examples = ({"x": x, "targets": np.int64(y)} for x, y in zip(split.heldout_x, split.heldout_y))
    metrics = Evaluator(Bundle.load(args.work / "bundle")).evaluate(params, examples)
    return {"accuracy": metrics["accuracy"], "examples": int(metrics["count"])}


def summarize(record: dict) -> dict:
    figures = accounting.rounds(record["evaluations"], record["trainings"])
    return {
        "rounds": [f.to_json() for f in figures],
        "overhead_per_client_ms": accounting.overhead_per_client_ms(figures),
        "startup_s": accounting.startup_s(
            record["launched"], record["evaluations"], record["trainings"]
        ),
        "wall_s": record["ended"] - record["launched"],
        "training_s": sum(f.training_s for f in figures),
        "peak_pss_mib": record["peak_pss_mib"],
        "peak_processes": record["peak_processes"],
        "load_average": record["load_average"],
        "peak_by_process_mib": [
            (name, round(kib / 1024, 1)) for _, name, kib in record["peak_parts"]
        ],
    }


def print_table(results: dict, args) -> None:
    sides = list(results)
    print(
        f"\n== Side by side with Flower: FedAvg, {args.model} on Fashion-MNIST, "
        f"{args.clients} clients (IID), {args.clients_per_round}/round, {args.epochs} local "
        f"epoch(s) of batch {args.batch_size} at lr {args.lr}, {args.rounds} rounds =="
    )
    print(
        "per round: wall time (s), clients' training time (s), framework overhead per "
        "client (ms), accuracy on the held-out sample (%)"
    )
    print(
        "round  "
        + "  ".join(
            f"{s + ' wall':>11s} {s + ' train':>12s} {s + ' ms/client':>16s} {s + ' acc':>10s}"
            for s in sides
        )
    )
    for r in range(args.rounds):
        cells = []
        for s in sides:
            f = results[s]["rounds"][r]
            cells.append(
                f"{f['wall_s']:11.2f} {f['training_s']:12.2f} "
                f"{f['overhead_per_client_ms']:16.1f} {100 * f['accuracy']:10.1f}"
            )
        print(f"{r + 1:5d}  " + "  ".join(cells))
    rows = (
        ("framework overhead per client-round (ms)", "overhead_per_client_ms", "{:.1f}"),
        ("peak memory, PSS of all processes (MiB)", "peak_pss_mib", "{:.0f}"),
        ("processes at the peak", "peak_processes", "{:d}"),
        ("start-up (s)", "startup_s", "{:.1f}"),
        ("whole run, launch to exit (s)", "wall_s", "{:.1f}"),
        ("clients' training time (s)", "training_s", "{:.1f}"),
        ("final accuracy, all held-out examples (%)", "final_accuracy", "{:.2f}"),
        ("machine's load average (2 cores)", "load_average", "{:.1f}"),
    )
    print(f"\n{'':44s}" + "".join(f"{s:>12s}" for s in sides))
    for label, key, fmt in rows:
        print(f"{label:44s}" + "".join(f"{fmt.format(results[s][key]):>12s}" for s in sides))
    if set(sides) == {"ours", "flower"}:
        o, f = results["ours"], results["flower"]
        n = o["final_examples"]
        se = 100 * np.sqrt(
            sum(r[k] / 100 * (1 - r[k] / 100) for r in (o, f) for k in ["final_accuracy"]) / n
        )
        print(
            f"\nours / Flower: overhead {o['overhead_per_client_ms'] / f['overhead_per_client_ms']:.3f}x "
            f"(target <= 0.1), memory {o['peak_pss_mib'] / f['peak_pss_mib']:.2f}x (target "
            f"<= 0.5), start-up {o['startup_s'] / f['startup_s']:.2f}x; accuracy difference "
            f"{o['final_accuracy'] - f['final_accuracy']:+.2f} points (sampling error of the "
            f"difference on {n} examples: {se:.2f})"
        )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flower-python", default=str(ROOT / "build/peers-venv/bin/python"))
    parser.add_argument("--work", type=Path, default=ROOT / "build/peers")
    parser.add_argument("--sides", default="ours,flower")
    parser.add_argument(
        "--model", default="femnist_cnn_tiny", choices=("femnist_cnn_tiny", "femnist_cnn")
    )
    parser.add_argument("--clients", type=int, default=100)
    add_task_arguments(parser)
    parser.add_argument(
        "--eval-examples", type=int, default=1000, help="held-out sample scored after every round"
    )
    parser.add_argument(
        "--transport",
        default="inprocess",
        choices=("inprocess", "http"),
        help="our side's: in-process calls or HTTP on 127.0.0.1",
    )
    parser.add_argument("--state-dir", help="our simulated server's store (default: /dev/shm)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per side")
    parser.add_argument("--sample-interval", type=float, default=0.2)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    split_dir = build_split(args, args.work)
    results = {}
    for side in args.sides.split(","):
        record = run_side(side, args, split_dir)
        final = final_accuracy(args, side, split_dir)
        results[side] = summarize(record) | {
            "final_accuracy": 100 * final["accuracy"],
            "final_examples": final["examples"],
        }
    print_table(results, args)
    doc = {"task": {k: v for k, v in vars(args).items() if k not in ("work",)}, "results": results}
    (args.work / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    return doc


if __name__ == "__main__":
    main()
