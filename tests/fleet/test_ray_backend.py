"""The simulator's Ray backend on a local Ray instance: devices' training runs on Ray
actors (other processes) and the fleet still publishes versions that lower the loss."""
from __future__ import annotations

import os

import pytest

from fleet.run import run

from .small_fleet import small_fleet

ray = pytest.importorskip("ray")


def test_a_fleet_trains_on_ray_actors(tmp_path):
    config = small_fleet(60, goal=6, versions=3, backend="ray", ray={"actors": 2})
    report = run(config, tmp_path, centralized_epochs=0, show_progress=False)
    assert report["versions"] == 3
    assert report["training"]["backend"] == "ray"
    # every device that reported trained remotely (dropouts mid-training trained too)
    assert report["training"]["remote_trainings"] >= report["funnel"]["accepted"] >= 3 * 6 * 0.7
    assert report["final"]["mean_loss"] < report["timeline"][0]["mean_loss"]
    assert not ray.is_initialized()  # the backend stopped the Ray instance it started


def test_ray_actors_are_separate_processes(tmp_path):
    from edge_sdk.bundle import Bundle
    from fleet.ray_backend import RayTraining
    from model_zoo.zoo import build_bundle
    bundle = Bundle.load(build_bundle("logreg", tmp_path / "b"))
    training = RayTraining(bundle, actors=2)
    try:
        pids = training.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        training.close()
