from __future__ import annotations

from datetime import datetime, time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.eligibility import (
    Context,
    Cooldown,
    DailyQuota,
    DeviceState,
    LocalTimeWindow,
    MaxThermal,
    MinBattery,
    MinFreeStorage,
    MinLocalExamples,
    ParticipationHistory,
    Policy,
    ReasonCounter,
    RequireCharging,
    RequireIdle,
    RequireUnmetered,
    default_policy,
)

from ..aggregator.fleet import good_state

NOW = 1_700_000_000.0


def _state(**overrides) -> DeviceState:
    """good_state (the server tests' phone) at 02:30 on 2026-11-23 with 80% battery."""
    base = dict(battery_level=0.8, local_time=datetime(2026, 11, 23, 2, 30))
    return good_state(**(base | overrides))


def test_a_good_state_is_allowed_by_the_default_policy():
    d = default_policy().decide(_state(), Context(NOW, local_examples=100))
    assert d.allowed and d.reasons == ()


def test_every_failing_predicate_is_reported():
    d = default_policy().decide(
        _state(charging=False, battery_level=0.21, network="metered"),
        Context(NOW, local_examples=100),
    )
    assert not d.allowed
    assert set(d.codes) == {"not_charging", "battery_low", "metered_network"}
    assert "battery 0.21 < 0.30" in d.reasons


@pytest.mark.parametrize(
    "predicate, state, context, code",
    [
        (RequireIdle(), _state(idle=False), Context(NOW), "not_idle"),
        (MaxThermal("fair"), _state(thermal="serious"), Context(NOW), "too_hot"),
        (MinFreeStorage(10), _state(free_storage_bytes=5), Context(NOW), "low_storage"),
        (MinLocalExamples(20), _state(), Context(NOW, local_examples=3), "too_few_examples"),
        (RequireUnmetered(), _state(network="none"), Context(NOW), "no_network"),
        (
            Cooldown(3600),
            _state(),
            Context(NOW, history=ParticipationHistory((NOW - 60,))),
            "cooldown",
        ),
    ],
)
def test_each_predicate_denies_with_its_code(predicate, state, context, code):
    d = predicate(state, context)
    assert not d.allowed and d.codes == (code,)


def test_cooldown_passes_once_enough_time_went_by():
    history = ParticipationHistory((NOW - 7200,))
    assert Cooldown(3600)(_state(), Context(NOW, history=history)).allowed


def test_daily_quota_counts_only_today_in_local_time():
    # local time 02:30 -> local midnight was 2.5 h ago
    history = ParticipationHistory((NOW - 3 * 3600, NOW - 3600, NOW - 600))
    state = _state()
    assert not DailyQuota(2)(state, Context(NOW, history=history)).allowed  # 2 today
    assert DailyQuota(3)(state, Context(NOW, history=history)).allowed


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 23), st.integers(0, 59), st.integers(0, 23), st.integers(0, 23))
def test_time_window_wrapping_midnight_is_the_complement_of_its_inverse(h, m, start, end):
    if start == end:
        return
    state = _state(local_time=datetime(2026, 1, 1, h, m))
    inside = LocalTimeWindow(time(start), time(end))(state, Context(NOW)).allowed
    outside = LocalTimeWindow(time(end), time(start))(state, Context(NOW)).allowed
    assert inside != outside


@settings(max_examples=100, deadline=None)
@given(
    st.booleans(),
    st.floats(0, 1),
    st.sampled_from(["unmetered", "metered", "none"]),
    st.booleans(),
    st.integers(0, 100),
)
def test_a_policy_allows_iff_every_predicate_allows(charging, battery, network, idle, examples):
    predicates = (
        RequireCharging(),
        MinBattery(0.3),
        RequireUnmetered(),
        RequireIdle(),
        MinLocalExamples(20),
    )
    state = _state(charging=charging, battery_level=battery, network=network, idle=idle)
    context = Context(NOW, local_examples=examples)
    decision = Policy(predicates).decide(state, context)
    singles = [p(state, context) for p in predicates]
    assert decision.allowed == all(s.allowed for s in singles)
    assert len(decision.codes) == sum(not s.allowed for s in singles)


def test_device_state_validates_when_built():
    with pytest.raises(ValueError, match="battery_level"):
        _state(battery_level=1.5)
    with pytest.raises(ValueError, match="network"):
        _state(network="wifi")


def test_history_serializes_and_tolerates_garbage():
    h = ParticipationHistory().record(NOW).record(NOW + 5)
    assert ParticipationHistory.from_bytes(h.to_bytes()) == h
    assert ParticipationHistory.from_bytes(b"\xff garbage") == ParticipationHistory()


def test_reason_counter_tallies_codes_only():
    counter = ReasonCounter()
    policy = default_policy()
    counter.record(policy.decide(_state(charging=False), Context(NOW, local_examples=100)))
    counter.record(
        policy.decide(_state(charging=False, idle=False), Context(NOW, local_examples=100))
    )
    assert counter.export() == {"not_charging": 2, "not_idle": 1}


def test_losing_eligibility_mid_training_aborts_with_its_reason_code(tiny_keyboard_bundle):
    import numpy as np

    from edge_sdk.bundle import Bundle
    from edge_sdk.eligibility import stop_check
    from edge_sdk.trainer import LocalTrainer, TrainingPlan

    states = iter([_state()] * 4 + [_state(charging=False)] * 100)
    counter = ReasonCounter()
    check = stop_check(
        default_policy(), lambda: next(states), lambda: Context(NOW, local_examples=100), counter
    )
    rng = np.random.default_rng(0)
    examples = [
        {"tokens": rng.integers(1, 500, 8), "targets": rng.integers(1, 500, 8)} for _ in range(40)
    ]
    result = LocalTrainer(Bundle.load(tiny_keyboard_bundle)).train(
        lambda e: examples, TrainingPlan(batch_size=4), stop_check=check
    )
    assert result.status == "stopped" and result.stop_reason == "not_charging"
    assert result.steps == 4 and not result.uploadable
    assert counter.export() == {"not_charging": 1}
