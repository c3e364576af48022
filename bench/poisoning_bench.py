"""Model poisoning: 10% of devices send sign-flipped, scaled updates. Final accuracy of
plain FedAvg and of robust aggregation, against the clean run (same fleet, same seed).

    python -m bench.poisoning_bench [--versions 15]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=15)
    parser.add_argument("--devices", type=int, default=400)
    args = parser.parse_args(argv)
    from fleet.config import SimulationConfig
    from fleet.run import run

    sync = {
        "goal": 30,
        "overselect": 1.3,
        "selection_timeout_s": 600,
        "report_deadline_s": 900,
        "min_fraction": 0.7,
    }
    attack = {"fraction": 0.1, "kind": "sign_flip", "scale": 10.0}
    runs = {
        "clean, FedAvg": ({}, None),
        "poisoned, FedAvg": ({}, attack),
        "poisoned, trimmed mean 20%": (
            {"robust": {"kind": "trimmed_mean", "trim": 0.2, "buffer": 30}},
            attack,
        ),
        "poisoned, median": ({"robust": {"kind": "median", "buffer": 30}}, attack),
    }
    results = {}
    for name, (aggregation, attackers) in runs.items():
        task = {
            "mode": "sync",
            "sync": sync,
            "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
        } | aggregation
        config = SimulationConfig(
            model="keyboard_cifg_tiny",
            devices=args.devices,
            vocabulary_size=2000,
            task=task,
            transport="inprocess",
            hours=96,
            max_versions=args.versions,
            eval_every=args.versions,
            eval_examples=1000,
            seed=3,
            attackers=attackers,
        )
        with tempfile.TemporaryDirectory() as tmp:
            report = run(config, Path(tmp), centralized_epochs=0, show_progress=False)
        results[name] = report["final"]
    print(
        f"\n== Poisoning: 10% of {args.devices} devices send -10x their delta; "
        f"{args.versions} rounds of 30, keyboard_cifg_tiny =="
    )
    clean = results["clean, FedAvg"]["accuracy"]
    for name, r in results.items():
        print(
            f"{name:28s} top-1 {100 * r['accuracy']:.2f}%  top-3 {100 * r['top3_accuracy']:.2f}%  "
            f"(vs clean {100 * (r['accuracy'] - clean):+.2f} points)"
        )
    return results


if __name__ == "__main__":
    main()
