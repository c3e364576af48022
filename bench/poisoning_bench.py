"""Model poisoning: 10% of devices send sign-flipped, scaled updates. Final accuracy of
plain FedAvg and of robust aggregation, against the clean run (same fleet, same seed).

    python -m bench.poisoning_bench [--versions 15]
"""

from __future__ import annotations

import argparse


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=15)
    parser.add_argument("--devices", type=int, default=400)
    args = parser.parse_args(argv)
    from .keyboard_fleet import keyboard_fleet, run_fleet

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
        config = keyboard_fleet(
            args.devices, args.versions, task=aggregation, seed=3, attackers=attackers
        )
        report = run_fleet(config)
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
