"""Fixtures for the aggregator's tests: a real PostgreSQL server for the session (skipped,
with the reason, where PostgreSQL or psycopg is not installed), and `store_url`, which
runs a test once per backend: None (SQLite + files) and a fresh PostgreSQL database."""

from __future__ import annotations

import pytest

from .postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres():
    bindir, user, reason = PostgresServer.find()
    if reason:
        pytest.skip(reason)
    server = PostgresServer(bindir, user)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").new_database()
