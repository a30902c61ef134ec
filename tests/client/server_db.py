"""The database behind the end-to-end tests' server, on either backend.

``server_db`` (a fixture, registered in conftest.py) is a SQLite file under ``tmp_path`` or a
fresh Postgres schema on ``PLASMA_TEST_POSTGRES`` (dropped afterwards), so the same test runs a
client against a server on each. Postgres follows tests/server/pg.py: unreachable means skip,
unless ``CI`` is set, then the test fails.

The tests look into the database synchronously (``rows()`` in ``eventually(lambda: ...)``), so
Postgres is read through one connection owned by a private event loop in a thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from tests.server.pg import isolated_schema, server_url, with_params

__all__ = ["ServerDB", "server_backend", "server_db"]

T = TypeVar("T")

TODO_ROWS = "SELECT id, title, done FROM todos"


class ServerDB:
    """One test's server database: its URL, and an operator's view into it."""

    def __init__(self, backend: str, url: str, *, path: Path | None = None,
                 base_url: str | None = None, namespace: str | None = None) -> None:
        self.backend = backend
        self.url = url
        self.path = path
        self._base_url = base_url
        self.namespace = namespace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: asyncpg.Connection | None = None

    def __repr__(self) -> str:
        return f"<ServerDB {self.backend} {self.url}>"

    # -- Postgres through a private loop ----------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, daemon=True,
                                            name="server-db")
            self._thread.start()
            self._loop = loop
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            assert self._base_url is not None
            self._conn = await asyncpg.connect(
                self._base_url, server_settings={"search_path": f'"{self.namespace}"'}
            )
        return self._conn

    async def _fetch(self, sql: str) -> list[tuple[Any, ...]]:
        conn = await self._connection()
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        except asyncpg.UndefinedTableError:  # the server has not created its tables yet
            return []

    async def _execute(self, sql: str) -> None:
        await (await self._connection()).execute(sql)

    async def _drop(self) -> None:
        await (await self._connection()).execute(
            f'DROP SCHEMA IF EXISTS "{self.namespace}" CASCADE'
        )

    # -- what the tests call --------------------------------------------------------------------

    def rows(self, sql: str = TODO_ROWS) -> dict[Any, tuple[Any, ...]]:
        """``{first column: the other columns}`` of a query; ``{}`` before the tables exist.
        Booleans come back as 0/1 on SQLite and False/True on Postgres (equal in Python)."""
        if self.backend == "postgres":
            return {r[0]: r[1:] for r in self._run(self._fetch(sql))}
        assert self.path is not None
        if not self.path.exists():
            return {}
        conn = sqlite3.connect(self.path)
        try:
            return {r[0]: tuple(r[1:]) for r in conn.execute(sql)}
        except sqlite3.OperationalError:  # not created yet
            return {}
        finally:
            conn.close()

    def execute(self, sql: str) -> None:
        """Operator SQL, committed at once (write it so that both engines accept it)."""
        if self.backend == "postgres":
            self._run(self._execute(sql))
            return
        assert self.path is not None
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                conn.execute(sql)
        finally:
            conn.close()

    async def wipe(self) -> None:
        """Lose every table (close the servers using it first); the next server starts anew.

        Awaited, not blocking: a server in this loop may still hold a lock to give up."""
        if self.backend == "postgres":
            await asyncio.to_thread(self._run, self._drop())
            return
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(f"{self.path}{suffix}").unlink, missing_ok=True)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            if self._conn is not None:
                await self._conn.close()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server_backend(request: pytest.FixtureRequest) -> str:
    """The server's storage backend in the end-to-end tests."""
    return str(request.param)


@pytest.fixture
async def server_db(server_backend: str, tmp_path: Path) -> AsyncIterator[ServerDB]:
    """The server database of one test, on ``server_backend``."""
    if server_backend == "sqlite":
        path = tmp_path / "server.db"
        yield ServerDB("sqlite", f"sqlite:///{path}", path=path)
        return
    base = server_url()
    async with isolated_schema(base) as namespace:
        db = ServerDB("postgres", with_params(base, schema=namespace), base_url=base,
                      namespace=namespace)
        try:
            yield db
        finally:
            db.close()
