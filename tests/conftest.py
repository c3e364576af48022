"""Suite-wide options: `make soak` widens the bounded crash test; under CI, property tests
run derandomized (a fixed seed), so a submission's result does not depend on the draw.
The `bundle` fixture is the keyboard_cifg_tiny training bundle the server tests share
(a module that needs another bundle defines its own `bundle`)."""

from __future__ import annotations

import os

import pytest
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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """keyboard_cifg_tiny compiled once per test module (a module may change its files)."""
    from edge_sdk.bundle import Bundle
    from model_zoo.zoo import build_bundle

    return Bundle.load(build_bundle("keyboard_cifg_tiny", tmp_path_factory.mktemp("b") / "kb"))
