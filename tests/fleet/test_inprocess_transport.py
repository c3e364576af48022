"""The in-process transport reads what it sends as the server would off the wire."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from aggregator.app import ServerConfig, make_service
from edge_sdk.clock import FakeClock
from edge_sdk.protocol import generate_signing_key, public_key_of
from edge_sdk.transport import ServerRejected
from fleet.inprocess import InProcessTransport


def test_requests_the_http_path_refuses_are_refused_in_process_too(tmp_path):
    config = ServerConfig(str(tmp_path / "data"), "admin-token-0123456789", {"p": "secret"})
    service = make_service(config, FakeClock(), np.random.default_rng(0))
    transport = InProcessTransport(service)

    async def scenario():
        await transport.enroll("p", "secret", public_key_of(generate_signing_key()))
        assert transport.device_id.startswith("dev-")
        with pytest.raises(ServerRejected) as e:  # a lone surrogate is not text
            await transport.report_failure("kb", "broken \ud800")
        assert e.value.status == 400 and e.value.code == "malformed_json"
        with pytest.raises(ServerRejected) as e:
            await transport.enroll("p", "secret", b"short")
        assert e.value.code == "bad_field" and e.value.details["field"] == "enroll.public_key"
        answer = await transport.check_in()
        assert set(answer) == {"retry_at", "retry_after_s"}  # no task: come back later

    try:
        asyncio.run(scenario())
    finally:
        service.store.close()
