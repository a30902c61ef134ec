"""Fixtures of the server tests: apps on real SQLite files under ``tmp_path``, in-process
HTTP clients, and real ``plasma-nb serve`` processes (helpers.py has the rest).

Tests built on ``make_app`` (``app``, ``client``, ``lab_client``) run on both backends: the
``backend`` fixture is ``sqlite`` (a file under ``tmp_path``) or ``postgres`` (a fresh
Postgres schema on ``PLASMA_TEST_POSTGRES``, see pg.py). Tests that look inside the SQLite
file through ``db_path`` run on SQLite only."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from notebooks import todos as todos_module
from plasma_nb import Mutators, Schema
from plasma_nb.server import create_app
from tests.server.helpers import (
    TODOS_FILE,
    Served,
    free_port,
    http,
    lab_mutators,
    lab_schema,
    plasma_command,
    run_env,
)

# A fresh Postgres schema per test (pg.py), for the Postgres backend tests.
from tests.server.pg import (
    isolated_schema,
    pg,  # noqa: F401
    server_url,
    with_params,
)

# The gate of the slow schema's mutator (slow_app.py), for the Postgres push tests.
from tests.server.slow_app import gate  # noqa: F401

AppFactory = Callable[..., Starlette]


@pytest.fixture
def todos() -> ModuleType:
    """The example schema module, notebooks/todos.py."""
    return todos_module


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend that ``make_app`` builds apps on."""
    return str(request.param)


@pytest.fixture
async def database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The test's database URL: ``db_path``'s file, or a Postgres schema dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'p.db'}"
        return
    base = server_url()
    async with isolated_schema(base) as name:
        yield with_params(base, schema=name)


@pytest.fixture
def db_path(backend: str, tmp_path: Path) -> Path:
    """The SQLite file of the apps (tests using it look inside: SQLite only)."""
    if backend != "sqlite":
        pytest.skip("looks inside the SQLite file")
    return tmp_path / "p.db"


@pytest.fixture
async def make_app(database: str, tmp_path: Path) -> AsyncIterator[AppFactory]:
    """Build apps (the example schema on ``database``, blobs under ``tmp_path/blobs``,
    unless told otherwise); every app built is closed at the end of the test."""
    apps: list[Starlette] = []
    default = database

    def build(schema: Schema = todos_module.schema, mutators: Mutators = todos_module.mutators,
              *, database: str | None = None, **options: Any) -> Starlette:
        options.setdefault("blobs", f"file:{tmp_path / 'blobs'}")
        app = create_app(schema, mutators, database=database or default, **options)
        apps.append(app)
        return app

    yield build
    for app in apps:
        await app.state.plasma.close()


@pytest.fixture
def app(make_app: AppFactory) -> Starlette:
    """The example app (notebooks/todos.py) on ``db_path``."""
    return make_app()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with http(app) as c:
        await c.get("/healthz")  # creates the database, so tests can look inside at once
        yield c


@pytest.fixture
async def lab_client(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app serving the lab schema (mutators that write, then fail)."""
    async with http(make_app(lab_schema, lab_mutators)) as c:
        await c.get("/healthz")
        yield c


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start ``plasma-nb serve`` processes on 127.0.0.1 with cwd ``tmp_path``; each one
    still running at the end is killed, even when the test failed."""
    started: list[Served] = []

    def start(*args: str, schema: str = str(TODOS_FILE), db: str = "sqlite:///p.db") -> Served:
        port = free_port()
        proc = subprocess.Popen(
            plasma_command("serve", schema, "--db", db, "--host", "127.0.0.1",
                           "--port", str(port), *args),
            cwd=tmp_path, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        served = Served(proc, port)
        started.append(served)
        served.wait_ready()
        return served

    yield start
    for served in started:
        served.stop()
