"""The benchmarks' fleet: keyboard_cifg_tiny over a 2,000-word vocabulary on the
Shakespeare roles, in process, in synchronous rounds of 30 devices doing one local
epoch each, evaluated once at the end; each benchmark changes what it measures."""

from __future__ import annotations

import tempfile
from pathlib import Path

SYNC = {
    "goal": 30,
    "overselect": 1.3,
    "selection_timeout_s": 600,
    "report_deadline_s": 900,
    "min_fraction": 0.7,
}
PLAN = {"epochs": 1, "batch_size": 16, "lr": 1.0}


def keyboard_fleet(devices: int, versions: int, *, sync: dict | None = None, task=None, **fields):
    """The fleet's SimulationConfig for `versions` model versions of `devices` devices.
    `sync` changes the round settings (e.g. {"goal": 100}), `task` adds task settings
    (e.g. {"dp": ...}) and `fields` set other config fields (seed, hours, ...)."""
    from fleet.config import SimulationConfig

    return SimulationConfig(
        **{
            "model": "keyboard_cifg_tiny",
            "devices": devices,
            "vocabulary_size": 2000,
            "transport": "inprocess",
            "hours": 96,
            "max_versions": versions,
            "eval_every": versions,
            "eval_examples": 1000,
            "task": {"mode": "sync", "sync": SYNC | (sync or {}), "plan": PLAN} | (task or {}),
        }
        | fields
    )


def run_fleet(config) -> dict:
    """The simulator's report of `config`, run in a temporary directory (no baseline)."""
    from fleet.run import run

    with tempfile.TemporaryDirectory() as tmp:
        return run(config, Path(tmp), centralized_epochs=0, show_progress=False)
