"""A lazy population: device i's profile and data are functions of (seed, i), drawn
without building the other devices, and nothing it holds grows with its size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fleet.config import ProfileSettings, SimulationConfig
from fleet.lazy_population import LazyPopulation, apportion
from fleet.population import draw_profile

SETTINGS = ProfileSettings()


def users_of(sizes) -> list[list[dict]]:
    """Users whose examples name themselves: {"user": u, "j": j}."""
    return [[{"user": u, "j": j} for j in range(n)] for u, n in enumerate(sizes)]


def test_device_profile_is_a_function_of_seed_and_index():
    users = users_of([5, 3, 8])
    a = LazyPopulation(10**6, users, SETTINGS, seed=7)
    b = LazyPopulation(10**6, users, SETTINGS, seed=7)
    picks = [0, 1, 12_345, 999_999]
    assert [a.profile(i) for i in reversed(picks)] == [b.profile(i) for i in reversed(picks)]
    batch = a.profile_arrays(np.array(picks))
    for k, i in enumerate(picks):  # a batch draws each device as if alone
        assert a.profile(i).speed == batch["speed"][k]
        assert a.profile(i).window_start_h == batch["window_start_h"][k]
    assert len({a.profile(i) for i in picks}) == len(picks)
    other = LazyPopulation(10**6, users, SETTINGS, seed=8)
    assert all(other.profile(i) != a.profile(i) for i in picks)
    with pytest.raises(IndexError):
        a.profile(10**6)


def test_a_billion_devices_cost_only_their_users():
    users = users_of([40, 30, 20, 10])
    tracemalloc.start()
    try:
        population = LazyPopulation(10**9, users, SETTINGS, seed=0)
        last = population.profile(10**9 - 1)
        train, _ = population.examples(10**9 - 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # bytes: arrays of one entry per user, not per device
    assert last.speed > 0 and len(train) == 1
    arrays = [v for v in vars(population).values() if isinstance(v, np.ndarray)]
    assert arrays and all(len(v) <= len(users) for v in arrays)


def test_availability_is_the_profile_window_vectorized():
    population = LazyPopulation(10_000, users_of([3]), SETTINGS, seed=3)
    index = np.arange(0, 10_000, 37)
    for now in (0.0, 5 * 3600.0, 13.5 * 3600.0):
        expected = [population.profile(int(i)).available(now) for i in index]
        assert population.available(index, now).tolist() == expected
    times = np.linspace(0, 86_400, len(index))  # one time per device
    assert population.available(index, times).tolist() == [
        population.profile(int(i)).available(t) for i, t in zip(index, times)
    ]


def test_profiles_follow_the_eager_distributions():
    """Same distributions as draw_profile: compare quantiles of 20,000 draws each."""
    population = LazyPopulation(20_000, users_of([1]), SETTINGS, seed=11)
    lazy = population.profile_arrays(np.arange(20_000))
    rng = np.random.default_rng(11)
    eager = [draw_profile(SETTINGS, rng) for _ in range(20_000)]
    for name in (
        "tz_offset_h",
        "window_start_h",
        "window_length_h",
        "speed",
        "upload_bps",
        "download_bps",
    ):
        mine = np.quantile(lazy[name], [0.1, 0.5, 0.9])
        theirs = np.quantile([getattr(p, name) for p in eager], [0.1, 0.5, 0.9])
        spread = np.quantile([getattr(p, name) for p in eager], 0.9) - theirs[0]
        assert np.all(np.abs(mine - theirs) < 0.05 * spread), name


def test_sub_splits_partition_every_user():
    sizes = [50, 7, 0, 23, 1]
    users = users_of(sizes)
    population = LazyPopulation(40, users, SETTINGS, seed=0)
    held = {}
    for i in range(40):
        train, _ = population.examples(i)
        assert train, "every device holds at least one example"
        assert len({e["user"] for e in train}) == 1  # a device's data is one user's
        for e in train:
            key = (e["user"], e["j"])
            assert key not in held, "an example on two devices"
            held[key] = i
    assert len(held) == sum(sizes)  # and every example on one
    # devices per user follow the examples: the 50-example user gets the most
    parts = {u: sum(1 for i in range(40) if population.locate(i)[0] == u) for u in range(5)}
    assert parts[0] > parts[3] > parts[1] >= parts[4] == 1 and parts[2] == 0


def test_more_devices_than_examples_share_round_robin():
    users = users_of([3, 2])
    population = LazyPopulation(1000, users, SETTINGS, seed=0)
    seen = {(e["user"], e["j"]) for i in range(1000) for e in population.examples(i)[0]}
    assert seen == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)}
    assert all(len(population.examples(i)[0]) == 1 for i in range(0, 1000, 7))


def test_fewer_devices_than_users_take_the_largest_users():
    population = LazyPopulation(2, users_of([1, 9, 4]), SETTINGS, seed=0)
    assert [population.locate(i)[0] for i in range(2)] == [1, 2]


def test_apportion_sums_to_its_total_in_proportion():
    weights = np.array([5, 3, 2], dtype=np.int64)
    assert apportion(10, weights).tolist() == [5, 3, 2]
    out = apportion(1_000_003, weights)
    assert out.sum() == 1_000_003
    assert np.all(np.abs(out - 1_000_003 * weights / 10) < 1)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"population": "lazzy"}, "population: must be"),
        ({"population": "lazy", "device_stores": "disk"}, "device_stores must be 'memory'"),
        ({"population": "lazy", "task": {"mode": "sync", "eval_fraction": 0.2}}, "eval_fraction"),
    ],
)
def test_bad_population_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**settings)
