"""The sync-vs-async bench's reading of two runs: hours to a target, throughput, and the
same fleet for both runs."""

from __future__ import annotations

from bench.fl_comparisons import Fleet, hours_to, throughput


def _report(points, accepted=90, hours=3.0):
    return {
        "timeline": [{"sim_hours": h, "accuracy": a, "mean_loss": loss} for h, a, loss in points],
        "funnel": {"accepted": accepted},
        "sim_hours": hours,
    }


def test_hours_to_is_the_first_evaluation_at_or_past_the_target():
    report = _report([(0.0, 0.02, 9.0), (1.0, 0.08, 6.0), (2.0, 0.07, 5.5), (3.0, 0.10, 5.4)])
    timeline = report["timeline"]
    assert hours_to(timeline, "accuracy", 0.08, lower_is_better=False) == 1.0
    assert hours_to(timeline, "accuracy", 0.10, lower_is_better=False) == 3.0
    assert hours_to(timeline, "accuracy", 0.11, lower_is_better=False) is None
    assert hours_to(timeline, "mean_loss", 5.5, lower_is_better=True) == 2.0
    assert throughput(report) == 30.0


def test_both_runs_share_the_fleet_and_differ_only_in_the_schedule():
    fleet = Fleet()
    sync, fedbuff = fleet.sync_task(), fleet.async_task()
    assert sync["mode"] == "sync" and fedbuff["mode"] == "async"
    assert sync["plan"] == fedbuff["plan"]
    # async keeps as many devices busy as a sync round selects
    assert fedbuff["async_"]["concurrency"] == round(
        sync["sync"]["goal"] * sync["sync"]["overselect"]
    )
    assert fleet.model == "keyboard_cifg"
