from __future__ import annotations

import sqlite3
import tracemalloc

import numpy as np
import pytest

from edge_sdk.clock import FakeClock
from edge_sdk.errors import StoreError
from edge_sdk.example_store import ExampleStore, RetentionPolicy


def _ex(i: int) -> dict:
    return {"tokens": np.arange(i, i + 5, dtype=np.int64), "targets": np.int64(i)}


def test_examples_round_trip_in_insertion_order(tmp_path):
    store = ExampleStore(tmp_path / "s.db")
    store.add_many("kb", [_ex(i) for i in range(10)])
    store.add("other", _ex(99))
    got = list(store.iter_examples("kb", page=3))
    assert [int(e["targets"]) for e in got] == list(range(10))
    np.testing.assert_array_equal(got[4]["tokens"], np.arange(4, 9))
    assert got[4]["tokens"].dtype == np.int64
    assert store.count("kb") == 10 and store.count("other") == 1


def test_shuffled_iteration_is_a_seeded_permutation(tmp_path):
    store = ExampleStore(tmp_path / "s.db")
    store.add_many("kb", [_ex(i) for i in range(50)])
    a = [
        int(e["targets"])
        for e in store.iter_examples("kb", shuffle_rng=np.random.default_rng(1), page=7)
    ]
    b = [int(e["targets"]) for e in store.iter_examples("kb", shuffle_rng=np.random.default_rng(1))]
    assert a == b and sorted(a) == list(range(50)) and a != list(range(50))
    assert len(list(store.iter_examples("kb", limit=12))) == 12


def test_retention_by_count_keeps_the_newest(tmp_path):
    store = ExampleStore(tmp_path / "s.db", RetentionPolicy(max_count=5, max_age_s=None))
    store.add_many("kb", [_ex(i) for i in range(8)])
    store.add("kb", _ex(8))
    assert [int(e["targets"]) for e in store.iter_examples("kb")] == [4, 5, 6, 7, 8]


def test_retention_by_age_with_a_fake_clock(tmp_path):
    clock = FakeClock()
    store = ExampleStore(tmp_path / "s.db", RetentionPolicy(max_count=None, max_age_s=100), clock)
    store.add("kb", _ex(0))
    clock.advance(60)
    store.add("kb", _ex(1))
    clock.advance(50)  # the first is now 110 s old
    store.enforce_retention()
    assert [int(e["targets"]) for e in store.iter_examples("kb")] == [1]


def test_iteration_streams_instead_of_loading_the_collection(tmp_path):
    store = ExampleStore(tmp_path / "s.db", RetentionPolicy(max_count=None, max_age_s=None))
    big = {"x": np.zeros(2000, np.float32)}  # 8 kB each, 16 MB in all
    store.add_many("img", (big for _ in range(2000)))
    tracemalloc.start()
    n = sum(1 for _ in store.iter_examples("img", page=64))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 2000 and peak < 4 * 2**20


def test_wipe_removes_every_example_and_state_from_disk(tmp_path):
    path = tmp_path / "s.db"
    store = ExampleStore(path)
    marker = np.frombuffer(b"SECRET-SENTENCE-XYZZY-" * 4, np.uint8)
    store.add_many("kb", [{"tokens": marker} for _ in range(20)])
    store.put_state("residual", b"PRIVATE-STATE-QWERTY")
    store.wipe()
    assert store.count("kb") == 0 and store.get_state("residual") is None
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"SECRET-SENTENCE-XYZZY" not in on_disk and b"PRIVATE-STATE-QWERTY" not in on_disk


def test_state_table_round_trip(tmp_path):
    store = ExampleStore(tmp_path / "s.db")
    assert store.get_state("k") is None
    store.put_state("k", b"one")
    store.put_state("k", b"two")
    assert store.get_state("k") == b"two"
    store.delete_state("k")
    assert store.get_state("k") is None


def test_a_corrupt_row_raises_store_error(tmp_path):
    path = tmp_path / "s.db"
    store = ExampleStore(path)
    store.add("kb", _ex(1))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE examples SET payload = x'00010203'")
    with pytest.raises(StoreError, match="corrupt"):
        list(store.iter_examples("kb"))


def test_retention_policy_validates():
    with pytest.raises(ValueError, match="max_count"):
        RetentionPolicy(max_count=0)


def test_a_capped_page_cache_still_round_trips_state_larger_than_it(tmp_path):
    store = ExampleStore(tmp_path / "s.db", cache_kib=64)
    assert store._db.execute("PRAGMA cache_size").fetchone()[0] == -64
    blob = np.random.default_rng(0).bytes(3 * 2**20)  # 48x the cache
    store.put_state("residual", blob)
    store.close()
    assert ExampleStore(tmp_path / "s.db", cache_kib=64).get_state("residual") == blob
