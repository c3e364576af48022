from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aggregator.config import AsyncSettings, SyncSettings, TaskSettings
from aggregator.coordinator import Assignment, ComeBackLater, Outcome, TaskCoordinator
from aggregator.errors import NotSelected, RoundClosed, StaleVersion
from aggregator.numerics import polynomial_staleness
from aggregator.stages import WeightedMean
from edge_sdk.protocol import UpdateMeta


def _coordinator(mode="sync", now=0.0, **kw):
    settings = TaskSettings(
        mode=mode,
        sync=SyncSettings(**kw.pop("sync", {})),
        async_=AsyncSettings(**kw.pop("async_", {})),
        **kw,
    )
    return TaskCoordinator("t", settings, 0, WeightedMean(), np.random.default_rng(0), now)


def _meta(device, version, key=None, n=10):
    return UpdateMeta("t", "m", version, device, key or f"{device}-{version}", n)


def _submit(c, meta, delta, now):
    """The service's path: admit (it persists the update here), then accept."""
    admission = c.admit(meta, now)
    return admission if isinstance(admission, Outcome) else c.accept(meta, delta, admission)


def _delta(value):
    return {"w": np.full(3, value, np.float32)}


def test_sync_overselects_then_steers_the_rest_away():
    c = _coordinator(sync={"goal": 10, "overselect": 1.3})
    results = [c.check_in(f"d{i}", 1.0) for i in range(20)]
    assert sum(isinstance(r, Assignment) for r in results) == 13
    later = [r for r in results if isinstance(r, ComeBackLater)]
    assert len({r.retry_at for r in later}) > 1  # spread, not one thundering instant
    assert all(31.0 <= r.retry_at <= 301.0 for r in later)


def test_sync_round_commits_at_goal_with_30_percent_dropouts():
    c = _coordinator(sync={"goal": 10, "overselect": 1.3})
    devices = [f"d{i}" for i in range(13)]
    for d in devices:
        c.check_in(d, 1.0)
    dropped = devices[:3]  # 3 of 13 selected never report (about 25%); one more fails
    c.report_failure(devices[3], "eligibility_lost", 2.0)
    for i, d in enumerate(devices[4:]):
        _submit(c, _meta(d, 0), _delta(float(i)), 3.0)
    assert c.accepted == 9 and not c.ready_to_commit()
    c.tick(1000.0)  # report deadline: 9 >= 70% of 10 -> commit what we have
    assert c.ready_to_commit()
    mean, measurements = c.take_aggregate(1000.0)
    np.testing.assert_allclose(mean["w"], np.mean(range(9)))
    assert c.version == 1 and measurements["updates"] == 9
    assert (
        c.funnel.dropped["deadline"] == len(dropped) and c.funnel.dropped["eligibility_lost"] == 1
    )


def test_sync_round_below_minimum_is_abandoned_and_rerun():
    c = _coordinator(sync={"goal": 10, "min_fraction": 0.8})
    for i in range(13):
        c.check_in(f"d{i}", 1.0)
    for i in range(5):
        _submit(c, _meta(f"d{i}", 0), _delta(1.0), 2.0)
    c.tick(10_000.0)
    assert c.version == 0 and c.round_id == 2 and c.accepted == 0
    assert any(e["event"] == "round_abandoned" for e in c.events)
    assert isinstance(c.check_in("d0", 10_001.0), Assignment)


def test_updates_are_weighted_by_examples():
    c = _coordinator(sync={"goal": 2, "overselect": 1.0})
    c.check_in("a", 0.0)
    c.check_in("b", 0.0)
    _submit(c, _meta("a", 0, n=1), _delta(0.0), 1.0)
    _submit(c, _meta("b", 0, n=3), _delta(4.0), 1.0)
    mean, _ = c.take_aggregate(1.0)
    np.testing.assert_allclose(mean["w"], 3.0)


def test_retries_are_never_double_counted():
    c = _coordinator(sync={"goal": 3})
    c.check_in("a", 0.0)
    first = _submit(c, _meta("a", 0, key="k"), _delta(1.0), 1.0)
    again = _submit(c, _meta("a", 0, key="k"), _delta(1.0), 2.0)
    assert first.status == "accepted" and again.status == "duplicate" and c.accepted == 1


def test_rejections_name_the_problem():
    c = _coordinator(sync={"goal": 3})
    with pytest.raises(NotSelected):
        _submit(c, _meta("stranger", 0), _delta(1.0), 1.0)
    c.check_in("a", 0.0)
    with pytest.raises(StaleVersion) as err:
        _submit(c, _meta("a", 5), _delta(1.0), 1.0)
    assert err.value.details["current_version"] == 0
    c.check_in("b", 0.0)
    with pytest.raises(RoundClosed):
        _submit(c, _meta("b", 0), _delta(1.0), 100_000.0)


def test_async_versions_every_buffer_with_staleness_weights():
    c = _coordinator("async", async_={"concurrency": 4, "buffer_size": 2, "max_staleness": 1})
    for d in "abcd":
        assert isinstance(c.check_in(d, 0.0), Assignment)
    assert isinstance(c.check_in("e", 0.0), ComeBackLater)  # concurrency reached
    _submit(c, _meta("a", 0), _delta(1.0), 1.0)
    out = _submit(c, _meta("b", 0), _delta(1.0), 1.0)
    assert out.ready_to_commit
    c.take_aggregate(1.0)
    assert c.version == 1
    late = _submit(c, _meta("c", 0), _delta(1.0), 2.0)  # one version behind
    assert late.staleness == 1 and late.weight == 10
    c.check_in("e", 3.0)
    _submit(c, _meta("e", 1), _delta(1.0), 3.0)
    mean, _ = c.take_aggregate(3.0)  # version 2 now; d trained on 0: 2 behind > max 1
    # FedBuff's discount is absolute: one fresh and one stale delta of 1 average to
    # (1 + 1/sqrt(2)) / 2, not 1
    np.testing.assert_allclose(mean["w"], (1 + polynomial_staleness(1)) / 2, rtol=1e-6)
    with pytest.raises(StaleVersion):
        _submit(c, _meta("d", 0), _delta(1.0), 4.0)


class CoordinatorMachine(RuleBasedStateMachine):
    """Random interleavings of check-ins, uploads, retries, failures and time."""

    def __init__(self):
        super().__init__()
        self.mode = "sync"
        self.c = None
        self.now = 0.0
        self.versions = []
        self.keys_counted: dict[str, int] = {}
        self.discounts: list[float] = []  # of the updates in the open round/buffer

    @rule(mode=st.sampled_from(["sync", "async"]))
    def start(self, mode):
        if self.c is None:
            self.mode = mode
            self.c = _coordinator(
                mode,
                sync={"goal": 3, "overselect": 1.5},
                async_={"concurrency": 5, "buffer_size": 3, "max_staleness": 2},
            )

    @rule(device=st.integers(0, 8))
    def check_in(self, device):
        if self.c:
            self.c.check_in(f"d{device}", self.now)

    @rule(device=st.integers(0, 8), lag=st.integers(0, 3), retry=st.booleans())
    def upload(self, device, lag, retry):
        if not self.c:
            return
        assigned = self.c.assigned.get(f"d{device}")
        version = assigned[0] if assigned else max(0, self.c.version - lag)
        key = f"d{device}-r{self.c.round_id}" + ("" if retry else f"-{self.now}")
        try:
            out = _submit(self.c, _meta(f"d{device}", version, key), _delta(1.0), self.now)
        except (NotSelected, StaleVersion, RoundClosed):
            return
        if out.status == "accepted":
            self.keys_counted[key] = self.keys_counted.get(key, 0) + 1
            assert 0 <= out.staleness <= (2 if self.mode == "async" else 0)
            self.discounts.append(
                polynomial_staleness(out.staleness) if self.mode == "async" else 1.0
            )
        if self.c.ready_to_commit():
            mean, measurements = self.c.take_aggregate(self.now)
            # every accepted update carried delta 1.0 and 10 examples: the mean is the mean
            # of their staleness discounts (1 each in sync rounds)
            np.testing.assert_allclose(mean["w"], np.mean(self.discounts), rtol=1e-6)
            self.discounts = []
            self.versions.append(self.c.version)

    @rule(dt=st.floats(0, 400))
    def advance(self, dt):
        self.now += dt
        if self.c:
            self.c.tick(self.now)
            if self.c.ready_to_commit():
                mean, _ = self.c.take_aggregate(self.now)
                np.testing.assert_allclose(mean["w"], np.mean(self.discounts), rtol=1e-6)
                self.discounts = []
                self.versions.append(self.c.version)

    @invariant()
    def versions_only_increase(self):
        assert self.versions == sorted(set(self.versions))

    @invariant()
    def each_idempotency_key_counted_at_most_once(self):
        assert all(n == 1 for n in self.keys_counted.values())

    @invariant()
    def accepted_never_exceeds_assigned_capacity(self):
        if self.c and self.c.settings.mode == "sync":
            assert self.c.accepted <= 5  # ceil(3 * 1.5)


TestCoordinatorMachine = CoordinatorMachine.TestCase
TestCoordinatorMachine.settings = hsettings(max_examples=60, stateful_step_count=40, deadline=None)


def test_async_lets_a_device_contribute_again_to_the_same_buffer():
    c = _coordinator("async", async_={"concurrency": 2, "buffer_size": 5})
    for j in range(3):
        c.check_in("a", float(j))
        assert _submit(c, _meta("a", 0, key=f"a{j}"), _delta(1.0), float(j)).status == "accepted"
    assert c.accepted == 3


def test_claimed_weights_are_capped_per_task():
    c = _coordinator(sync={"goal": 2, "overselect": 1.0}, max_examples=100)
    c.check_in("a", 0.0)
    c.check_in("b", 0.0)
    assert _submit(c, _meta("a", 0, n=10**15), _delta(1.0), 1.0).weight == 100
    assert _submit(c, _meta("b", 0, n=100), _delta(3.0), 1.0).weight == 100
    mean, _ = c.take_aggregate(1.0)
    np.testing.assert_allclose(mean["w"], 2.0)


def test_the_same_key_from_two_devices_is_two_updates():
    c = _coordinator(sync={"goal": 3, "overselect": 1.0})
    for d in "ab":
        c.check_in(d, 0.0)
    assert _submit(c, _meta("a", 0, key="k"), _delta(1.0), 1.0).status == "accepted"
    assert _submit(c, _meta("b", 0, key="k"), _delta(1.0), 1.0).status == "accepted"
    assert _submit(c, _meta("b", 0, key="k"), _delta(1.0), 1.0).status == "duplicate"
    assert c.accepted == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refused_version_keeps_the_model_and_starts_over(mode):
    c = _coordinator(
        mode, sync={"goal": 2, "overselect": 1.0}, async_={"buffer_size": 2, "concurrency": 3}
    )
    for d in "abc":
        c.check_in(d, 0.0)
    _submit(c, _meta("a", 0), _delta(1.0), 1.0)
    _submit(c, _meta("b", 0), _delta(np.inf), 1.0)
    mean, _ = c.close_aggregate()
    assert not np.isfinite(mean["w"]).all()
    c.refuse_version("aggregate_not_finite", 2.0)
    assert c.version == 0 and c.round_id == 2 and c.accepted == 0 and not c.ready_to_commit()
    (event,) = [e for e in c.events if e["event"] == "version_refused"]
    assert event == {
        "event": "version_refused",
        "round": 1,
        "version": 1,
        "accepted": 2,
        "reason": "aggregate_not_finite",
        "at": 2.0,
    }
    if mode == "sync":
        with pytest.raises(RoundClosed):  # the refused round is over for its devices
            _submit(c, _meta("a", 0, key="again"), _delta(2.0), 3.0)
        for d in "ac":  # a new round of version 0
            assert isinstance(c.check_in(d, 3.0), Assignment)
    else:  # the device still in flight goes on; the others may take part again
        assert set(c.assigned) == {"c"}
        assert isinstance(c.check_in("a", 3.0), Assignment)
    _submit(c, _meta("c", 0), _delta(2.0), 3.0)
    _submit(c, _meta("a", 0, key="again"), _delta(2.0), 3.0)
    mean, _ = c.take_aggregate(4.0)
    np.testing.assert_allclose(mean["w"], 2.0)
    assert c.version == 1


def test_a_refused_version_puts_adaptive_clipping_back():
    from aggregator.aggregation import build_aggregation

    settings = TaskSettings.from_json(
        {
            "sync": {"goal": 2, "overselect": 1.0},
            "dp": {
                "clip_norm": 1.0,
                "noise_multiplier": 1e-6,
                "population": 100,
                "adaptive_quantile": 0.5,
            },
        }
    )
    rng = np.random.default_rng(0)
    c = TaskCoordinator("t", settings, 0, build_aggregation(settings.aggregation(), rng), rng, 0.0)
    for d in "ab":
        c.check_in(d, 0.0)
        _submit(c, _meta(d, 0), _delta(0.01), 1.0)  # both under the clip: it adapts down
    c.close_aggregate()
    assert c.stage.clip_norm < 1.0
    c.refuse_version("aggregate_not_finite", 2.0)
    assert c.stage.clip_norm == 1.0 and c.snapshot()["stages"] == [{"clip_norm": 1.0}]


def test_async_assignments_expire_at_their_deadlines_between_and_after_quiet_ticks():
    c = _coordinator("async", async_={"concurrency": 10, "report_deadline_s": 10.0})
    assert isinstance(c.check_in("a", 0.0), Assignment)  # due at 10
    c.tick(5.0)  # nothing due yet
    assert isinstance(c.check_in("b", 6.0), Assignment)  # due at 16
    c.tick(9.0)
    assert set(c.assigned) == {"a", "b"}
    c.tick(11.0)
    assert set(c.assigned) == {"b"} and c.funnel.dropped["deadline"] == 1
    restored = _coordinator("async", async_={"concurrency": 10, "report_deadline_s": 10.0})
    restored.restore(c.snapshot())  # a restored coordinator looks at every deadline
    restored.tick(17.0)
    c.tick(17.0)
    assert c.assigned == {} == restored.assigned
    with pytest.raises(RoundClosed):  # an upload after its deadline, with no tick between
        c.check_in("c", 20.0)
        c.admit(_meta("c", 0), 31.0)
