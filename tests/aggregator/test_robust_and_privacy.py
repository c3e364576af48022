from __future__ import annotations

import numpy as np
import pytest
from dp_accounting import dp_event, rdp

from aggregator.aggregation import AggregationConfig, build_aggregation
from aggregator.config import DPSettings, SyncSettings, TaskSettings
from aggregator.privacy import DPMean, PrivacyAccountant
from aggregator.robust import CoordinateMedian, RejectOutliers, TrimmedMean
from aggregator.stages import Clip, WeightedMean, stateful_stages


def _d(*values):
    return {"w": np.array(values, np.float32)}


def test_trimmed_mean_drops_the_extremes_per_coordinate():
    acc = TrimmedMean(trim=0.2, buffer=10).start()
    for v in [1, 2, 3, 4, 100]:
        acc.add(_d(v, -v), 1.0)
    mean, m = acc.result()
    np.testing.assert_allclose(mean["w"], [3.0, -3.0])  # 1 and 100 trimmed
    assert m["updates"] == 5


def test_median_resists_a_minority_of_poisoned_updates():
    rng = np.random.default_rng(0)
    acc = CoordinateMedian(buffer=20).start()
    for i in range(40):
        honest = rng.normal(1.0, 0.1, 8)
        acc.add({"w": (honest if i % 10 else -50 * honest).astype(np.float32)}, 1.0)
    mean, m = acc.result()
    assert np.all(np.abs(mean["w"] - 1.0) < 0.2) and m["median"]["blocks"] == 2


def test_outliers_by_norm_are_rejected_and_reported():
    acc = RejectOutliers(3.0, WeightedMean(), warmup=3).start()
    for _ in range(5):
        acc.add(_d(1.0, 0.0), 1.0)
    measure = acc.add(_d(100.0, 0.0), 1.0)
    mean, m = acc.result()
    assert measure["rejected_outlier"] and m["outliers"] == {"rejected": 1, "seen": 6}
    np.testing.assert_allclose(mean["w"], [1.0, 0.0])


def test_dp_mean_clips_and_adds_calibrated_noise_with_a_fixed_denominator():
    stage = DPMean(
        clip_norm=1.0, noise_multiplier=0.0, expected_count=4, rng=np.random.default_rng(0)
    )
    acc = stage.start()
    acc.add(_d(3.0, 4.0), 7.0)  # norm 5 -> clipped to 1; weights are ignored
    acc.add(_d(0.3, 0.4), 1.0)
    mean, m = acc.result()
    np.testing.assert_allclose(mean["w"], (np.array([0.6, 0.8]) + [0.3, 0.4]) / 4, rtol=1e-6)
    noisy = DPMean(
        clip_norm=2.0, noise_multiplier=1.5, expected_count=10, rng=np.random.default_rng(1)
    )
    acc = noisy.start()
    acc.add({"w": np.zeros(200_000, np.float32)}, 1.0)
    mean, m = acc.result()
    assert m["dp"]["noise_std"] == 3.0
    assert abs(mean["w"].std() - 0.3) < 0.005  # z * C / n


def test_adaptive_clipping_moves_towards_the_target_quantile_and_persists():
    stage = DPMean(
        clip_norm=10.0,
        noise_multiplier=0.0,
        expected_count=10,
        rng=np.random.default_rng(0),
        adaptive_quantile=0.5,
        adaptive_lr=0.5,
    )
    norms = np.linspace(0.5, 1.5, 10)  # median 1.0
    for _ in range(40):
        acc = stage.start()
        for n in norms:
            acc.add(_d(n, 0.0), 1.0)
        acc.result()
    assert 0.8 < stage.clip_norm < 1.25
    stack = build_aggregation(
        AggregationConfig(
            clip_norm=50.0,
            dp={
                "clip_norm": 3.0,
                "noise_multiplier": 1.0,
                "expected_count": 5,
                "adaptive_quantile": 0.5,
            },
        ),
        np.random.default_rng(0),
    )
    (dp_stage,) = stateful_stages(stack)
    dp_stage.load_state({"clip_norm": 0.7})
    assert dp_stage.state() == {"clip_norm": 0.7} and isinstance(stack, Clip)


def test_accountant_matches_the_library_for_a_documented_configuration():
    # 100 sync rounds of 100 devices from a population of 10,000, z = 1.0, delta = 1e-5
    settings = TaskSettings(
        sync=SyncSettings(goal=100),
        dp=DPSettings(clip_norm=0.5, noise_multiplier=1.0, population=10_000),
    )
    ours = PrivacyAccountant(1.0, settings.sampling_rate(), 1e-5).epsilon(100)
    library = rdp.RdpAccountant()
    library.compose(dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.0)), 100)
    assert ours == pytest.approx(library.get_epsilon(1e-5), rel=1e-12)
    assert PrivacyAccountant(1.0, 0.01, 1e-5).epsilon(200) > ours > 0


def test_robust_and_dp_are_exclusive_and_validated():
    with pytest.raises(ValueError, match="not both"):
        AggregationConfig(robust={"kind": "median"}, dp={"clip_norm": 1.0})
    with pytest.raises(ValueError, match="population"):
        TaskSettings.from_json({"dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}})
    with pytest.raises(ValueError, match="trim"):
        TrimmedMean(trim=0.6)


def test_a_dp_task_reports_epsilon_per_version_and_stops_at_its_budget(tmp_path):
    from aggregator.service import AggregatorService
    from aggregator.store import Device, SqliteStore
    from edge_sdk.clock import FakeClock
    from edge_sdk.protocol import (
        UpdateMeta,
        UpdatePipeline,
        encode_update,
        generate_signing_key,
        public_key_of,
    )
    from model_zoo.zoo import build_bundle

    bundle = build_bundle("mlp", tmp_path / "mlp")
    service = AggregatorService(
        SqliteStore(tmp_path / "state"), FakeClock(), np.random.default_rng(0), {"p": "s"}
    )
    dp = DPSettings(
        clip_norm=0.1, noise_multiplier=1.5, population=20, target_delta=1e-5, epsilon_budget=3.0
    )
    service.create_task(
        "t", str(bundle), TaskSettings(sync=SyncSettings(goal=5, overselect=1.0), dp=dp)
    )
    task = service.tasks["t"]
    key = generate_signing_key()
    rng = np.random.default_rng(0)
    for i in range(200):
        if task.coordinator.paused:
            break
        device = Device(f"d{i}", "p", public_key_of(key))
        service.check_in(device, "t")
        if device.device_id not in task.coordinator.assigned:
            continue
        delta = {
            s["name"]: rng.normal(0, 1, s["shape"]).astype(np.float32) for s in task.record.specs
        }
        meta = UpdateMeta(
            "t", task.record.model_id, task.coordinator.version, device.device_id, f"k{i}", 3
        )
        service.submit_update(
            device,
            "t",
            encode_update(
                delta, task.record.specs, meta, UpdatePipeline(), signing_key=key, rng=rng
            ),
        )
    history = service.history("t")
    epsilons = [v["metrics"]["epsilon"] for v in history["versions"][1:]]
    assert len(epsilons) >= 3  # q = 5 / 20: about 3.05 after 8 versions
    assert epsilons == sorted(epsilons) and epsilons[-1] >= 3.0 > epsilons[-2]
    assert task.coordinator.paused
    assert any(e["event"] == "privacy_budget_reached" for e in history["events"])
    assert history["versions"][1]["metrics"]["measurements"]["dp"]["noise_std"] == pytest.approx(
        0.15
    )
