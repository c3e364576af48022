"""`edge-fl curve`: a finished run's stored versions re-scored on the whole held-out split."""

from __future__ import annotations

import json

import pytest

from edge_fl_cli import main as cli
from fleet.curve import first_reaching, pick_versions
from fleet.run import run

from .small_fleet import small_fleet


def test_picking_versions():
    committed = list(range(0, 13))
    assert pick_versions(committed, 5, None) == [0, 5, 10, 12]  # and the last
    assert pick_versions(committed, None, [12, 3, 3]) == [3, 12]
    with pytest.raises(ValueError, match=r"\[14\] were not committed"):
        pick_versions(committed, None, [3, 14])
    with pytest.raises(ValueError, match="every >= 1"):
        pick_versions(committed, 0, None)


def test_the_first_version_reaching_a_target():
    rows = [
        {"version": 0, "accuracy": 0.1},
        {"version": 5, "accuracy": 0.57},
        {"version": 10, "accuracy": 0.56},
        {"version": 15, "accuracy": 0.58},
    ]
    assert first_reaching(rows, "accuracy", 0.57)["version"] == 5
    assert first_reaching(rows, "accuracy", 0.59) is None
    assert first_reaching(rows, "leaf_accuracy", 0.5) is None


def test_a_runs_versions_rescored_match_its_final_figures(tmp_path, capsys):
    config = small_fleet(40, goal=5, versions=4, model="shakespeare_char_tiny", final_eval_all=True)
    report = run(config, tmp_path, centralized_epochs=0, show_progress=False)
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))
    curve = ["curve", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path)]
    assert cli([*curve, "--every", "2", "--leaf-positions", "300", "--target", "0.0"]) == 0
    rows = json.loads((tmp_path / "curve.json").read_text())
    assert [r["version"] for r in rows] == [0, 2, 4]
    assert rows[-1]["accuracy"] == report["final_all"]["accuracy"]  # the same model, same data
    assert rows[-1]["sim_hours"] <= report["sim_hours"]
    assert [r["sim_hours"] for r in rows] == sorted(r["sim_hours"] for r in rows)
    assert rows[0]["accuracy"] < rows[-1]["accuracy"]  # the fleet learned
    assert all(r["leaf_positions"] == 300 for r in rows)
    printed = capsys.readouterr().out
    assert "first >= 0.0% at version 0" in printed and "LEAF's metric" in printed
    assert cli([*curve, "--versions", "9"]) == 2
    assert "were not committed" in capsys.readouterr().err
