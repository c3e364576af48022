"""What the dashboard counts and estimates, at its source: each device outcome counted once
in the coordinator's funnel (accepted, rejected or dropped; never rejected *and* dropped),
bytes per version, the task's maximum, and the time per version / time to go of
aggregator/progress.py."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.config import TaskSettings
from aggregator.coordinator import Outcome, TaskCoordinator
from aggregator.errors import RoundClosed, StaleVersion
from aggregator.progress import task_progress
from aggregator.stages import WeightedMean
from edge_sdk.protocol import UpdateMeta


def _coordinator(**settings) -> TaskCoordinator:
    return TaskCoordinator(
        "t", TaskSettings.from_json(settings), 0, WeightedMean(), np.random.default_rng(0), 0.0
    )


def _submit(c: TaskCoordinator, device: str, version: int, now: float, key: str = "k"):
    meta = UpdateMeta("t", "m", version, device, f"{device}-{key}", 10)
    admission = c.admit(meta, now)
    if isinstance(admission, Outcome):
        return admission
    return c.accept(meta, {"w": np.ones(3, np.float32)}, admission)


def _outcomes(c: TaskCoordinator) -> int:
    f = c.funnel
    return f.accepted + sum(f.rejected.values()) + sum(f.dropped.values())


SYNC = {
    "mode": "sync",
    "sync": {
        "goal": 2,
        "overselect": 1.5,
        "selection_timeout_s": 10,
        "report_deadline_s": 100,
        "min_fraction": 0.5,
    },
}


def test_a_late_upload_after_the_round_filled_is_not_a_second_outcome():
    c = _coordinator(**SYNC)
    for d in "abc":
        c.check_in(d, 0.0)
    _submit(c, "a", 0, 1.0)
    _submit(c, "b", 0, 1.0)
    c.take_aggregate(2.0)  # the round filled without c
    with pytest.raises(RoundClosed):
        _submit(c, "c", 0, 3.0)
    f = c.funnel
    assert f.dropped == {"round_full": 1} and f.rejected == {} and f.late_after_drop == 1
    assert _outcomes(c) == f.selected == 3
    assert f.reported == f.accepted == 2
    # the next round selects it again, and its new upload counts as a new outcome
    c.check_in("c", 4.0)
    assert _submit(c, "c", 1, 5.0).status == "accepted"


def test_a_device_refused_in_its_round_is_not_also_dropped_when_the_round_ends():
    c = _coordinator(**SYNC)
    for d in "abc":
        c.check_in(d, 0.0)
    _submit(c, "a", 0, 1.0)
    with pytest.raises(StaleVersion):
        _submit(c, "b", 7, 1.0)  # b reported, with the wrong version
    with pytest.raises(RoundClosed):
        _submit(c, "c", 0, 200.0)  # c reported, after the deadline
    c.take_aggregate(201.0)  # one report is enough at the deadline
    f = c.funnel
    assert f.rejected == {"stale": 1, "late": 1} and f.dropped == {}
    assert _outcomes(c) == f.selected == 3
    assert f.reported == 3


def test_a_silent_device_is_dropped_once_by_why_its_round_ended():
    c = _coordinator(**SYNC)
    for d in "abc":
        c.check_in(d, 0.0)
    _submit(c, "a", 0, 1.0)
    c.tick(200.0)
    c.take_aggregate(200.0)
    assert c.funnel.dropped == {"deadline": 2} and _outcomes(c) == 3


def test_async_a_device_past_its_deadline_is_dropped_and_its_late_upload_not_counted_again():
    c = _coordinator(
        mode="async", **{"async": {"concurrency": 2, "buffer_size": 5, "report_deadline_s": 10}}
    )
    c.check_in("a", 0.0)
    c.tick(11.0)
    with pytest.raises(RoundClosed):
        _submit(c, "a", 0, 12.0)
    f = c.funnel
    assert f.dropped == {"deadline": 1} and f.rejected == {} and f.late_after_drop == 1


def test_drops_and_refusals_and_traffic_survive_a_restart():
    settings = SYNC | {"sync": SYNC["sync"] | {"overselect": 2.0}}  # 4 selected, 2 needed
    c = _coordinator(**settings)
    for d in "abcd":
        c.check_in(d, 0.0)
    with pytest.raises(StaleVersion):
        _submit(c, "b", 7, 1.0)
    c.count_bytes(up=100, down=2000)
    again = _coordinator(**settings)
    again.restore(c.snapshot())
    assert again.refused_devices == {"b"}
    assert again.traffic == {"bytes_up": 100, "bytes_down": 2000}
    _submit(again, "a", 0, 2.0)
    _submit(again, "c", 0, 2.0)
    again.take_aggregate(3.0)
    # b reported (refused) before the restart: only d is dropped
    assert again.funnel.dropped == {"round_full": 1} and _outcomes(again) == 4
    (published,) = [e for e in again.events if e["event"] == "version_published"]
    assert published["bytes_up"] == 100 and published["bytes_down"] == 2000
    assert again.traffic == {"bytes_up": 0, "bytes_down": 0}  # the next version's, from 0
    third = _coordinator(**settings)
    third.restore(again.snapshot())
    with pytest.raises(RoundClosed):  # d was dropped when the round filled: late, once
        _submit(third, "d", 0, 4.0)
    assert third.funnel.late_after_drop == 1 and _outcomes(third) == 4


def test_bytes_of_abandoned_rounds_count_toward_the_next_version():
    c = _coordinator(**SYNC)
    c.count_bytes(down=500)
    c.tick(11.0)  # nobody was selected: the round is abandoned
    assert c.round_id == 2
    for d in "ab":
        c.check_in(d, 12.0)
    c.count_bytes(up=10, down=5)
    _submit(c, "a", 0, 13.0)
    _submit(c, "b", 0, 13.0)
    c.take_aggregate(14.0)
    (published,) = [e for e in c.events if e["event"] == "version_published"]
    assert (published["bytes_down"], published["bytes_up"]) == (505, 10)


def test_the_task_pauses_at_its_maximum_version():
    c = _coordinator(**SYNC, target={"max_versions": 2})
    for version in range(2):
        assert not c.paused
        for d in "ab":
            c.check_in(d, 10.0 * version)
        for d in "ab":
            _submit(c, d, version, 10.0 * version + 1, key=str(version))
        c.take_aggregate(10.0 * version + 2)
    assert c.version == 2 and c.paused
    assert [e["event"] for e in c.events][-2:] == ["round_started", "max_versions_reached"]


# -- progress ---------------------------------------------------------------------------------
def _doc(
    created: list[float],
    heldout: list[float] | None = None,
    target=None,
    training_loss: list[float] | None = None,
) -> dict:
    versions = [
        {
            "version": v,
            "created": t,
            "metrics": {} if training_loss is None else {"mean_loss": training_loss[v]},
        }
        for v, t in enumerate(created)
    ]
    events = [
        {"event": "version_published", "version": v, "bytes_up": 10 * v, "bytes_down": 100 * v}
        for v in range(1, len(created))
    ]
    return {
        "task_id": "t",
        "version": len(created) - 1,
        "versions": versions,
        "events": events,
        "heldout_evaluation": [{"version": v, "accuracy": a} for v, a in enumerate(heldout or [])],
        "settings": {"target": target} if target else {},
    }


def test_time_per_version_is_the_mean_of_the_recent_intervals_and_bytes_come_from_events():
    p = task_progress(_doc([0.0, 10.0, 30.0, 60.0]))["progress"]
    assert [v["seconds"] for v in p["versions"]] == [None, 10.0, 20.0, 30.0]
    assert p["seconds_per_version"] == 20.0
    assert [(v["bytes_up"], v["bytes_down"]) for v in p["versions"]] == [
        (None, None),
        (10, 100),
        (20, 200),
        (30, 300),
    ]
    assert "target" not in p
    assert task_progress({"task_id": "t", "state": "failed", "error": "x"}) == {}


def test_time_to_the_maximum_is_versions_left_times_time_per_version():
    p = task_progress(_doc([0.0, 60.0, 120.0], target={"max_versions": 5}))["progress"]
    assert p["target"]["max_versions_to_go"] == {"versions": 3, "seconds": 180.0, "eta": 300.0}
    done = task_progress(_doc([0.0, 60.0, 120.0], target={"max_versions": 2}))["progress"]
    assert done["target"]["max_versions_to_go"]["versions"] == 0


def test_time_to_a_metric_target_follows_its_recent_trend():
    target = {"metric": "heldout.accuracy", "at_least": 0.5}
    going = task_progress(_doc([0.0, 10.0, 20.0], [0.1, 0.2, 0.3], target))["progress"]
    to_go = going["target"]["metric_to_go"]
    assert to_go["current"] == 0.3 and to_go["reached_at"] is None
    assert to_go["trend_per_version"] == pytest.approx(0.1)
    assert to_go["versions"] == 2 and to_go["seconds"] == 20.0
    reached = task_progress(_doc([0.0, 10.0, 20.0], [0.1, 0.6, 0.7], target))["progress"]
    assert reached["target"]["metric_to_go"]["reached_at"] == 1
    assert reached["target"]["metric_to_go"]["versions"] == 0
    falling = task_progress(_doc([0.0, 10.0, 20.0], [0.3, 0.2, 0.1], target))["progress"]
    assert falling["target"]["metric_to_go"]["versions"] is None  # no time to go: not there
    nothing = task_progress(_doc([0.0, 10.0], None, target))["progress"]
    assert nothing["target"]["metric_to_go"]["current"] is None


def test_a_lower_is_better_target_on_training_loss():
    target = {"metric": "training.mean_loss", "at_most": 2.0}
    p = task_progress(
        _doc([0.0, 5.0, 10.0, 15.0], target=target, training_loss=[6.0, 5.0, 4.0, 3.0])
    )["progress"]
    to_go = p["target"]["metric_to_go"]
    assert to_go["current"] == 3.0 and to_go["versions"] == 1 and to_go["seconds"] == 5.0
