"""A real Postgres for the server tests: ``PLASMA_TEST_POSTGRES`` (default: the local
server), one fresh Postgres schema (namespace) per test, dropped afterwards.

Without a reachable server the Postgres tests skip, unless ``CI`` is set: then they fail,
so a CI run cannot pass while silently testing nothing on Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from starlette.applications import Starlette

from notebooks import todos as todos_module
from plasma_nb import Mutators, Schema
from plasma_nb.server import create_app

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

_reachable: dict[str, str | None] = {}


def server_url() -> str:
    """The test server's URL; skips (or, with ``CI`` set, fails) the test if unreachable."""
    url = os.environ.get("PLASMA_TEST_POSTGRES") or DEFAULT_URL
    if url not in _reachable:
        _reachable[url] = _probe(url)
    problem = _reachable[url]
    if problem is not None:
        message = f"Postgres at {url} is unreachable ({problem}); set PLASMA_TEST_POSTGRES"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


def _probe(url: str) -> str | None:
    async def connect() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        await conn.close()

    try:
        # A fixture may already run inside the test's event loop: probe in a thread.
        with contextlib.closing(asyncio.new_event_loop()) as loop:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                pool.submit(loop.run_until_complete, connect()).result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def with_params(url: str, **params: str) -> str:
    joiner = "&" if urlsplit(url).query else "?"
    return url + joiner + "&".join(f"{k}={v}" for k, v in params.items())


@contextlib.asynccontextmanager
async def isolated_schema(base_url: str) -> AsyncIterator[str]:
    """A unique Postgres schema name; the schema (created by the storage) and everything
    in it are dropped at the end."""
    name = f"plasma_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        conn = await asyncpg.connect(base_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


class PgEnv:
    """One test's Postgres schema: apps on it, and operator connections into it."""

    def __init__(self, base_url: str, namespace: str) -> None:
        self.base_url = base_url
        self.namespace = namespace
        self.url = with_params(base_url, schema=namespace, application_name=namespace)
        self._apps: list[Starlette] = []
        self._conns: list[asyncpg.Connection] = []

    def app(self, schema: Schema = todos_module.schema,
            mutators: Mutators = todos_module.mutators, **options: Any) -> Starlette:
        app = create_app(schema, mutators, database=options.pop("database", self.url),
                         **options)
        self._apps.append(app)
        return app

    async def operator(self) -> asyncpg.Connection:
        """A connection like ``psql``'s, with the test's schema on its search path."""
        conn = await asyncpg.connect(
            self.base_url, server_settings={"search_path": f'"{self.namespace}"'}
        )
        self._conns.append(conn)
        return conn

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = await self.operator()
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            self._conns.remove(conn)
            await conn.close()

    async def close(self) -> None:
        for app in self._apps:
            await app.state.plasma.close()
        for conn in self._conns:
            await conn.close()


@pytest.fixture
async def pg() -> AsyncIterator[PgEnv]:
    """A fresh Postgres schema for the test (registered in conftest.py)."""
    base = server_url()
    async with isolated_schema(base) as namespace:
        env = PgEnv(base, namespace)
        try:
            yield env
        finally:
            await env.close()
