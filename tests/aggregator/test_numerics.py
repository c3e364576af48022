from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.aggregation import AggregationConfig, build_aggregation
from aggregator.numerics import RunningSum, global_norm, hinge_staleness, polynomial_staleness
from aggregator.server_optimizers import FedAdam, FedAvg, FedAvgM, FedYogi, build_server_optimizer
from aggregator.stages import Clip, WeightedMean


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(0.1, 10)), min_size=1, max_size=20))
def test_running_sum_mean_equals_the_direct_weighted_mean(pairs):
    acc = RunningSum()
    for value, weight in pairs:
        acc.add({"w": np.full(4, value, np.float32)}, weight)
    values = np.array([np.float32(v) for v, _ in pairs], np.float64)
    weights = np.array([w for _, w in pairs])
    np.testing.assert_allclose(
        acc.mean()["w"], (values * weights).sum() / weights.sum(), rtol=1e-5, atol=1e-6
    )


class Probe:
    """An inner stage that records what reached it."""

    def __init__(self):
        self.seen = []

    def start(self):
        probe = self

        class Acc:
            def add(self, delta, weight):
                probe.seen.append((global_norm(delta), weight))
                return {"probe": True}

            def result(self):
                return {"w": np.zeros(2, np.float32)}, {"probe_updates": len(probe.seen)}

        return Acc()


def test_clip_delegates_clipped_updates_to_its_inner_stage():
    probe = Probe()
    acc = Clip(1.0, probe).start()
    m = acc.add({"w": np.array([3.0, 4.0], np.float32)}, 2.0)
    acc.add({"w": np.array([0.3, 0.4], np.float32)}, 1.0)
    assert m["clipped"] and m["norm"] == pytest.approx(5.0) and m["probe"]
    assert probe.seen[0] == (pytest.approx(1.0), 2.0) and probe.seen[1][0] == pytest.approx(0.5)
    _, measurements = acc.result()
    assert measurements["clip"] == {"clipped": 1, "seen": 2, "norm": 1.0}
    assert measurements["probe_updates"] == 2


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 100), st.floats(0.01, 100))
def test_clipping_never_increases_the_norm(scale, bound):
    probe = Probe()
    Clip(bound, probe).start().add({"w": np.array([scale, -scale], np.float32)}, 1.0)
    norm = probe.seen[0][0]
    assert norm <= bound * (1 + 1e-5) and norm <= scale * np.sqrt(2) * (1 + 1e-5)


def test_composition_root_builds_the_stack():
    assert isinstance(build_aggregation(AggregationConfig()), WeightedMean)
    stack = build_aggregation(AggregationConfig(clip_norm=2.0))
    assert isinstance(stack, Clip) and isinstance(stack.inner, WeightedMean)


def test_staleness_functions():
    assert polynomial_staleness(0) == 1.0 and polynomial_staleness(3) == pytest.approx(0.5)
    assert hinge_staleness(4) == 1.0 and hinge_staleness(5) == pytest.approx(1 / 11)


def test_fedavg_with_lr_one_adds_the_mean_delta():
    p = {"w": np.array([1.0, 2.0], np.float32)}
    new, state = FedAvg(1.0).step(p, {"w": np.array([0.5, -1.0], np.float32)}, {})
    np.testing.assert_allclose(new["w"], [1.5, 1.0])
    assert p["w"][0] == 1.0  # inputs untouched


def test_fedavgm_accumulates_momentum():
    opt = FedAvgM(lr=1.0, momentum=0.5)
    p = {"w": np.zeros(1, np.float32)}
    p, s = opt.step(p, {"w": np.ones(1, np.float32)}, {})
    p, s = opt.step(p, {"w": np.ones(1, np.float32)}, s)
    np.testing.assert_allclose(p["w"], [1.0 + 1.5])


@pytest.mark.parametrize(
    "opt",
    [
        FedAdam(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3),
        FedYogi(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3),
    ],
)
def test_adaptive_first_step_follows_reddi_et_al(opt):
    d = np.array([0.2, -0.4], np.float64)
    new, state = opt.step({"w": np.zeros(2, np.float32)}, {"w": d.astype(np.float32)}, {})
    m = 0.1 * d
    v0 = 1e-6
    v = v0 - 0.01 * d * d * np.sign(v0 - d * d) if opt.yogi else 0.99 * v0 + 0.01 * d * d
    np.testing.assert_allclose(new["w"], 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-5)


def test_unknown_server_optimizer_is_refused():
    with pytest.raises(ValueError, match="fedadam"):
        build_server_optimizer("sgd")
