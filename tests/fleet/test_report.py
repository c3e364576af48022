"""The report's plots: what the accuracy plot's title says about the network."""

from __future__ import annotations

from fleet.report import network_line


def test_network_line_gives_the_fleets_bytes_down_and_up_and_per_participation():
    report = {
        "client": {"bytes_down": 1_414_000_000, "bytes_up": 126_400_000, "participations": 1000}
    }
    line = network_line(report)
    assert "1,414.0 MB down" in line and "126.4 MB up" in line
    assert "1.41 MB down, 0.126 MB up each" in line


def test_network_line_without_participations_gives_the_totals_only():
    line = network_line({"client": {"bytes_down": 0, "bytes_up": 0, "participations": 0}})
    assert line == "network, whole fleet: 0.0 MB down, 0.0 MB up"
