"""schemathesis against the OpenAPI document generated from the message types (the one
/openapi.json serves): generated requests to every operation, with valid device and
admin credentials, never get a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from aggregator.config import TaskSettings
from aggregator.routes import OPENAPI
from edge_sdk.clock import FakeClock
from edge_sdk.protocol import generate_signing_key, public_key_of

from .fleet import ADMIN, SECRET, ThreadedServer

SCHEMA = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on 127.0.0.1 in a background thread, with a task and a device."""
    from model_zoo.zoo import build_bundle

    tmp = tmp_path_factory.mktemp("schema")
    bundle = build_bundle("mlp", tmp / "mlp")
    with ThreadedServer(
        tmp / "data",
        FakeClock(),
        rate_per_s=1e6,
        burst=10**6,
        # no throttles: generated wrong enrollment secrets would otherwise
        # soon get only 429s
        auth_failures_per_s=1e6,
        auth_failure_burst=10**6,
    ) as srv:
        srv.service.create_task("kb", str(bundle), TaskSettings())
        device = srv.service.enroll("keyboard", SECRET, public_key_of(generate_signing_key()))
        yield srv.url, device["token"]


@SCHEMA.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case, server):
    url, token = server
    if case.path_parameters and "task_id" in case.path_parameters and len(repr(case.body)) % 2:
        case.path_parameters["task_id"] = "kb"  # half the calls reach the real task
    headers = {"Authorization": f"Bearer {token}", "X-Admin-Token": ADMIN}
    response = case.call(base_url=url, headers=headers, timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
