"""Bundles for SDK tests are compiled once per session (the build side is a test fixture
here; the SDK code under test never imports torch)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_keyboard_bundle(tmp_path_factory):
    from model_zoo.zoo import build_bundle

    return build_bundle("keyboard_cifg_tiny", tmp_path_factory.mktemp("kb") / "bundle", seed=0)


@pytest.fixture(scope="session")
def mlp_bundle(tmp_path_factory):
    from model_zoo.zoo import build_bundle

    return build_bundle("mlp", tmp_path_factory.mktemp("mlp") / "bundle", seed=0)
