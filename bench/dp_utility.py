"""Utility vs privacy on the Shakespeare keyboard task: DP-FedAvg (central DP) at a few
noise multipliers against the same fleet without DP (keyboard_cifg_tiny, in-process).

    python -m bench.dp_utility [--versions 20]
"""

from __future__ import annotations

import argparse


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--devices", type=int, default=600)
    args = parser.parse_args(argv)
    from .keyboard_fleet import keyboard_fleet, run_fleet

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
        config = keyboard_fleet(args.devices, args.versions, task={"dp": dp}, seed=2)
        report = run_fleet(config)
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
