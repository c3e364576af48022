"""Utility vs privacy on the Shakespeare keyboard task: DP-FedAvg (central DP) at a few
noise multipliers against the same fleet without DP (keyboard_cifg_tiny, in-process).

    python -m bench.dp_utility [--versions 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--devices", type=int, default=600)
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
    rows = []
    for z in (None, 0.3, 1.0):
        dp = (
            None
            if z is None
            else {
                "clip_norm": 0.5,
                "noise_multiplier": z,
                "population": args.devices,
                "target_delta": 1e-4,
            }
        )
        task = {
            "mode": "sync",
            "sync": sync,
            "dp": dp,
            "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
        }
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
            seed=2,
        )
        with tempfile.TemporaryDirectory() as tmp:
            report = run(config, Path(tmp), centralized_epochs=0, show_progress=False)
        rows.append(
            {
                "noise_multiplier": z,
                "epsilon": report["privacy"].get("epsilon"),
                "accuracy": report["final"]["accuracy"],
                "top3": report["final"]["top3_accuracy"],
                "loss": report["final"]["mean_loss"],
            }
        )
    print(
        f"\n== DP-FedAvg utility vs epsilon ({args.versions} rounds of 30 of {args.devices} "
        "devices, clip 0.5, delta 1e-4; q = 30 / population) =="
    )
    for r in rows:
        eps = "no DP" if r["epsilon"] is None else f"epsilon {r['epsilon']:.2f}"
        z = "-" if r["noise_multiplier"] is None else r["noise_multiplier"]
        print(
            f"z = {z!s:4s} {eps:16s} top-1 {100 * r['accuracy']:.2f}%  top-3 "
            f"{100 * r['top3']:.2f}%  held-out loss {r['loss']:.3f}"
        )
    return rows


if __name__ == "__main__":
    main()
