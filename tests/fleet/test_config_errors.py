"""A simulation config with several mistakes is refused once, naming each with its path
(the config's own fields, the task settings', the profiles'), from Python, from a file,
and from `edge-fl simulate --config`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_sdk.protocol.errors import BadField
from fleet.config import SimulationConfig

MISTAKES = {
    "devices": 0,
    "codec": {"quantizer": "int5"},
    "backend": "threads",
    "task": {"mode": "synch", "sync": {"goal": 0}},
    "profiles": {"step_time": 2, "drop_during_upload": 3},
    "hours": -1,
    "dataa": {},
}


def _named(error: BadField) -> dict[str, str]:
    return {e.field: e.message for e in error.errors}


def test_every_mistake_of_a_config_is_named_at_once():
    with pytest.raises(BadField) as e:
        SimulationConfig.from_dict(MISTAKES)
    named = _named(e.value)
    assert set(named) == {
        "config",  # the unknown key 'dataa'
        "config.profiles",  # the unknown key 'step_time'
        "profiles.drop_during_upload",
        "codec",
        "task.mode",
        "task.sync.goal",
        "devices",
        "backend",
        "hours",
    }, str(e.value)
    assert "did you mean 'data'?" in named["config"]
    assert "did you mean 'step_time_s'?" in named["config.profiles"]
    assert named["devices"] == "must be an integer >= 1, got 0"
    assert named["task.sync.goal"] == "must be an integer >= 1, got 0"
    assert "'int5'" in named["codec"]
    assert isinstance(e.value, ValueError)  # what the CLIs catch


def test_one_mistake_is_one_plain_error():
    with pytest.raises(BadField) as e:
        SimulationConfig(devices=0)
    assert (
        e.value.errors == (e.value,) and str(e.value) == "devices: must be an integer >= 1, got 0"
    )


def test_simulate_prints_every_mistake(tmp_path):
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"devices": 0, "task": {"sync": {"goal": 0}}, "hours": 0}))
    done = subprocess.run(
        [sys.executable, "-m", "edge_fl_cli", "simulate", "--config", str(config)]
        + ["--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    for part in ("devices: must be", "task.sync.goal: must be", "hours: must be > 0"):
        assert part in done.stderr
    assert not (tmp_path / "out").exists()  # nothing half-created
