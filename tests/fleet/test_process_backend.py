"""The simulator's process backend: training runs on worker processes while the clock
runs on, and the run is the local backend's run, bit for bit."""
from __future__ import annotations

import os

import pytest

from fleet.config import SimulationConfig
from fleet.run import run

from .small_fleet import small_fleet


def test_a_fleet_on_worker_processes_matches_the_inline_run_exactly(tmp_path):
    local = run(small_fleet(60, goal=6, versions=3), tmp_path / "local",
                centralized_epochs=0, show_progress=False)
    pooled = run(small_fleet(60, goal=6, versions=3, backend="processes", workers=2),
                 tmp_path / "pooled", centralized_epochs=0, show_progress=False)
    assert pooled["training"]["backend"] == "processes"
    assert pooled["training"]["remote_trainings"] >= pooled["funnel"]["accepted"] >= 3 * 6 * 0.7
    assert pooled["versions"] == local["versions"] == 3
    assert pooled["funnel"] == local["funnel"] and pooled["client"] == local["client"]
    assert pooled["sim_hours"] == local["sim_hours"]
    def curve(report):  # every evaluation but its real-time stamp
        return [{k: v for k, v in point.items() if k != "wall_s"} for point in report["timeline"]]
    assert curve(pooled) == curve(local)  # the same losses to the last bit
    assert pooled["final"]["mean_loss"] < pooled["timeline"][0]["mean_loss"]


def test_workers_are_separate_processes(tmp_path):
    from edge_sdk.bundle import Bundle
    from fleet.process_backend import ProcessTraining
    from model_zoo.zoo import build_bundle
    bundle = Bundle.load(build_bundle("logreg", tmp_path / "b"))
    training = ProcessTraining(bundle, workers=2)
    try:
        pids = training.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        training.close()


@pytest.mark.parametrize("settings, message", [
    ({"backend": "threads"}, "backend must be"),
    ({"backend": "processes", "workers": -1}, "workers must be"),
])
def test_bad_backend_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**settings)
