"""Our side of the comparison: the fleet simulator (fleet/simulator.py) running FedAvg
with real edge_sdk clients against the real aggregator, on the same split as Flower's.

Set up to be the same algorithm as Flower's FedAvg: sync rounds of exactly
`clients_per_round` reports (no over-selection, no dropouts, every device always
eligible), dense float32 updates (no compression, no clipping), weights by example
count, server learning rate 1. Local training runs inline, one device at a time.

The simulated server's store (SQLite and model files, durable: fsync on every commit)
lives in `--state-dir`, by default on tmpfs (/dev/shm) as Flower's simulation keeps its
state in memory; the files' size there is reported and counted as memory by the driver.

    python -m bench.peers.ours_side --split DIR --bundle DIR --out FILE [...]

Writes FILE (JSON: the time stamps bench/peers/accounting.py reads) and FILE's sibling
"-final.npz" (the final parameters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.evaluator import Evaluator
from fleet import simulator
from fleet.config import ProfileSettings, SimulationConfig

from .split import Split, add_task_arguments, read_split


class TimedTraining:
    """Wraps the fleet's training runner; records each training's wall-clock span (the
    inline runner sets the parameters, trains and computes the delta without yielding
    to the event loop, so the span is that device's own work)."""

    def __init__(self, inner, log: list[dict]):
        self.inner, self.log = inner, log

    async def train(self, params, examples, plan, check):
        start = time.time()
        result, delta = await self.inner.train(params, examples, plan, check)
        self.log.append({"start": start, "end": time.time(), "examples": result.examples})
        return result, delta


class TimedScorer:
    """The simulator's scorer (Evaluator over the fixed held-out sample), timed."""

    def __init__(self, bundle: Bundle, log: list[dict]):
        self.evaluator, self.log = Evaluator(bundle), log

    def score(self, parameters, examples) -> dict:
        start = time.time()
        metrics = self.evaluator.evaluate(parameters, examples)
        self.log.append({"start": start, "end": time.time(), "accuracy": metrics["accuracy"]})
        return metrics


def fedavg_config(bundle_dir: Path, clients: int, args) -> SimulationConfig:
    """The simulator's settings for plain FedAvg (module docstring)."""
    always_on = ProfileSettings(
        window_length_h=(24.0, 24.0),
        speed_sigma=0.0,
        drop_during_training=0.0,
        drop_during_upload=0.0,
    )
    return SimulationConfig(
        model=str(bundle_dir),
        devices=clients,
        transport=args.transport,
        codec="float32",
        hours=24.0 * args.rounds,
        max_versions=args.rounds,
        eval_every=1,
        seed=args.seed,
        profiles=always_on,
        task={
            "mode": "sync",
            "server_optimizer": "fedavg",
            "server_lr": 1.0,
            "max_update_norm": None,
            "sync": {
                "goal": args.clients_per_round,
                "overselect": 1.0,
                "min_fraction": 1.0,
                "selection_timeout_s": 3600,
                "report_deadline_s": 3600,
            },
            "plan": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
        },
    )


def device_examples(split: Split) -> list[list[dict]]:
    """Each device's training examples as the SDK's example dicts (x float32 [1, 28, 28],
    targets int64)."""
    out = []
    for i in range(split.clients):
        x, y = split.client(i)
        out.append([{"x": np.array(x[j]), "targets": np.int64(y[j])} for j in range(len(y))])
    return out


def run(args) -> dict:
    record: dict = {"side": "ours", "evaluations": [], "trainings": [], "started": time.time()}
    split = read_split(Path(args.split))
    bundle = Bundle.load(args.bundle)
    config = fedavg_config(Path(args.bundle), split.clients, args)
    test = [{"x": np.array(x), "targets": np.int64(y)} for x, y in zip(split.test_x, split.test_y)]
    make_training = simulator.make_training
    simulator.make_training = lambda *a: TimedTraining(make_training(*a), record["trainings"])
    scores: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(dir=args.state_dir, prefix="edge-fl-peers-") as tmp:
            report = asyncio.run(
                simulator.simulate(
                    config,
                    bundle,
                    device_examples(split),
                    test,
                    Path(tmp),
                    show_progress=False,
                    scorer=TimedScorer(bundle, scores),
                )
            )
            record["state_mib"] = (
                sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**20
            )
    finally:
        simulator.make_training = make_training
    record["state_on_tmpfs"] = _on_tmpfs(Path(args.state_dir or tempfile.gettempdir()))
    # the timeline holds one entry per scoring, in order: its version is the round
    record["evaluations"] = [
        s | {"round": t["version"]} for s, t in zip(scores, report["timeline"])
    ]
    record["funnel"] = report["funnel"]
    record["finished"] = time.time()
    out = Path(args.out)
    np.savez(out.with_name(out.stem + "-final.npz"), **report["final_parameters"])
    out.write_text(json.dumps(record, default=float))
    return record


def _on_tmpfs(path: Path) -> bool:
    """Whether `path` is on a memory-backed file system (its files are memory)."""
    best, fstype = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, kind = line.split()[:3]
        resolved = str(path.resolve())
        if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
            best
        ):
            best, fstype = mount, kind
    return fstype in ("tmpfs", "ramfs")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--out", required=True)
    add_task_arguments(parser)
    parser.add_argument("--transport", default="inprocess", choices=("inprocess", "http"))
    parser.add_argument(
        "--state-dir",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="where the simulated server keeps its store (default: tmpfs)",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
