"""A small keyboard_cifg_tiny fleet for tests: sync rounds, in process, one simulated day."""

from __future__ import annotations

from fleet.config import SimulationConfig


def sync_task(goal: int) -> dict:
    return {
        "mode": "sync",
        "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
        "sync": {
            "goal": goal,
            "overselect": 1.3,
            "selection_timeout_s": 600,
            "report_deadline_s": 900,
            "min_fraction": 0.7,
        },
    }


def small_fleet(devices: int, goal: int, versions: int, **overrides) -> SimulationConfig:
    settings = dict(
        model="keyboard_cifg_tiny",
        devices=devices,
        vocabulary_size=500,
        task=sync_task(goal),
        transport="inprocess",
        hours=24,
        max_versions=versions,
        eval_every=versions,
        eval_examples=150,
        seed=1,
    )
    return SimulationConfig(**(settings | overrides))
