"""Fixtures for the client engine's tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.client.app import counters, mutators, schema, todos

# The end-to-end tests' server database, on SQLite and on Postgres (server_db.py).
from tests.client.server_db import server_backend, server_db  # noqa: F401


@pytest.fixture
def app() -> SimpleNamespace:
    return SimpleNamespace(schema=schema, mutators=mutators, todos=todos, counters=counters)


@pytest.fixture(autouse=True)
def plasma_home(tmp_path, monkeypatch):
    """Keep SQLite replicas out of the real home directory."""
    home = tmp_path / "plasma_home"
    monkeypatch.setenv("PLASMA_NB_HOME", str(home))
    return home
