"""Where the simulator's local training runs: a pool of worker processes or Ray actors
(other processes), while the clock runs on; a pooled run is the inline run, bit for bit."""

from __future__ import annotations

import os

import pytest

from fleet.config import SimulationConfig
from fleet.run import run

from .small_fleet import small_fleet


def curve(report):  # every evaluation but its real-time stamp
    return [{k: v for k, v in point.items() if k != "wall_s"} for point in report["timeline"]]


def test_a_fleet_on_worker_processes_matches_the_inline_run_exactly(tmp_path):
    local = run(
        small_fleet(60, goal=6, versions=3),
        tmp_path / "local",
        centralized_epochs=0,
        show_progress=False,
    )
    pooled = run(
        small_fleet(60, goal=6, versions=3, backend="processes", workers=2),
        tmp_path / "pooled",
        centralized_epochs=0,
        show_progress=False,
    )
    assert pooled["training"]["backend"] == "processes"
    assert pooled["training"]["remote_trainings"] >= pooled["funnel"]["accepted"] >= 3 * 6 * 0.7
    assert pooled["versions"] == local["versions"] == 3
    assert pooled["funnel"] == local["funnel"] and pooled["client"] == local["client"]
    assert pooled["sim_hours"] == local["sim_hours"]
    assert curve(pooled) == curve(local)  # the same losses to the last bit
    assert pooled["final"]["mean_loss"] < pooled["timeline"][0]["mean_loss"]


def test_a_fleet_trains_on_ray_actors(tmp_path):
    ray = pytest.importorskip("ray")
    config = small_fleet(60, goal=6, versions=3, backend="ray", ray={"actors": 2})
    report = run(config, tmp_path, centralized_epochs=0, show_progress=False)
    assert report["versions"] == 3
    assert report["training"]["backend"] == "ray"
    # every device that reported trained remotely (dropouts mid-training trained too)
    assert report["training"]["remote_trainings"] >= report["funnel"]["accepted"] >= 3 * 6 * 0.7
    assert report["final"]["mean_loss"] < report["timeline"][0]["mean_loss"]
    assert not ray.is_initialized()  # the backend stopped the Ray instance it started


def _processes(bundle):
    from fleet.process_backend import ProcessTraining

    return ProcessTraining(bundle, workers=2)


def _ray(bundle):
    pytest.importorskip("ray")
    from fleet.ray_backend import RayTraining

    return RayTraining(bundle, actors=2)


@pytest.mark.parametrize("start", [_processes, _ray], ids=["processes", "ray"])
def test_training_workers_are_separate_processes(tmp_path, start):
    from edge_sdk.bundle import Bundle
    from model_zoo.zoo import build_bundle

    training = start(Bundle.load(build_bundle("logreg", tmp_path / "b")))
    try:
        pids = training.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        training.close()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"backend": "threads"}, "backend: must be"),
        ({"backend": "processes", "workers": -1}, "workers: must be"),
    ],
)
def test_bad_backend_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**settings)
