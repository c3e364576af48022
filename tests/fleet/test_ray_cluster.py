"""The million-device lazy fleet on a Ray cluster of two nodes started with `ray start`
(a head and a worker, one CPU each): the same config as on one machine, its training on
actors spread over both nodes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .test_lazy_fleet import MILLION, lazy_config

pytestmark = pytest.mark.slow  # starting two Ray nodes alone takes ~20-40 s here


def test_the_million_device_config_runs_on_a_two_node_ray_cluster(tmp_path):
    pytest.importorskip("ray")
    from fleet.ray_cluster import ROOT, local_ray_cluster

    with local_ray_cluster() as cluster:
        config = lazy_config(backend="ray", ray={"address": cluster.address, "actors": 2})
        (tmp_path / "million.json").write_text(json.dumps(config.to_json()))
        # the driver as a user runs it, with the cluster's address in the config
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "edge_fl_cli.py"),
                "simulate",
                "--config",
                str(tmp_path / "million.json"),
                "--out",
                str(tmp_path / "out"),
                "--centralized-epochs",
                "0",
            ],
            env=cluster.env,
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        # where the actors ran: each reported its process session, one per node
        sessions = {w["session"] for w in report["training"]["workers"]}
    assert report["devices"] == MILLION and report["versions"] == 2
    assert report["population"]["kind"] == "lazy"
    assert report["training"]["backend"] == "ray"
    assert report["training"]["remote_trainings"] >= report["funnel"]["accepted"] >= 14
    # one actor per node: each node has one CPU and each actor takes one
    assert sessions == set(cluster.sessions)
    assert report["final"]["mean_loss"] < report["timeline"][0]["mean_loss"]
