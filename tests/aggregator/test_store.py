"""The Store interface, run against both backends (SQLite + files, and PostgreSQL), and
what only a shared store does: one leader per task, taken over when it dies, and a
process that lost the lead cannot write."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from aggregator.errors import NotLeader
from aggregator.store import (
    CRASH_POINTS,
    AlreadyAggregated,
    Device,
    PendingUpdate,
    TaskRecord,
    open_store,
)

RECORD = TaskRecord("kb", {"mode": "sync"}, "/bundles/kb", "model-1", [{"name": "w", "shape": [2]}])


class _Crash(Exception):
    pass


def _store(tmp_path, store_url, crash_at=None):
    armed = []  # the hook fires once the test has set its task up

    def hook(point):
        if point == crash_at and armed:
            raise _Crash(point)

    store = open_store(tmp_path / "data", store_url, hook)
    store.arm = lambda: armed.append(True)
    assert store.try_lead("kb", "http://127.0.0.1:1", 0.0)
    return store


def _update(key: str, round_id: int = 1) -> PendingUpdate:
    return PendingUpdate(key, round_id, "dev-1", 0, 3.0, 0)


def _with_task(tmp_path, store_url, crash_at=None):
    store = _store(tmp_path, store_url, crash_at)
    store.add_task(RECORD, b"model v0", 1.0)
    store.save_snapshot("kb", {"round_id": 1, "version": 0})
    return store


def test_a_task_and_its_models_round_trip(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    assert store.has_task("kb") and not store.has_task("other")
    assert store.tasks() == [RECORD]
    version, path = store.latest_model("kb")
    assert version == 0 and path.read_bytes() == b"model v0"
    assert store.model_path("kb", 0).read_bytes() == b"model v0"
    assert store.model_path("kb", 7) is None
    assert [h["version"] for h in store.model_history("kb")] == [0]
    assert store.snapshot("kb") == {"round_id": 1, "version": 0}
    assert store.snapshot("other") is None and store.optimizer_state("kb") == {}
    store.close()


def test_an_update_is_pending_until_a_version_moves_it_to_the_ledger(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    assert store.seen_update("kb", "dev-1", "k1") is None
    store.save_update("kb", _update("k1"), b"update one", {"loss": 1.0}, {"round_id": 1}, 2.0)
    store.save_update("kb", _update("k2"), b"update two", {"loss": 3.0}, {"round_id": 1}, 3.0)
    assert store.seen_update("kb", "dev-1", "k1") == -1
    pending = store.pending_updates("kb")
    assert [u.idempotency_key for u in pending] == ["k1", "k2"]
    assert [store.update_bytes(u) for u in pending] == [b"update one", b"update two"]
    assert pending[0].weight == 3.0 and pending[0].round_id == 1
    assert sorted(m["loss"] for m in store.pending_metrics("kb")) == [1.0, 3.0]
    state = {"m": np.arange(3, dtype=np.float32)}
    store.commit_version("kb", 1, b"model v1", state, {"round_id": 2, "version": 1}, {"n": 2}, 4.0)
    assert store.seen_update("kb", "dev-1", "k1") == store.seen_update("kb", "dev-1", "k2") == 1
    assert store.pending_updates("kb") == []
    assert store.latest_model("kb")[1].read_bytes() == b"model v1"
    assert store.snapshot("kb") == {"round_id": 2, "version": 1}
    np.testing.assert_array_equal(store.optimizer_state("kb")["m"], state["m"])
    store.commit_version("kb", 2, b"model v2", {"m": state["m"] + 1}, {"round_id": 3}, {}, 5.0)
    np.testing.assert_array_equal(store.optimizer_state("kb")["m"], state["m"] + 1)
    assert [h["version"] for h in store.model_history("kb")] == [0, 1, 2]
    assert store.model_history("kb")[1]["metrics"] == {"n": 2}
    store.close()


def test_the_database_counts_a_key_once(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    store.save_update("kb", _update("k1"), b"u", {}, {"round_id": 1}, 2.0)
    with pytest.raises(Exception):  # the primary key: a second pending row is refused
        store.save_update("kb", _update("k1"), b"u", {}, {"round_id": 1}, 2.5)
    store.commit_version("kb", 1, b"model v1", {}, {"round_id": 2}, {}, 3.0)
    with pytest.raises(AlreadyAggregated):  # already in the ledger: never pending again
        store.save_update("kb", _update("k1", round_id=2), b"u", {}, {"round_id": 2}, 4.0)
    assert store.pending_updates("kb") == [] and store.seen_update("kb", "dev-1", "k1") == 1
    store.close()


@pytest.mark.parametrize("point", [p for p in CRASH_POINTS if p != "group_written"])
def test_a_write_cut_short_is_whole_or_absent_after_reopening(tmp_path, store_url, point):
    store = _with_task(tmp_path, store_url, crash_at=point)
    store.arm()
    reached = set()
    try:
        store.save_update("kb", _update("k1"), b"update", {}, {"round_id": 1, "n": 1}, 2.0)
        store.save_snapshot("kb", {"round_id": 1, "n": 2})
        store.commit_version("kb", 1, b"model v1", {"m": np.ones(2)}, {"round_id": 2}, {}, 3.0)
    except _Crash as e:
        reached.add(e.args[0])
    assert reached == {point}
    store.close()
    store = _store(tmp_path, store_url)  # as after a restart
    committed = store.latest_model("kb")[0] == 1
    if point == "update_file_written":  # the row never committed
        assert store.seen_update("kb", "dev-1", "k1") is None and store.pending_updates("kb") == []
        assert store.snapshot("kb") == {"round_id": 1, "version": 0}
    elif point in ("snapshot_saved", "model_file_written"):  # the update is pending, whole
        assert not committed and store.seen_update("kb", "dev-1", "k1") == -1
        assert store.update_bytes(store.pending_updates("kb")[0]) == b"update"
        assert store.snapshot("kb") == {"round_id": 1, "n": 2}
    else:  # the version committed, with its state
        assert committed and store.seen_update("kb", "dev-1", "k1") == 1
        assert store.latest_model("kb")[1].read_bytes() == b"model v1"
        np.testing.assert_array_equal(store.optimizer_state("kb")["m"], np.ones(2))
    if store_url is None:  # no file is left that no row points at
        files = {
            str(p.relative_to(store.root))
            for sub in ("models", "updates", "state")
            for p in (store.root / sub).rglob("*")
            if p.is_file()
        }
        assert files == {
            r[0]
            for r in store._query(
                "SELECT path FROM models UNION SELECT path FROM updates UNION "
                "SELECT optimizer_state FROM coordinators WHERE optimizer_state IS NOT NULL "
                "EXCEPT SELECT path FROM update_segments"
            )
        }
    store.close()


def test_grouped_writes_are_durable_at_the_flush_and_only_then(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    store.group_commits(True)
    store.save_update("kb", _update("k1"), b"one", {}, {"round_id": 1, "n": 1}, 2.0)
    store.save_snapshot("kb", {"round_id": 1, "n": 2})
    with pytest.raises(AlreadyAggregated):  # a failed call undoes its own writes only
        store.save_update("kb", _update("k1"), b"again", {}, {"round_id": 1, "n": 9}, 2.5)
    store.save_update("kb", _update("k2"), b"two", {}, {"round_id": 1, "n": 3}, 3.0)
    group = store.open_group()
    # the process that wrote them reads its own writes before they are committed
    assert [u.idempotency_key for u in store.pending_updates("kb")] == ["k1", "k2"]
    if store_url is None:  # SQLite groups; another connection sees none of the group yet
        assert group is not None
        other = sqlite3.connect(tmp_path / "data" / "aggregator.db")
        assert other.execute("SELECT COUNT(*) FROM updates").fetchone() == (0,)
        assert '"version": 0' in other.execute("SELECT snapshot FROM coordinators").fetchone()[0]
        other.close()
    assert store.flush() == group and store.open_group() is None
    store.group_commits(False)
    store.close()
    store = _store(tmp_path, store_url)
    assert [store.update_bytes(u) for u in store.pending_updates("kb")] == [b"one", b"two"]
    assert store.snapshot("kb") == {"round_id": 1, "n": 3}  # the newest of the group
    store.close()


def test_a_snapshot_given_as_a_function_is_taken_once_at_the_commit(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    store.group_commits(True)
    state, taken = {"round_id": 1, "n": 0}, []

    def snapshot() -> dict:
        taken.append(dict(state))
        return dict(state)

    for i in range(3):
        state["n"] = i + 1
        store.save_update("kb", _update(f"k{i}"), b"u%d" % i, {}, snapshot, 2.0)
    state["n"] = 9  # what the coordinator holds when the group commits
    store.flush()
    if store_url is None:  # SQLite groups: once, the newest state
        assert taken == [{"round_id": 1, "n": 9}]
    else:  # PostgreSQL commits each write alone: at each call
        assert [t["n"] for t in taken] == [1, 2, 3]
    store.group_commits(False)
    store.close()
    store = _store(tmp_path, store_url)
    assert store.snapshot("kb") == taken[-1]
    store.close()


def test_a_group_cut_short_before_its_commit_is_absent_after_reopening(tmp_path, store_url):
    if store_url is not None:
        pytest.skip("PostgreSQL commits every write alone (it does not group)")
    store = _with_task(tmp_path, store_url, crash_at="group_written")
    store.arm()
    store.group_commits(True)
    store.save_update("kb", _update("k1"), b"update", {}, {"round_id": 1, "n": 1}, 2.0)
    store.commit_version("kb", 1, b"model v1", {"m": np.ones(2)}, {"round_id": 2}, {}, 3.0)
    store.save_update("kb", _update("k2", round_id=2), b"next", {}, {"round_id": 2}, 4.0)
    with pytest.raises(_Crash):
        store.flush()
    store.close()
    store = _store(tmp_path, store_url)
    assert store.latest_model("kb")[0] == 0 and store.pending_updates("kb") == []
    assert store.seen_update("kb", "dev-1", "k1") is None
    assert store.snapshot("kb") == {"round_id": 1, "version": 0}
    store.close()


def _segment_files(tmp_path) -> set[str]:
    root = tmp_path / "data" / "segments"
    return {str(p.relative_to(root)) for p in root.glob("*/*.seg")}


def _segment_rows(store) -> dict[str, str]:
    return dict(store._query("SELECT path, segment FROM update_segments"))


def test_update_bytes_live_in_segments_removed_once_no_row_points_into_them(
    tmp_path, store_url, monkeypatch
):
    if store_url is not None:
        pytest.skip("PostgreSQL keeps update bytes as rows")
    from aggregator.store import segments

    monkeypatch.setattr(segments, "SEGMENT_BYTES", 6)  # a segment is full after two updates
    store = _with_task(tmp_path, store_url)
    store.group_commits(True)
    for i in range(3):
        store.save_update("kb", _update(f"k{i}"), b"u%d" % i, {}, {"round_id": 1}, 2.0)
    store.flush()
    rows = _segment_rows(store)
    assert len(rows) == 3 and len(set(rows.values())) == 1  # one group, one segment
    assert store._query("SELECT COUNT(*) FROM update_bytes") == [(0,)]
    first = set(rows.values())
    assert _segment_files(tmp_path) == first  # closed: it holds more than SEGMENT_BYTES
    store.save_update("kb", _update("k3"), b"u3", {}, {"round_id": 1}, 2.5)
    store.flush()
    (second,) = _segment_files(tmp_path) - first  # the open one, not full yet
    assert [store.update_bytes(u) for u in store.pending_updates("kb")] == [
        b"u0",
        b"u1",
        b"u2",
        b"u3",
    ]
    store.commit_version("kb", 1, b"model v1", {"m": np.ones(2)}, {"round_id": 2}, {}, 3.0)
    store.flush()  # no row points into either: the closed one is gone, the open one stays
    assert _segment_rows(store) == {} and _segment_files(tmp_path) == {second}
    store.save_update("kb", _update("k9", round_id=2), b"next", {}, {"round_id": 2}, 4.0)
    store.flush()  # appended to the open one, which is full now
    assert _segment_rows(store) == {u.path: second for u in store.pending_updates("kb")}
    # bytes appended (to a new segment) by a group that never committed
    store.save_update("kb", _update("k10", round_id=2), b"lost", {}, {"round_id": 2}, 5.0)
    store._segments.sync()
    assert len(_segment_files(tmp_path)) == 2
    store.close()  # without the flush: the group is lost, as in a crash
    store = _store(tmp_path, store_url)
    assert [u.idempotency_key for u in store.pending_updates("kb")] == ["k9"]
    assert store.update_bytes(store.pending_updates("kb")[0]) == b"next"
    assert _segment_files(tmp_path) == {second}  # start-up removed the one no row points at
    store.drop_pending("kb")
    assert _segment_files(tmp_path) == set()
    store.close()


def test_update_bytes_of_a_data_dir_of_before_the_segments_are_read_and_freed(tmp_path, store_url):
    if store_url is not None:
        pytest.skip("PostgreSQL keeps update bytes as rows")
    store = _with_task(tmp_path, store_url)
    store.save_update("kb", _update("k1"), b"old", {}, {"round_id": 1}, 2.0)
    with store._transaction() as tx:  # where the bytes were before segments
        (path,) = tx.execute("SELECT path FROM updates").fetchone()
        tx.execute("DELETE FROM update_segments")
        tx.execute("INSERT INTO update_bytes VALUES (?, ?)", (path, b"old"))
    store.close()
    store = _store(tmp_path, store_url)
    assert store.update_bytes(store.pending_updates("kb")[0]) == b"old"
    store.drop_pending("kb")
    assert store._query("SELECT COUNT(*) FROM update_bytes") == [(0,)]
    store.close()


def test_an_abandoned_round_drops_its_updates(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    store.save_update("kb", _update("k1"), b"u", {}, {"round_id": 1}, 2.0)
    store.drop_pending("kb")
    assert store.pending_updates("kb") == [] and store.seen_update("kb", "dev-1", "k1") is None
    store.close()


def test_chunks_are_appended_only_at_the_count_received(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    store.begin_upload("up1", "dev-1", "kb", 10, "0" * 64, 1.0)
    assert store.upload_info("up1") == {
        "upload_id": "up1",
        "device_id": "dev-1",
        "task_id": "kb",
        "size": 10,
        "sha256": "0" * 64,
        "received": 0,
        "created": 1.0,
    }
    assert store.append_upload("up1", 0, b"abcd") == 4
    assert store.append_upload("up1", 0, b"abcd") == 4  # a repeat: nothing appended
    assert store.append_upload("up1", 6, b"gh") == 4  # a gap: refused, the count says where
    assert store.append_upload("up1", 4, b"efghij") == 10
    assert store.read_upload("up1") == b"abcdefghij"
    store.finish_upload("up1")
    assert store.upload_info("up1") is None
    assert store.append_upload("up1", 10, b"x") == -1
    store.close()


def test_a_devices_uploads_and_those_begun_before_a_time_are_listed(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    store.begin_upload("up2", "dev-1", "kb", 20, "0" * 64, 2.0)
    store.begin_upload("up1", "dev-1", "kb", 10, "0" * 64, 1.0)
    store.begin_upload("up3", "dev-2", "kb", 30, "0" * 64, 3.0)
    assert [u["upload_id"] for u in store.device_uploads("dev-1")] == ["up1", "up2"]
    assert [u["size"] for u in store.device_uploads("dev-2")] == [30]
    assert sorted(store.uploads_begun_before(3.0)) == ["up1", "up2"]
    store.finish_upload("up1")
    assert store.uploads_begun_before(3.0) == ["up2"]
    store.close()


def test_devices_evaluations_and_events(tmp_path, store_url):
    store = _with_task(tmp_path, store_url)
    store.add_device(Device("dev-1", "keyboard", b"k" * 32), "hash-1", 1.0)
    assert store.device_by_token("hash-1") == Device("dev-1", "keyboard", b"k" * 32)
    assert store.device_by_token("hash-2") is None
    with pytest.raises(Exception):  # a token names one device
        store.add_device(Device("dev-2", "keyboard", b"k" * 32), "hash-1", 1.0)
    store.add_evaluation("kb", 0, "dev-1", {"count": 4.0, "correct": 1.0})
    store.add_evaluation("kb", 0, "dev-1", {"count": 4.0, "correct": 1.0})  # a retry
    store.add_evaluation("kb", 0, "dev-2", {"count": 6.0, "correct": 3.0})
    assert store.has_evaluation("kb", 0, "dev-1") and not store.has_evaluation("kb", 1, "dev-1")
    assert store.evaluation_totals("kb") == {0: {"devices": 2, "count": 10.0, "correct": 4.0}}
    store.add_events("kb", [{"event": f"e{i}", "at": float(i)} for i in range(5)])
    assert [e["event"] for e in store.events("kb", limit=3)] == ["e2", "e3", "e4"]
    store.close()


# -- a shared store -------------------------------------------------------------------------
def _eventually(condition, timeout_s: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_one_process_leads_a_task_and_another_takes_over_when_it_goes(tmp_path, postgres):
    url = postgres.new_database()
    a = open_store(tmp_path / "a", url)
    b = open_store(tmp_path / "b", url)
    assert a.try_lead("kb", "http://a", 0.0) and a.leading() == {"kb"}
    assert not b.try_lead("kb", "http://b", 0.0) and b.leading() == set()
    assert b.leader_url("kb") == "http://a"
    assert b.try_lead("other", "http://b", 0.0)  # each task has its own leader
    a.close()  # its session ends: PostgreSQL releases the lock (as the backend exits)
    assert _eventually(lambda: b.try_lead("kb", "http://b", 1.0))
    assert b.leading() == {"kb", "other"}
    assert b.leader_url("kb") == "http://b"
    b.close()


def test_a_process_that_lost_the_lead_cannot_write(tmp_path, postgres):
    import psycopg

    url = postgres.new_database()
    a = open_store(tmp_path / "a", url)
    a.add_task(RECORD, b"model v0", 1.0)
    assert a.try_lead("kb", "http://a", 0.0)
    a.save_snapshot("kb", {"round_id": 1})
    b = open_store(tmp_path / "b", url)
    # a's lock connection dies while its other connection lives on (a partition, an admin)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        )
    assert _eventually(lambda: b.try_lead("kb", "http://b", 1.0))
    with pytest.raises(NotLeader):
        a.save_update("kb", _update("k1"), b"u", {}, {"round_id": 1}, 2.0)
    with pytest.raises(NotLeader):
        a.commit_version("kb", 1, b"model v1", {}, {"round_id": 2}, {}, 3.0)
    assert a.leading() == set() and a.seen_update("kb", "dev-1", "k1") is None
    assert b.latest_model("kb")[0] == 0
    b.save_snapshot("kb", {"round_id": 1, "by": "b"})
    assert a.snapshot("kb") == {"round_id": 1, "by": "b"}  # reads work anywhere
    a.close()
    b.close()


# -- the interface is the whole contract -------------------------------------------------------
def test_the_protocol_lists_every_call_the_service_makes_and_both_backends_have_them():
    import inspect
    import re
    from pathlib import Path

    import aggregator.service
    import aggregator.uploads
    from aggregator.store import SqliteStore, Store
    from aggregator.store.postgres import PostgresStore

    declared = {n for n in dir(Store) if not n.startswith("_")} | set(Store.__annotations__)
    sources = [p.read_text() for p in Path(aggregator.service.__file__).parent.glob("*.py")]
    sources.append(Path(aggregator.uploads.__file__).read_text())
    used = {
        name for text in sources for name in re.findall(r"(?:self\.|service\.)store\.(\w+)", text)
    }
    assert {"save_update", "commit_version", "flush", "open_group", "group_commits"} <= used
    assert used <= declared, f"the service calls {sorted(used - declared)} outside Store"
    for backend in (SqliteStore, PostgresStore):
        missing = {n for n in declared if not hasattr(backend, n)}
        assert not missing, f"{backend.__name__} lacks {sorted(missing)}"
        for name in declared - {"shared"}:
            ours = inspect.signature(getattr(backend, name)).parameters
            theirs = inspect.signature(getattr(Store, name)).parameters
            assert list(ours) == list(theirs), f"{backend.__name__}.{name}{list(ours)}"


def test_a_store_url_must_name_a_postgresql_database():
    from aggregator.app import ServerConfig

    with pytest.raises(ValueError, match="postgresql://"):
        ServerConfig("/tmp/x", "admin-token-0123456789", store_url="mysql://db/x")
    with pytest.raises(ValueError, match="advertise_url"):
        ServerConfig("/tmp/x", "admin-token-0123456789", advertise_url="127.0.0.1:8750")
    config = ServerConfig(
        "/tmp/x",
        "admin-token-0123456789",
        store_url="postgresql://h/db",
        advertise_url="http://10.0.0.5:8750",
    )
    assert config.store_url == "postgresql://h/db"
