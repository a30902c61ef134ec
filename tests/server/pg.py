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
from urllib.parse import urlsplit

import asyncpg
import pytest

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
