"""Fixtures of the reliability tests (docs/reliability.md): the server database on SQLite
and on Postgres (tests/client/server_db.py), client replicas under ``tmp_path``, and
``plasma-nb serve tests/reliability/bank.py`` processes that a test may SIGKILL and start
again on the same database and port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Replicas under tmp_path (autouse), as in the client tests.
from tests.client.conftest import plasma_home  # noqa: F401

# The server's database, on SQLite and on Postgres.
from tests.client.server_db import ServerDB, server_backend, server_db  # noqa: F401
from tests.reliability.serving import BankServer


@pytest.fixture
def bank_server(
    server_db: ServerDB,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[BankServer]:
    """A running ``plasma-nb serve`` of the bank schema on ``server_db``; stopped (by its
    PID) at the end, whatever happened."""
    server = BankServer(server_db.url, tmp_path, name=request.node.originalname)
    server.start()
    server.wait_ready()
    try:
        yield server
    finally:
        server.stop()
