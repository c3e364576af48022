"""A stopped run goes on from its newest version (`--resume`); a previous run's state is
never dropped unless asked (`--fresh`)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from edge_fl_cli import main as cli
from fleet.run import run

from .small_fleet import small_fleet


def test_a_resumed_run_goes_on_from_the_newest_version(tmp_path):
    first = run(
        small_fleet(40, goal=5, versions=3, eval_every=1),
        tmp_path,
        centralized_epochs=0,
        show_progress=False,
    )
    v3 = (tmp_path / "server" / "models" / "fleet-task" / "v3.eflm").read_bytes()
    more = small_fleet(40, goal=5, versions=5, eval_every=1)
    resumed = run(more, tmp_path, centralized_epochs=0, show_progress=False, resume=True)
    assert resumed["versions"] == 5
    assert resumed["timeline"][:4] == first["timeline"]  # the stopped run's evaluations
    assert [p["version"] for p in resumed["timeline"]] == [0, 1, 2, 3, 4, 5]
    hours = [p["sim_hours"] for p in resumed["timeline"]]
    assert hours == sorted(hours) and hours[4] > first["sim_hours"] - 1e-9
    assert resumed["timeline"][4]["bytes_up"] > first["timeline"][-1]["bytes_up"]
    # it trained on from v3 (not from scratch): v3 is as the first run committed it
    assert (tmp_path / "server" / "models" / "fleet-task" / "v3.eflm").read_bytes() == v3
    assert resumed["final"]["mean_loss"] < first["timeline"][0]["mean_loss"]
    logged = [json.loads(line) for line in (tmp_path / "timeline.jsonl").read_text().splitlines()]
    assert logged == resumed["timeline"]


def test_a_previous_run_is_kept_unless_asked(tmp_path, capsys):
    config = small_fleet(30, goal=4, versions=1)
    run(config, tmp_path, centralized_epochs=0, show_progress=False)
    with pytest.raises(FileExistsError, match="--resume continues it, --fresh discards it"):
        run(config, tmp_path, centralized_epochs=0, show_progress=False)
    again = run(
        dataclasses.replace(config, max_versions=2),
        tmp_path,
        centralized_epochs=0,
        show_progress=False,
        fresh=True,
    )
    assert again["timeline"][0]["version"] == 0 and again["versions"] == 2
    with pytest.raises(ValueError, match="pick one"):
        run(config, tmp_path, centralized_epochs=0, show_progress=False, resume=True, fresh=True)
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))
    assert (
        cli(
            [
                "simulate",
                "--config",
                str(tmp_path / "config.json"),
                "--out",
                str(tmp_path / "empty"),
                "--resume",
                "--centralized-epochs",
                "0",
            ]
        )
        == 2
    )
    assert "nothing to resume" in capsys.readouterr().err


def test_a_run_killed_mid_way_resumes(tmp_path):
    """kill -9 while rounds are in flight, then --resume: the committed versions stand and
    the run goes on to its max_versions."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = small_fleet(40, goal=5, versions=40, eval_every=1)
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))
    out = tmp_path / "run"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from edge_fl_cli import main; sys.exit(main(sys.argv[1:]))",
            "simulate",
            "--config",
            str(tmp_path / "config.json"),
            "--out",
            str(out),
            "--centralized-epochs",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    models = out / "server" / "models" / "fleet-task"
    deadline = time.monotonic() + 240
    while (
        not (models / "v2.eflm").exists() and child.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert (models / "v2.eflm").exists()
    committed = {p.name: p.read_bytes() for p in models.glob("v*.eflm")}
    stopped_at = max(int(name[1:-5]) for name in committed)
    assert stopped_at < 40
    more = dataclasses.replace(config, max_versions=stopped_at + 2)
    report = run(more, out, centralized_epochs=0, show_progress=False, resume=True)
    assert report["versions"] == stopped_at + 2
    for name, data in committed.items():
        assert (models / name).read_bytes() == data
    versions = [p["version"] for p in report["timeline"]]
    assert versions == sorted(set(versions)) and versions[-1] == stopped_at + 2


def test_a_torn_last_timeline_line_is_dropped_and_a_damaged_one_refused(tmp_path):
    from fleet.simulator import ResumePoint

    run(
        small_fleet(30, goal=4, versions=2, eval_every=1),
        tmp_path,
        centralized_epochs=0,
        show_progress=False,
    )
    log = tmp_path / "timeline.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines) + '\n{"version": 3, "sim_h')  # died mid-write
    assert [p["version"] for p in ResumePoint.read(tmp_path).timeline] == [0, 1, 2]
    log.write_text("\n".join([lines[0], "{oops", lines[2]]) + "\n")
    with pytest.raises(ValueError, match="line 2 is damaged"):
        ResumePoint.read(tmp_path)
