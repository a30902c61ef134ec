"""Fixtures for the tests that run inside Pyodide (see tests/pyodide/test_in_pyodide.py).

``indexedDB`` is fake-indexeddb's, installed globally by the Node harness: it lives
in memory for the length of the Node process, so every test uses fresh database
names. The example schema comes from the installed wheel (``plasma_nb/_notebooks``),
the same file that ``plasma-nb serve notebooks/todos.py`` serves.
"""

from __future__ import annotations

import importlib
import os
import sys
import uuid

import pytest

if sys.platform != "emscripten":  # pragma: no cover - guarded by tests/pyodide/conftest.py
    raise ImportError("tests/pyodide/inside runs inside Pyodide only")


@pytest.fixture(scope="session")
def todos():
    """The example schema module, as shipped in the wheel."""
    return importlib.import_module("plasma_nb._notebooks.todos")


@pytest.fixture
def idb_name() -> str:
    """A database name no other test uses."""
    return f"pyodide-test-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def server_url() -> str:
    url = os.environ.get("PLASMA_PYODIDE_SERVER_URL")
    if not url:
        pytest.skip("no sync server: PLASMA_PYODIDE_SERVER_URL is not set")
    return url


@pytest.fixture(scope="session")
def run_id() -> str:
    """Shared with the CPython side, which checks the server's rows afterwards."""
    return os.environ.get("PLASMA_PYODIDE_RUN_ID") or uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def client_api():
    """``plasma_nb.connect``, or a skip naming what is missing while the engine is written."""
    try:
        from plasma_nb.client import connect
    except ImportError as exc:
        pytest.skip(f"pending: the client engine is not importable yet ({exc})")
    return connect
