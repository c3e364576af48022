"""Model poisoning in the simulator: 10% of devices send their delta sign-flipped and
scaled 10x. Plain FedAvg is wrecked; with a coordinate-wise trimmed mean, accuracy stays
within 2 points of the clean run on the same fleet and seed (the issue's bar)."""

from __future__ import annotations

from fleet.run import run

from .small_fleet import small_fleet, sync_task

ATTACK = {"fraction": 0.1, "kind": "sign_flip", "scale": 10.0}


def _final_accuracy(tmp_path, name, aggregation: dict, attackers) -> float:
    config = small_fleet(
        200,
        goal=20,
        versions=6,
        task=sync_task(goal=20) | aggregation,
        hours=96,
        eval_examples=600,
        seed=3,
        attackers=attackers,
    )
    report = run(config, tmp_path / name, centralized_epochs=0, show_progress=False)
    assert report["attackers"] == (20 if attackers else 0)
    return report["final"]["accuracy"]


def test_trimmed_mean_keeps_accuracy_within_2_points_of_the_clean_run(tmp_path):
    clean = _final_accuracy(tmp_path, "clean", {}, None)
    poisoned = _final_accuracy(tmp_path, "fedavg", {}, ATTACK)
    robust = _final_accuracy(
        tmp_path, "trimmed", {"robust": {"kind": "trimmed_mean", "trim": 0.2, "buffer": 20}}, ATTACK
    )
    assert poisoned < clean - 0.03  # the attack is real: FedAvg loses several points
    assert abs(robust - clean) <= 0.02, (clean, poisoned, robust)
