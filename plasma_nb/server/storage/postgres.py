"""The Postgres backend (asyncpg): several server instances on one database.

Semantics are the SQLite backend's (DESIGN section 6); what differs is how they
are kept under concurrency:

- every version is assigned under the row lock of ``_plasma_meta``, held until
  commit (a push takes it first; outside a push the change-log trigger takes it
  at the transaction's first write), so versions commit in order and a pull,
  one REPEATABLE READ snapshot, never misses a change that commits later with a
  lower version;
- a push is one READ COMMITTED transaction: its first round trip is BEGIN plus
  the version bump, then one query loads the group and its clients, then the
  mutators' own statements run, and the bookkeeping (clients' last mutation ids,
  recorded errors, NOTIFY) travels with the COMMIT. That is one round trip more
  than a bare transaction doing the same writes, whatever the number of mutations;
- commits anywhere (other instances, ``psql``) NOTIFY ``plasma_poke``
  (``plasma_poke_NAME`` for a schema other than ``public``); one
  dedicated connection LISTENs and reconnects when it is lost;
- serialization failures, deadlocks, lock timeouts and lost connections raise
  ``Unavailable`` (503 with Retry-After) with nothing committed.

URL: ``postgresql://user@host:5432/db?schema=NAME``; ``schema`` (default
``public``, created if missing) is the Postgres namespace of every table, so
several apps or test runs can share one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from ...core.dialect import PostgresDialect, quote
from ...core.errors import BadRequest, ClientStateNotFound, SchemaError
from ...core.mutators import Context, Mutators
from ...core.protocol import (
    ClearOp,
    DelOp,
    MutationErrorInfo,
    PatchOp,
    PullRequest,
    PullResponse,
    PushRequest,
    PutOp,
)
from ...core.schema import ColumnType, Schema, Table
from ..push import NeedSavepoints, PushOutcome, process_push
from . import postgres_sql as sql
from .base import Storage
from .postgres_push import PostgresPushSession, unavailable
from .postgres_support import Conn, Listener, Pooled, is_closed, is_transient

__all__ = ["PostgresStorage"]


async def _keep_session(conn: Conn) -> None:
    """Pool reset: asyncpg already rolled back any open transaction; the sessions
    change nothing else, so skip the default reset query (a round trip per use)."""


def _wire_converters(t: Table) -> list[tuple[int, str, Callable[[Any], Any] | None]]:
    # asyncpg returns booleans natively; timestamps are stored as canonical text.
    return [
        (i, c.name, json.loads if c.type is ColumnType.JSON else None) for i, c in enumerate(t)
    ]


class PostgresStorage(Storage):
    """The backend of ``postgresql://`` URLs. ``max_connections`` bounds each instance's
    pool; ``lock_timeout`` (seconds) bounds how long a push waits for a lock and a
    request for a connection: past it the answer is 503, to be retried."""

    def __init__(
        self,
        url: str,
        schema: Schema,
        mutators: Mutators,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        lock_timeout: float = 10.0,
    ) -> None:
        self.url, self.namespace = sql.split_url(url)
        self.schema = schema
        self.mutators = mutators
        self.dialect = PostgresDialect()
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.lock_timeout = lock_timeout
        # Pushes take turns on the counter's lock anyway: queueing them here first keeps
        # the pool's other connections free for pulls.
        self._push_lock = asyncio.Lock()
        self._pool: asyncpg.Pool | None = None
        self._listener: Listener | None = None
        self._opened = False
        setting = sql.literal(sql.version_setting(self.namespace))
        self._begin_sql = sql.begin_push_sql(self.namespace, int(lock_timeout * 1000))
        self._load_sql = (
            f"SELECT 0, NULL::text, NULL::text, current_setting({setting})::bigint "
            "UNION ALL SELECT 1, NULL, owner, NULL FROM _plasma_client_groups WHERE id = $1 "
            "UNION ALL SELECT 2, id, client_group_id, last_mutation_id FROM _plasma_clients "
            "WHERE id = ANY($2::text[])"
        )
        self._pull_sql = {t._name: (*sql.pull_sql(t), _wire_converters(t)) for t in schema}
        self._pk_index = {t._name: list(t._columns).index(t._pk.name) for t in schema}

    # -- connections -------------------------------------------------------------

    def _settings(self) -> dict[str, str]:
        settings = {"standard_conforming_strings": "on"}
        if "application_name" not in dict(parse_qsl(urlsplit(self.url).query)):
            settings["application_name"] = "plasma_nb"
        return settings

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the Postgres storage is not open")
        return self._pool

    async def open(self) -> None:
        if self._opened:
            return
        settings = self._settings()
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=self.min_connections,
                max_size=self.max_connections,
                server_settings={**settings, "search_path": quote(self.namespace)},
                reset=_keep_session,
            )
        except Exception as exc:
            if is_transient(exc):
                raise unavailable(exc) from None
            raise
        try:
            async with pool.acquire() as conn:
                await self._setup(conn)
            listener = Listener(
                lambda: asyncpg.connect(self.url, server_settings=settings),
                sql.poke_channel(self.namespace),
            )
            await listener.start()
        except BaseException:
            await pool.close()
            raise
        self._pool, self._listener, self._opened = pool, listener, True

    async def _setup(self, conn: Conn) -> None:
        ns = self.namespace
        async with conn.transaction():
            # Instances starting together take turns.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('plasma_nb'), hashtext($1))", ns
            )
            if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", ns):
                await conn.execute(f"CREATE SCHEMA {quote(ns)}")
            await conn.execute(sql.internal_ddl(ns))
            now_ms = int(time.time() * 1000)
            # Versions start from the clock, so a recreated database never hands out
            # a cookie lower than one a client already holds.
            await conn.execute(
                f"INSERT INTO {quote(ns)}._plasma_meta (id, version, min_version) "
                "VALUES (1, $1, $1) ON CONFLICT (id) DO NOTHING",
                now_ms,
            )
            for t in self.schema:
                await self._create_or_migrate(conn, t)
                function, triggers = sql.trigger_ddl(t, ns)
                await conn.execute(function)
                existing = {r[0] for r in await conn.fetch(sql.TRIGGERS_SQL, ns, t._name)}
                for statement in triggers.splitlines():
                    name = statement.split()[2]
                    if name not in existing:
                        await conn.execute(statement)
            await conn.execute(
                f"UPDATE {quote(ns)}._plasma_meta SET schema_version = $1 "
                "WHERE schema_version IS DISTINCT FROM $1",
                self.schema.version,
            )

    async def _create_or_migrate(self, conn: Conn, t: Table) -> None:
        qualified = f"{quote(self.namespace)}.{quote(t._name)}"
        existing = {
            name: sql.declared_type(type_name, collation)
            for name, type_name, collation in await conn.fetch(
                sql.COLUMNS_SQL, self.namespace, t._name
            )
        }
        if not existing:
            defs = ", ".join(sql.column_def(self.dialect, c) for c in t)
            await conn.execute(f"CREATE TABLE {qualified} ({defs})")
            return
        for c in t:
            wanted = self.dialect.sql_type(c).upper()
            if c.name in existing:
                if existing[c.name] != wanted:
                    raise SchemaError(
                        f"{c.qualname} is {existing[c.name]} in the database but the schema "
                        f"declares {c.type.value} ({wanted}); change it with a new column instead"
                    )
                continue
            if not c.has_default:
                raise SchemaError(
                    f"cannot add column {c.qualname} to the existing database: a new column "
                    "must be nullable or have a default"
                )
            await conn.execute(
                f"ALTER TABLE {qualified} ADD COLUMN {sql.column_def(self.dialect, c)}"
            )

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        if self._listener is not None:
            await self._listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10.0)
            except TimeoutError:
                pool.terminate()

    async def _acquire(self) -> Pooled:
        try:
            return await self.pool.acquire(timeout=self.lock_timeout)
        except Exception as exc:
            if is_transient(exc):
                raise unavailable(exc) from None
            raise

    @staticmethod
    async def _abandon(conn: Conn, exc: BaseException) -> None:
        """Roll back after a failure; a connection in doubt is closed instead."""
        if is_closed(conn):
            return
        try:
            if not isinstance(exc, asyncio.CancelledError):
                await asyncio.wait_for(conn.execute("ROLLBACK"), timeout=5.0)
                return
        except Exception:
            pass
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()

    # -- push ----------------------------------------------------------------------

    async def push(self, request: PushRequest, ctx: Context, *, limit: int) -> PushOutcome:
        _check_storable(request.client_group_id, *(m.client_id for m in request.mutations))
        async with self._push_lock:
            try:
                return await self._push(request, ctx, limit, savepoints=False)
            except NeedSavepoints:
                return await self._push(request, ctx, limit, savepoints=True)

    async def _push(
        self, request: PushRequest, ctx: Context, limit: int, *, savepoints: bool
    ) -> PushOutcome:
        conn = await self._acquire()
        try:
            session = PostgresPushSession(self, conn, savepoints=savepoints)
            try:
                await conn.execute(self._begin_sql)
                outcome = await process_push(session, request, self.mutators, ctx, limit=limit)
                session.check()
                script, expected = session.finish_script()
                status = await conn.execute(script)
            except BaseException as exc:
                await self._abandon(conn, exc)
                if session.failure is not None and isinstance(exc, NeedSavepoints):
                    raise unavailable(session.failure) from None
                if isinstance(exc, Exception) and is_transient(exc, conn):
                    raise unavailable(exc) from None
                raise
            if status != expected:
                raise RuntimeError(f"push transaction ended with {status!r}, not {expected!r}")
            return outcome
        finally:
            await self.pool.release(conn)

    # -- pull ----------------------------------------------------------------------

    async def pull(self, request: PullRequest, ctx: Context) -> PullResponse:
        _check_storable(request.client_group_id)
        conn = await self._acquire()
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                response, known = await self._read_pull(conn, request)
            if not known:
                await conn.execute(
                    "INSERT INTO _plasma_client_groups (id, owner, created_version) "
                    "SELECT $1, $2, version FROM _plasma_meta ON CONFLICT (id) DO NOTHING",
                    request.client_group_id, ctx.user,
                )
            return response
        except Exception as exc:
            if is_transient(exc, conn):
                raise unavailable(exc) from None
            raise
        finally:
            await self.pool.release(conn)

    async def _read_pull(
        self, conn: Conn, request: PullRequest
    ) -> tuple[PullResponse, bool]:
        group_id = request.client_group_id
        meta = await conn.fetchrow(
            "SELECT m.version, m.min_version, EXISTS (SELECT 1 FROM _plasma_client_groups "
            "WHERE id = $1) FROM _plasma_meta m",
            group_id,
        )
        assert meta is not None
        version, min_version, known = meta
        cookie = request.cookie
        if not known and cookie is not None:
            raise ClientStateNotFound(f"unknown client group {group_id!r}")
        full = cookie is None or cookie < min_version or cookie > version
        since = 0 if full or cookie is None else cookie
        patch: list[PatchOp] = [ClearOp()] if full else []
        for t in self.schema:
            changes_sql, snapshot_sql, converters = self._pull_sql[t._name]
            pk_index = self._pk_index[t._name]
            if full:
                for values in await conn.fetch(snapshot_sql):
                    row = {name: values[i] for i, name, _ in converters}
                    for i, name, convert in converters:
                        if convert is not None and values[i] is not None:
                            row[name] = convert(values[i])
                    patch.append(PutOp(f"{t._name}/{values[pk_index]}", row))
                continue
            for values in await conn.fetch(changes_sql, t._name, since):
                key = f"{t._name}/{values[0]}"
                if values[1] or values[2 + pk_index] is None:
                    patch.append(DelOp(key))
                    continue
                row = {name: values[i + 2] for i, name, _ in converters}
                for i, name, convert in converters:
                    if convert is not None and values[i + 2] is not None:
                        row[name] = convert(values[i + 2])
                patch.append(PutOp(key, row))
        last_ids: dict[str, int] = {}
        errors: list[tuple[int, int, MutationErrorInfo]] = []
        for kind, cid, number, name, message, at in await conn.fetch(
            "SELECT 0, id, last_mutation_id, NULL::text, NULL::text, version "
            "FROM _plasma_clients WHERE client_group_id = $1 AND version > $2 "
            "UNION ALL SELECT 1, client_id, mutation_id, name, message, version "
            "FROM _plasma_mutation_errors WHERE client_group_id = $1 AND version > $2",
            group_id, since,
        ):
            if kind == 0:
                last_ids[cid] = number
            else:
                errors.append((at, number, MutationErrorInfo(cid, number, name, message)))
        errors.sort(key=lambda e: (e[0], e[1]))
        response = PullResponse(version, last_ids, tuple(patch), tuple(e[2] for e in errors))
        return response, known

    # -- versions and pokes ------------------------------------------------------------

    async def version(self) -> int:
        try:
            return int(await self.pool.fetchval("SELECT version FROM _plasma_meta"))
        except Exception as exc:
            if is_transient(exc):
                raise unavailable(exc) from None
            raise

    @property
    def listener(self) -> Listener:
        if self._listener is None:
            raise RuntimeError("the Postgres storage is not open")
        return self._listener

    async def changed_externally(self) -> bool:
        changed = self.listener.changed
        was_set = changed.is_set()
        changed.clear()
        return was_set

    async def wait_for_change(self, seconds: float) -> bool:
        changed = self.listener.changed
        try:
            async with asyncio.timeout(seconds):
                await changed.wait()
        except TimeoutError:
            return False
        changed.clear()
        return True


def _check_storable(*ids: str) -> None:
    for value in ids:
        if "\x00" in value:
            raise BadRequest(f"id {value!r} contains a NUL character, which Postgres cannot store")
