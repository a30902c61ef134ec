"""Postgres helpers of the backend: transient errors, the push connection, and the LISTEN
connection for pokes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["PUSH_IDLE", "Conn", "Listener", "Pooled", "PushConnection", "is_closed",
           "is_transient"]

#: Seconds the push connection keeps the transaction it began with the last COMMIT
#: open for the next push; then it is rolled back, so that an idle instance shows no
#: open transaction (and ``now()`` in a push is at most this much early).
PUSH_IDLE = 1.0

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


class PushConnection:
    """The connection an instance's pushes run on, one at a time (under ``lock``).

    A push ends with ``COMMIT; BEGIN`` and calls ``committed``: ``begun`` then says the
    next push's transaction is open already (it holds no lock and no snapshot). After
    ``PUSH_IDLE`` seconds without a push it is rolled back. A connection found closed is
    replaced by ``get``; one that failed is left to the caller to roll back or terminate.
    """

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self.lock = asyncio.Lock()
        self.conn: asyncpg.Connection | None = None
        self.begun = False
        self._idle_from = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def pid(self) -> int | None:
        conn = self.conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    async def get(self) -> asyncpg.Connection:
        """The connection, connected anew if it was lost (hold ``lock``)."""
        conn = self.conn
        if conn is not None and not conn.is_closed():
            return conn
        self.conn, self.begun, self._closed = None, False, False
        self.conn = await self._connect()
        return self.conn

    def committed(self) -> None:
        """The push committed and began the next transaction."""
        self.begun = True
        loop = asyncio.get_running_loop()
        self._idle_from = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(PUSH_IDLE, self._idle_due)

    def _idle_due(self) -> None:
        self._timer = None
        if not self.begun or self._closed:
            return
        loop = asyncio.get_running_loop()
        left = self._idle_from + PUSH_IDLE - loop.time()
        if left > 0:
            self._timer = loop.call_later(left, self._idle_due)
        elif self._task is None or self._task.done():
            self._task = loop.create_task(self._end_idle_transaction())

    async def _end_idle_transaction(self) -> None:
        """Roll back the transaction the last push began, unless a push came since."""
        async with self.lock:
            conn = self.conn
            if not self.begun or conn is None:
                return
            if asyncio.get_running_loop().time() - self._idle_from < PUSH_IDLE:
                self._idle_due()
                return
            self.begun = False
            try:
                await asyncio.wait_for(conn.execute("ROLLBACK"), timeout=5.0)
            except (Exception, asyncio.CancelledError) as exc:
                # Lost or stuck: the next push connects anew, and answers as usual.
                conn.terminate()
                self.conn = None
                if isinstance(exc, asyncio.CancelledError):
                    raise

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        conn: asyncpg.Connection | None = None
        try:
            # A push under way finishes first, as the pool lets its connections finish.
            async with asyncio.timeout(10.0), self.lock:
                conn, self.conn = self.conn, None
                if conn is not None:
                    await conn.close()
        except TimeoutError:
            conn, self.conn = conn or self.conn, None
            if conn is not None:
                conn.terminate()


class Listener:
    """One dedicated connection that LISTENs on a channel.

    ``changed`` is set when a notification arrives, when the connection is lost,
    and again once it is back (anything may have committed in between, so every
    client gets poked). A connection that stops answering is found by a periodic
    ``SELECT 1`` and replaced.

    Notifications sent by the backend that ``own_pid`` names (the instance's push
    connection) are not reported: the instance pokes after its own pushes already,
    and a second, redundant check would cost a query and delay the next poke.
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
        self.own_pid: Callable[[], int | None] = lambda: None
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

    def _notified(self, conn: Any, pid: int, channel: str, payload: Any) -> None:
        if pid != self.own_pid():
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
