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
    first = run(small_fleet(40, goal=5, versions=3, eval_every=1), tmp_path,
                centralized_epochs=0, show_progress=False)
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
    again = run(dataclasses.replace(config, max_versions=2), tmp_path, centralized_epochs=0,
                show_progress=False, fresh=True)
    assert again["timeline"][0]["version"] == 0 and again["versions"] == 2
    with pytest.raises(ValueError, match="pick one"):
        run(config, tmp_path, centralized_epochs=0, show_progress=False, resume=True, fresh=True)
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))
    assert cli(["simulate", "--config", str(tmp_path / "config.json"), "--out",
                str(tmp_path / "empty"), "--resume", "--centralized-epochs", "0"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
