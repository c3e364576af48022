"""The sync vs async comparison's logic (bench/fl_comparisons.py): held crossings of a
target, the common target below both plateaus, that the two runs share everything but
the task and weight updates alike, and (one slow test on a small fleet) re-running the
async side against a stored sync run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.fl_comparisons import (
    Fleet,
    async_config,
    common_target,
    compare_timelines,
    examples_aggregated,
    hours_held,
    hours_to,
    main,
    plateau,
    simulation_config,
    tail_spread,
)
from fleet.population import draw_profile


def _timeline(accuracies, losses=None, step_h=1.0):
    losses = losses or [5.0 - a * 10 for a in accuracies]
    return [
        {"version": i, "sim_hours": i * step_h, "accuracy": a, "mean_loss": m}
        for i, (a, m) in enumerate(zip(accuracies, losses, strict=True))
    ]


def test_a_spike_that_falls_back_is_not_a_held_crossing():
    t = _timeline([0.0, 0.05, 0.12, 0.07, 0.09, 0.11, 0.10, 0.12])
    assert hours_to(t, "accuracy", 0.10, False) == 2.0  # the spike at version 2
    assert hours_held(t, "accuracy", 0.10, False) == 5.0  # from version 5 on, all >= 0.10


def test_held_crossing_is_none_when_the_last_evaluation_is_below():
    t = _timeline([0.0, 0.11, 0.12, 0.09])
    assert hours_to(t, "accuracy", 0.10, False) == 1.0
    assert hours_held(t, "accuracy", 0.10, False) is None


def test_held_crossing_of_a_loss_counts_values_at_or_below():
    t = _timeline([0.0] * 5, losses=[6.0, 5.0, 4.0, 4.6, 4.5])
    assert hours_held(t, "mean_loss", 4.5, True) == 4.0  # 4.6 at hour 3 is above it
    assert hours_held(t, "mean_loss", 4.6, True) == 2.0
    assert hours_held(t, "mean_loss", 3.9, True) is None


def test_plateau_is_the_worst_of_the_last_quarter_and_both_runs_hold_the_common_target():
    sync = _timeline([0.0, 0.04, 0.08, 0.10, 0.11, 0.12, 0.115, 0.12, 0.125])
    fedbuff = _timeline([0.0, 0.08, 0.11, 0.13, 0.12, 0.135, 0.13, 0.125, 0.14])
    assert plateau(sync, "accuracy", False) == pytest.approx(0.115)  # hours 6..8
    assert plateau(fedbuff, "accuracy", False) == pytest.approx(0.125)
    target = common_target(sync, fedbuff, "accuracy", False)
    assert target == pytest.approx(0.115)
    for t in (sync, fedbuff):  # a floor of the tail is always held
        assert hours_held(t, "accuracy", target, False) is not None


def test_compare_timelines_reports_each_stage_and_the_ratio_of_held_crossings():
    sync = _timeline([0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.10, 0.10, 0.10])
    fedbuff = _timeline([0.0, 0.05, 0.09, 0.11, 0.10, 0.12, 0.11, 0.11, 0.12])
    result = compare_timelines(sync, fedbuff)
    top = [row for row in result["accuracy"] if row["stage"] == 1.0][0]
    assert top["target"] == pytest.approx(0.10)
    assert top["sync_hours"] == 5.0 and top["async_hours"] == 3.0
    assert top["ratio"] == pytest.approx(5 / 3)
    half = [row for row in result["accuracy"] if row["stage"] == 0.5][0]
    assert half["target"] == pytest.approx(0.05)
    assert half["sync_hours"] == 3.0 and half["async_hours"] == 1.0
    # an explicit target above what sync holds: no held crossing, no ratio
    high = compare_timelines(sync, fedbuff, target=0.115)["accuracy"][-1]
    assert high["sync_hours"] is None and high["ratio"] is None


def test_the_two_runs_differ_only_in_task_length_and_time():
    fleet = Fleet(model="keyboard_cifg_tiny", vocabulary_size=2000, devices=50)
    sync = simulation_config(fleet, fleet.sync_task(), 40, hours=336.0).to_json()
    fedbuff = simulation_config(fleet, fleet.async_task(), 480, hours=3.5).to_json()
    differ = {k for k in sync if sync[k] != fedbuff[k]}
    assert differ == {"task", "max_versions", "hours"}
    assert sync["task"]["plan"] == fedbuff["task"]["plan"]
    assert (sync["task"]["mode"], fedbuff["task"]["mode"]) == ("sync", "async")
    # the fleet draws every device's profile from the seed alone: the same devices
    profiles = [
        [draw_profile(c.profiles, np.random.default_rng(c.seed)) for _ in range(20)]
        for c in (
            simulation_config(fleet, fleet.sync_task(), 40, hours=336.0),
            simulation_config(fleet, fleet.async_task(), 480, hours=3.5),
        )
    ]
    assert profiles[0] == profiles[1]


def test_async_task_is_valid_fedbuff_settings():
    from aggregator.config import TaskSettings

    settings = TaskSettings.from_json(Fleet().async_task())
    assert settings.mode == "async"
    assert (settings.async_.concurrency, settings.async_.buffer_size) == (39, 10)
    assert settings.async_.staleness == "polynomial"
    # the aggregator's own defaults where the bench does not say otherwise
    assert (
        settings.async_.report_deadline_s
        == TaskSettings.from_json({"mode": "async"}).async_.report_deadline_s
    )


def test_reuse_needs_the_runs_it_reads(tmp_path):
    with pytest.raises(FileNotFoundError, match="report.json"):
        main(["--part", "sync_async", "--reuse", "--out", str(tmp_path)])


def test_tail_spread_is_the_standard_deviation_over_the_last_quarter():
    t = _timeline([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.10, 0.14])  # last quarter: hours 6..8
    assert tail_spread(t) == pytest.approx(np.std([0.5, 0.10, 0.14]))
    assert tail_spread(_timeline([0.0, 0.1, 0.2, 0.3, 0.3])) == 0.0


def test_the_async_run_gets_the_sync_runs_simulated_hours():
    fleet = Fleet(model="keyboard_cifg_tiny", vocabulary_size=2000, devices=50)
    config = async_config(fleet, {"versions": 12, "sim_hours": 1.25})
    assert config.hours == 1.25
    assert config.max_versions == 4 * 12 * fleet.goal // fleet.buffer_size  # a cap only
    assert config.task == fleet.async_task()


def _stored_sync_run(tmp_path, fleet):
    run = tmp_path / "sync"
    run.mkdir()
    config = simulation_config(fleet, fleet.sync_task(), 3, hours=336.0).to_json()
    (run / "report.json").write_text(json.dumps({"config": config, "versions": 3}))
    return tmp_path


def test_rerunning_async_needs_a_sync_run_of_the_same_fleet(tmp_path):
    with pytest.raises(FileNotFoundError, match="report.json"):
        main(["--part", "sync_async", "--rerun-async", "--out", str(tmp_path)])
    out = _stored_sync_run(tmp_path, Fleet(pretrain=True))
    # the stored sync run started from the pre-trained model; this fleet would not
    with pytest.raises(ValueError, match=r"other settings \(pretrain\)"):
        main(["--part", "sync_async", "--rerun-async", "--out", str(out)])
    with pytest.raises(SystemExit):  # --reuse and --rerun-async exclude each other
        main(["--part", "sync_async", "--reuse", "--rerun-async", "--out", str(out)])


def test_the_benchs_sync_round_and_fresh_async_buffer_weight_updates_alike():
    """The same fresh updates (staleness 0) make the same mean delta under the bench's
    sync task and its async task: both weight an update by its example count."""
    from aggregator.config import TaskSettings
    from aggregator.coordinator import Outcome, TaskCoordinator
    from aggregator.stages import WeightedMean
    from edge_sdk.protocol import UpdateMeta

    fleet = Fleet(goal=10, buffer_size=10)
    rng = np.random.default_rng(3)
    updates = [
        (f"d{i}", int(rng.integers(1, 200)), {"w": rng.normal(size=5).astype(np.float32)})
        for i in range(10)
    ]
    means = []
    for task in (fleet.sync_task(), fleet.async_task()):
        c = TaskCoordinator(
            "t", TaskSettings.from_json(task), 0, WeightedMean(), np.random.default_rng(0), 0.0
        )
        for device, _, _ in updates:
            c.check_in(device, 0.0)
        for device, n, delta in updates:
            meta = UpdateMeta("t", "m", 0, device, f"{device}-0", n)
            admission = c.admit(meta, 1.0)
            assert not isinstance(admission, Outcome) and admission.weight == n
            c.accept(meta, delta, admission)
        mean, measurements = c.take_aggregate(1.0)
        assert measurements["total_weight"] == sum(n for _, n, _ in updates)
        means.append(mean["w"])
    expected = sum(n * d["w"] for _, n, d in updates) / sum(n for _, n, _ in updates)
    np.testing.assert_allclose(means[0], expected, rtol=1e-5)
    np.testing.assert_allclose(means[1], means[0], rtol=1e-6)


TINY = [
    "--part", "sync_async", "--model", "keyboard_cifg_tiny", "--vocabulary-size", "500",
    "--devices", "30", "--goal", "5", "--concurrency", "7", "--buffer-size", "3",
    "--max-staleness", "6", "--eval-examples", "100", "--versions", "3",
]  # fmt: skip


@pytest.mark.slow  # three small fleet runs: about a minute
def test_rerunning_async_repeats_it_against_the_stored_sync_run(tmp_path):
    first = main([*TINY, "--out", str(tmp_path)])["sync_async"]
    sync_report = (tmp_path / "sync" / "report.json").read_text()
    again = main([*TINY, "--out", str(tmp_path), "--rerun-async"])["sync_async"]
    assert (tmp_path / "sync" / "report.json").read_text() == sync_report  # not re-run
    # the same fleet, seed and simulated hours: the same async run
    assert again["async"]["timeline"] == first["async"]["timeline"]
    assert again["async"]["sim_hours"] == pytest.approx(first["sync"]["sim_hours"])
    reused = main([*TINY, "--out", str(tmp_path), "--reuse"])["sync_async"]
    assert reused["accuracy"] == again["accuracy"]
    for side in ("sync", "async"):
        figures = reused[side]
        # the examples the store's versions aggregated, per accepted update
        examples = examples_aggregated(tmp_path / side)
        assert examples > 0
        assert figures["examples_per_update"] == pytest.approx(examples / figures["accepted"])
        assert figures["examples_per_hour"] == pytest.approx(examples / figures["sim_hours"])
