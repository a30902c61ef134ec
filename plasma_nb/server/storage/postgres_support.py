"""Postgres helpers of the backend: transient errors, and the LISTEN connection for pokes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["Conn", "Listener", "Pooled", "is_closed", "is_transient"]

Pooled: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | Pooled"

logger = logging.getLogger("plasma_nb.server")

# Serialization failure, deadlock, commit outcome unknown, lock or statement timeout,
# too many connections or out of resources, shutdown and restarts.
_TRANSIENT_STATES = frozenset(
    {"40001", "40P01", "40003", "55P03", "57014", "57P01", "57P02", "57P03"}
)
_TRANSIENT_CLASSES = frozenset({"08", "53"})


def is_transient(exc: BaseException, conn: Conn | None = None) -> bool:
    """True for failures that a retry may not meet: answer 503, commit nothing."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state in _TRANSIENT_STATES or state[:2] in _TRANSIENT_CLASSES
    if isinstance(exc, asyncpg.InternalClientError):
        # The protocol lost track, as when the server ends the session between two
        # statements: nothing was sent, and the connection is not used again.
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return conn is not None and is_closed(conn)
    return False


def is_closed(conn: Conn) -> bool:
    """Whether ``conn`` is gone (a pooled one is detached from the pool when lost)."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


class Listener:
    """One dedicated connection that LISTENs on a channel.

    ``changed`` is set when a notification arrives, when the connection is lost,
    and again once it is back (anything may have committed in between, so every
    client gets poked). A connection that stops answering is found by a periodic
    ``SELECT 1`` and replaced.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        channel: str,
        *,
        keepalive: float = 10.0,
        retry: float = 0.5,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self.keepalive = keepalive
        self.retry = retry
        self.changed = asyncio.Event()
        self.connections = 0  # how many times a LISTEN connection was established
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connection(self) -> asyncpg.Connection | None:
        return self._conn

    async def start(self) -> None:
        """Listen now (so nothing committed after ``start`` returns is missed), then
        keep listening in the background."""
        await self._listen()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    async def _listen(self) -> None:
        conn = await self._connect()
        try:
            self._lost = asyncio.Event()
            lost = self._lost
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self._channel, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self.connections += 1

    def _notified(self, *args: Any) -> None:
        self.changed.set()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=1.0)
            except (Exception, asyncio.CancelledError):
                conn.terminate()
                raise

    async def _run(self) -> None:
        while True:
            await self._watch()
            self.changed.set()
            with contextlib.suppress(Exception):
                await self._close()
            delay = self.retry
            while True:
                try:
                    await self._listen()
                    break
                except Exception as exc:
                    logger.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            logger.info("LISTEN connection re-established: poking every client")
            self.changed.set()

    async def _watch(self) -> None:
        """Return when the connection is lost or stops answering."""
        conn = self._conn
        while conn is not None and not conn.is_closed():
            try:
                async with asyncio.timeout(self.keepalive):
                    await self._lost.wait()
                return
            except TimeoutError:
                pass
            try:
                await conn.execute("SELECT 1", timeout=self.keepalive)
            except Exception:
                logger.warning("the LISTEN connection stopped answering; reconnecting")
                return
