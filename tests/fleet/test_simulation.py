"""A small fleet end to end: real clients, real aggregator, simulated time, report."""

from __future__ import annotations

import json

import pytest

from edge_sdk.client import RESIDUAL_KEY
from edge_sdk.example_store import ExampleStore
from fleet.baselines import NGramPredictor
from fleet.config import ProfileSettings, SimulationConfig
from fleet.devices import COLLECTION, TASK
from fleet.population import assign_data
from fleet.run import finish_baselines, run

from .small_fleet import small_fleet


@pytest.mark.parametrize("transport, mode", [("http", "sync"), ("inprocess", "async")])
def test_a_small_fleet_publishes_versions_and_reports(tmp_path, transport, mode):
    task = {
        "mode": mode,
        "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
        "sync": {
            "goal": 6,
            "overselect": 1.3,
            "selection_timeout_s": 600,
            "report_deadline_s": 900,
            "min_fraction": 0.7,
        },
        "async_": {"concurrency": 8, "buffer_size": 4, "max_staleness": 4},
    }
    config = SimulationConfig(
        model="keyboard_cifg_tiny",
        devices=80,
        vocabulary_size=500,
        task=task,
        transport=transport,
        hours=24,
        max_versions=4,
        eval_every=2,
        eval_examples=150,
        seed=1,
        profiles=ProfileSettings(drop_during_training=0.3),
    )
    report = run(config, tmp_path, centralized_epochs=0, show_progress=False)
    assert report["versions"] == 4
    assert [p["version"] for p in report["timeline"]] == [0, 2, 4]
    assert report["funnel"]["accepted"] >= 4 * (6 if mode == "sync" else 4) * 0.7
    assert report["client"]["dropped"]["vanished_training"] > 0
    assert report["client"]["bytes_up"] > 0 and report["client"]["bytes_down"] > 0
    assert report["final"]["mean_loss"] < report["timeline"][0]["mean_loss"]
    for name in ("report.json", "accuracy.png", "fleet.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert json.loads((tmp_path / "report.json").read_text())["devices"] == 80
    if transport == "http":  # once: baselines afterwards, from the run's committed state
        later = finish_baselines(config, tmp_path, centralized_epochs=0, show_progress=False)
        assert later["federated"]["version"] == 4
        assert later["federated"]["accuracy"] == pytest.approx(report["final"]["accuracy"])
        assert later["baselines"]["3-gram"] == report["baselines"]["3-gram"]
        assert json.loads((tmp_path / "baselines.json").read_text())["federated"]["version"] == 4


def test_baselines_need_a_run_to_finish(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the simulation first"):
        finish_baselines(SimulationConfig(), tmp_path, centralized_epochs=0)


def test_on_disk_device_stores_keep_each_devices_examples_and_residual(tmp_path):
    config = small_fleet(30, goal=5, versions=2, eval_examples=50, seed=2, device_stores="disk")
    report = run(config, tmp_path, centralized_epochs=0, show_progress=False)
    assert report["versions"] == 2
    files = sorted((tmp_path / "devices").glob("device-*.db"))
    assert len(files) == 30
    residuals = 0
    for f in files:
        store = ExampleStore(f)
        assert store.count(COLLECTION) > 0  # the device's own examples, on its own file
        residuals += store.get_state(RESIDUAL_KEY.format(task=TASK)) is not None
        store.close()
    assert residuals >= 2 * 5 * 0.7  # every accepted participation left its residual
    with pytest.raises(ValueError, match="device_stores"):
        SimulationConfig(device_stores="flash")


def test_more_devices_than_users_get_sub_splits():
    users = [[{"i": i, "j": j} for j in range(n)] for i, n in enumerate([6, 3, 0, 1])]
    parts = assign_data(users, 7)
    assert len(parts) == 7
    assert all(parts)  # nobody is empty
    first_user = [e for p in parts for e in p if e["i"] == 0]
    assert sorted(e["j"] for e in first_user) == list(
        range(6)
    )  # a user's data is split, not copied


def test_ngram_predicts_a_seen_continuation():
    import numpy as np

    seq = np.array([1, 5, 6, 7, 2])
    ex = [{"tokens": seq[:-1], "targets": seq[1:]}] * 3
    model = NGramPredictor(ex)
    assert model.top_k((5, 6))[0] == 7
    assert model.top_k((9, 6))[0] == 7  # unseen pair: backs off to the bigram
    assert model.recall(ex)["accuracy"] == 1.0
