"""A million-device population in a simulation: real SDK clients against the real
aggregator, where only the devices taking part exist (counted as live objects), only
the devices that checked in are enrolled, and the same seed gives the same run."""

from __future__ import annotations

import asyncio
import sqlite3
import weakref

import pytest

from fleet import devices, lazy_fleet, simulator
from fleet.data import prepare
from fleet.lazy_population import LazyPopulation
from fleet.metrics import Scorer

from .small_fleet import small_fleet

MILLION = 1_000_000


def lazy_config(**overrides):
    return small_fleet(MILLION, goal=10, versions=2, population="lazy", **overrides)


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    return prepare(lazy_config(), tmp_path_factory.mktemp("bundle"))


def simulate(config, data, out):
    population = LazyPopulation(
        config.devices, data.users, config.profiles, config.seed, heldout=data.heldout
    )
    return asyncio.run(
        simulator.simulate(
            config,
            data.bundle,
            population,
            data.test,
            out,
            show_progress=False,
            scorer=Scorer(data.bundle, data.task),
        )
    )


class Census:
    """Live instances of a class, counted as they are made (a weak set: a dropped object
    leaves it), and the most ever alive at once."""

    def __init__(self, cls):
        census = self
        self.live, self.made, self.peak = weakref.WeakSet(), 0, 0

        class Counted(cls):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                census.live.add(self)
                census.made += 1
                census.peak = max(census.peak, len(census.live))

        self.cls = Counted


def test_a_million_devices_run_with_only_the_selected_ones_alive(tmp_path, task_data, monkeypatch):
    clients = Census(devices.FederatedClient)
    stores = Census(lazy_fleet.ExampleStore)
    monkeypatch.setattr(devices, "FederatedClient", clients.cls)
    monkeypatch.setattr(lazy_fleet, "ExampleStore", stores.cls)
    report = simulate(lazy_config(), task_data, tmp_path)

    assert report["devices"] == MILLION and report["versions"] == 2
    funnel, population = report["funnel"], report["population"]
    assert funnel["accepted"] >= 2 * 10 * 0.7
    # one client and one store per check-in, never more alive than a round's places
    # (13 = goal 10 x overselect 1.3) and the last round's stragglers still finishing
    assert clients.made == stores.made == funnel["checked_in"] == population["visits"]
    assert 10 <= clients.peak <= 2 * 13 and stores.peak <= 2 * 13
    assert len(clients.live) == 0  # every device dropped after its visit
    # the aggregator enrolled the devices that checked in, nothing up front
    with sqlite3.connect(tmp_path / "server" / "aggregator.db") as db:
        enrolled = db.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
    assert enrolled == population["enrolled"] <= funnel["checked_in"] < 100
    assert report["final"]["mean_loss"] < report["timeline"][0]["mean_loss"]


def test_the_same_seed_gives_the_same_lazy_run(tmp_path, task_data):
    first = simulate(lazy_config(), task_data, tmp_path / "a")
    again = simulate(lazy_config(), task_data, tmp_path / "b")
    other = simulate(lazy_config(seed=2), task_data, tmp_path / "c")
    curve = [{k: v for k, v in p.items() if k != "wall_s"} for p in first["timeline"]]
    assert curve == [{k: v for k, v in p.items() if k != "wall_s"} for p in again["timeline"]]
    assert first["funnel"] == again["funnel"] and first["client"] == again["client"]
    assert first["population"] == again["population"]
    assert other["sim_hours"] != first["sim_hours"]
