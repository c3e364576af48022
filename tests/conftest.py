"""Suite-wide options: `make soak` widens the bounded crash test; under CI, property tests
run derandomized (a fixed seed), so a submission's result does not depend on the draw."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_addoption(parser):
    parser.addoption(
        "--kill-points",
        default="40",
        help="comma-separated counts of acknowledged uploads after which the "
        "crash test kills the aggregator (make soak passes many)",
    )


def pytest_generate_tests(metafunc):
    if "kill_after" in metafunc.fixturenames:
        points = [int(p) for p in metafunc.config.getoption("kill_points").split(",")]
        metafunc.parametrize("kill_after", points)
