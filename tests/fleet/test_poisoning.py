"""Model poisoning in the simulator: 10% of devices send their delta sign-flipped and
scaled 10x. Plain FedAvg is wrecked; with a coordinate-wise trimmed mean, accuracy stays
within 2 points of the clean run on the same fleet and seed (the issue's bar)."""

from __future__ import annotations

from fleet.config import SimulationConfig
from fleet.run import run

SYNC = {
    "goal": 20,
    "overselect": 1.3,
    "selection_timeout_s": 600,
    "report_deadline_s": 900,
    "min_fraction": 0.7,
}
ATTACK = {"fraction": 0.1, "kind": "sign_flip", "scale": 10.0}


def _final_accuracy(tmp_path, name, aggregation: dict, attackers) -> float:
    task = {"mode": "sync", "sync": SYNC, "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0}}
    config = SimulationConfig(
        model="keyboard_cifg_tiny",
        devices=200,
        vocabulary_size=500,
        task=task | aggregation,
        transport="inprocess",
        hours=96,
        max_versions=6,
        eval_every=6,
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
