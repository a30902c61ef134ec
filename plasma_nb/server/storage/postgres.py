"""The Postgres backend (asyncpg): several server instances on one database.

Semantics are the SQLite backend's (DESIGN section 6); what differs is how they
are kept under concurrency:

- every version is assigned under the row lock of ``_plasma_meta``, held until
  commit (a push takes it first; outside a push the change-log trigger takes it
  at the transaction's first write), so versions commit in order and a pull,
  one REPEATABLE READ snapshot, never misses a change that commits later with a
  lower version;
- a push is one READ COMMITTED transaction on the instance's push connection
  (postgres_support.py), which begins it in the round trip of the previous push's
  COMMIT: one statement bumps the version and loads the group and its clients, the
  mutators' own statements run, and the bookkeeping (clients' last mutation ids,
  recorded errors, NOTIFY) travels with the COMMIT. That is the round trips of a
  bare transaction doing the same writes, whatever the number of mutations
  (postgres_push.py);
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
from ...core.errors import BadRequest, ClientStateNotFound, Forbidden, SchemaError
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
from ..rules import VERSION, ReadRules, prior_table
from . import postgres_sql as sql
from .base import Compacted, Storage
from .postgres_push import PostgresPushSession, unavailable
from .postgres_support import Conn, Listener, Pooled, PushConnection, is_closed, is_transient

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
        self.rules = ReadRules(schema, self.dialect, "postgres")
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.lock_timeout = lock_timeout
        # Pushes take turns on the counter's lock anyway: they run one at a time on a
        # connection of their own, and the pool's connections stay free for pulls.
        self._pusher = PushConnection(self._connect_push)
        self._pool: asyncpg.Pool | None = None
        self._listener: Listener | None = None
        self._opened = False
        self._push_state_sql = sql.push_state_sql(self.namespace)
        self._load_state_sql = sql.load_state_sql(self.namespace)
        self._pull_sql = {t._name: (*sql.pull_sql(t), _wire_converters(t)) for t in schema}
        self._pk_index = {t._name: list(t._columns).index(t._pk.name) for t in schema}

    # -- connections -------------------------------------------------------------

    def _settings(self) -> dict[str, str]:
        settings = {"standard_conforming_strings": "on"}
        if "application_name" not in dict(parse_qsl(urlsplit(self.url).query)):
            settings["application_name"] = "plasma_nb"
        return settings

    def _listen_settings(self) -> dict[str, str]:
        # "NAME listen": operators (and tests) can tell the LISTEN connection apart in
        # pg_stat_activity, say to see whether an instance is listening.
        name = dict(parse_qsl(urlsplit(self.url).query)).get("application_name", "plasma_nb")
        return {**self._settings(), "application_name": f"{name[:56]} listen"}

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
            listen_settings = self._listen_settings()
            listener = Listener(
                lambda: asyncpg.connect(self.url, server_settings=listen_settings),
                sql.poke_channel(self.namespace),
            )
            listener.own_pid = self._pusher.pid
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
            for table, column, definition in sql.INTERNAL_COLUMNS:
                await self._add_missing_columns(conn, table, [(column, definition)])
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
                ruled = self.rules.ruled(t)
                function, triggers = sql.trigger_ddl(t, ns, prior=ruled)
                await conn.execute(function)
                if ruled:
                    for statement in sql.prior_ddl(t, ns):
                        await conn.execute(statement)
                    await self._add_missing_columns(conn, prior_table(t), [
                        (c.name, self.dialect.sql_type(c)) for c in t])
                else:
                    await conn.execute(
                        f"DROP TABLE IF EXISTS {quote(ns)}.{quote(prior_table(t))}"
                    )
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
            await conn.execute(
                f"INSERT INTO {quote(ns)}._plasma_checkpoints (at_ms, version) "
                f"SELECT $1, version FROM {quote(ns)}._plasma_meta ON CONFLICT DO NOTHING",
                now_ms,
            )

    async def _add_missing_columns(
        self, conn: Conn, table: str, columns: list[tuple[str, str]]
    ) -> None:
        have = {r[0] for r in await conn.fetch(sql.COLUMNS_SQL, self.namespace, table)}
        missing = [f"ADD COLUMN {quote(name)} {definition}"
                   for name, definition in columns if name not in have]
        if missing:
            await conn.execute(
                f"ALTER TABLE {quote(self.namespace)}.{quote(table)} {', '.join(missing)}"
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
        await self._pusher.close()
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
        async with self._pusher.lock:
            try:
                return await self._push(request, ctx, limit, savepoints=False)
            except NeedSavepoints:
                return await self._push(request, ctx, limit, savepoints=True)

    async def _push(
        self, request: PushRequest, ctx: Context, limit: int, *, savepoints: bool
    ) -> PushOutcome:
        pusher = self._pusher
        conn = await pusher.get()
        session = PostgresPushSession(self, conn, savepoints=savepoints)
        session.view = self.rules.fingerprint(ctx)
        try:
            if not pusher.begun:
                await conn.execute("BEGIN")
            pusher.begun = False
            outcome = await process_push(session, request, self.mutators, ctx, limit=limit)
            session.check()
            script, expected = session.finish_script(begin=True)
            status = await conn.execute(script)
        except BaseException as exc:
            await self._abandon(conn, exc)
            if session.failure is not None and isinstance(exc, NeedSavepoints):
                raise unavailable(session.failure) from None
            if isinstance(exc, Exception) and is_transient(exc, conn):
                raise unavailable(exc) from None
            if isinstance(exc, asyncpg.UniqueViolationError) and session.creates_group:
                raise unavailable(exc) from None  # the group was created meanwhile
            raise
        if status != expected:
            conn.terminate()  # in an unknown state: the next push connects anew
            raise RuntimeError(f"push transaction ended with {status!r}, not {expected!r}")
        pusher.committed()
        if outcome.processed:
            outcome.version = session.version
        return outcome

    @property
    def push_connection(self) -> asyncpg.Connection | None:
        """The connection pushes run on (None before the first push or once lost)."""
        return self._pusher.conn

    async def _connect_push(self) -> asyncpg.Connection:
        settings = {
            **self._settings(),
            "search_path": quote(self.namespace),
            # A push waits this long at most for a lock (the counter's, a row's).
            "lock_timeout": str(int(self.lock_timeout * 1000)),
        }
        try:
            return await asyncpg.connect(
                self.url, server_settings=settings, timeout=self.lock_timeout
            )
        except Exception as exc:
            if is_transient(exc):
                raise unavailable(exc) from None
            raise

    async def record_blob(self, hash: str, size: int) -> None:
        try:
            await self.pool.execute(
                "INSERT INTO _plasma_blobs (hash, size, created) VALUES ($1, $2, $3) "
                "ON CONFLICT (hash) DO NOTHING",
                hash, size, int(time.time() * 1000),
            )
        except Exception as exc:
            if is_transient(exc):
                raise unavailable(exc) from None
            raise

    # -- pull ----------------------------------------------------------------------

    async def pull(self, request: PullRequest, ctx: Context) -> PullResponse:
        group_id = request.client_group_id
        _check_storable(group_id)
        view = self.rules.fingerprint(ctx)
        conn = await self._acquire()
        try:
            group = await conn.fetchrow(
                "SELECT owner, view IS DISTINCT FROM $2 FROM _plasma_client_groups "
                "WHERE id = $1", group_id, view,
            )
            if group is not None and group[0] != ctx.user:
                raise Forbidden(f"client group {group_id!r} belongs to another user")
            if group is not None and group[1]:
                # The caller's view changed (rules or claims): a new version, so that every
                # cookie served under the old view is older than the new view's.
                try:
                    await conn.execute(
                        f"{sql.begin_push_sql(self.namespace, int(self.lock_timeout * 1000))}; "
                        "UPDATE _plasma_client_groups SET view = "
                        f"{sql.literal(view)}, view_version = (SELECT version FROM _plasma_meta)"
                        f" WHERE id = {sql.literal(group_id)}; COMMIT"
                    )
                except BaseException as exc:
                    await self._abandon(conn, exc)
                    raise
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                response, known = await self._read_pull(conn, request, ctx, view)
            if not known:
                owner = await conn.fetchval(
                    "WITH created AS (INSERT INTO _plasma_client_groups "
                    "(id, owner, created_version, view) SELECT $1, $2, version, $3 "
                    "FROM _plasma_meta ON CONFLICT (id) DO NOTHING RETURNING owner) "
                    "SELECT owner FROM created UNION ALL "
                    "SELECT owner FROM _plasma_client_groups WHERE id = $1 LIMIT 1",
                    group_id, ctx.user, view,
                )
                if owner != ctx.user:  # another user's pull created it a moment ago
                    raise Forbidden(f"client group {group_id!r} belongs to another user")
            return response
        except Exception as exc:
            if is_transient(exc, conn):
                raise unavailable(exc) from None
            raise
        finally:
            await self.pool.release(conn)

    async def _read_pull(
        self, conn: Conn, request: PullRequest, ctx: Context, view: str | None
    ) -> tuple[PullResponse, bool]:
        """The response, and whether the group exists."""
        group_id = request.client_group_id
        meta = await conn.fetchrow(
            "SELECT m.version, m.min_version, g.id IS NOT NULL, g.owner, g.view, "
            "g.view_version FROM _plasma_meta m "
            "LEFT JOIN _plasma_client_groups g ON g.id = $1",
            group_id,
        )
        assert meta is not None
        version, min_version, known, owner, stored_view, view_from = meta
        cookie = request.cookie
        if not known and cookie is not None:
            raise ClientStateNotFound(f"unknown client group {group_id!r}")
        if known and owner != ctx.user:
            raise Forbidden(f"client group {group_id!r} belongs to another user")
        full = (cookie is None or cookie < min_version or cookie > version
                or (known and (stored_view != view or cookie < view_from)))
        since = 0 if full or cookie is None else cookie
        patch: list[PatchOp] = [ClearOp()] if full else []
        for t in self.schema:
            changes_sql, snapshot_sql, converters = self._pull_sql[t._name]
            pk_index = self._pk_index[t._name]
            ruled = self.rules.ruled(t)
            if full:
                if ruled:
                    query = self.rules.snapshot(t, ctx)
                    rows = await conn.fetch(query.sql, *query.params)
                else:
                    rows = await conn.fetch(snapshot_sql)
                for values in rows:
                    row = {name: values[i] for i, name, _ in converters}
                    for i, name, convert in converters:
                        if convert is not None and values[i] is not None:
                            row[name] = convert(values[i])
                    patch.append(PutOp(f"{t._name}/{values[pk_index]}", row))
                continue
            if ruled:
                query = self.rules.changes(t, ctx, since)
                rows = await conn.fetch(query.sql, *query.params)
            else:
                rows = await conn.fetch(changes_sql, t._name, since)
            was_visible = 2 + len(converters)
            for values in rows:
                key = f"{t._name}/{values[0]}"
                if values[1] or values[2 + pk_index] is None:
                    # With a rule, only a row the caller could read at the cookie.
                    if not ruled or values[was_visible]:
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

    async def group_owner(self, group_id: str) -> tuple[bool, str | None]:
        _check_storable(group_id)
        try:
            row = await self.pool.fetchrow(
                "SELECT owner FROM _plasma_client_groups WHERE id = $1", group_id
            )
        except Exception as exc:
            if is_transient(exc):
                raise unavailable(exc) from None
            raise
        return (False, None) if row is None else (True, row[0])

    async def compact(self, horizon_ms: int, now_ms: int) -> Compacted:
        conn = await self._acquire()
        try:
            async with conn.transaction():
                # The counter's lock: no push is half-way, so every version up to the
                # current one is committed and none below it can still appear.
                meta = await conn.fetchrow(
                    "SELECT version, min_version FROM _plasma_meta FOR UPDATE"
                )
                assert meta is not None
                version, min_version = meta
                horizon = await conn.fetchval(
                    "SELECT MAX(version) FROM _plasma_checkpoints WHERE at_ms <= $1",
                    now_ms - horizon_ms,
                )
                cutoff = version if horizon_ms <= 0 else horizon
                dropped = 0
                if cutoff is not None and cutoff > min_version:
                    # Only cookies older than what is dropped need a full snapshot.
                    newest, dropped = await conn.fetchrow(
                        "WITH gone AS (DELETE FROM _plasma_changes WHERE deleted AND "
                        "version <= $1 RETURNING version) SELECT MAX(version), COUNT(*) "
                        "FROM gone", cutoff,
                    ) or (None, 0)
                    for t in self.schema:
                        if self.rules.ruled(t):
                            prior = await conn.fetchval(
                                f"WITH gone AS (DELETE FROM {quote(prior_table(t))} WHERE "
                                f"{VERSION} <= $1 RETURNING {VERSION}) SELECT MAX({VERSION}) "
                                "FROM gone", cutoff,
                            )
                            if prior is not None and (newest is None or prior > newest):
                                newest = prior
                    if newest is not None and newest > min_version:
                        min_version = newest
                        await conn.execute("UPDATE _plasma_meta SET min_version = $1", newest)
                await conn.execute(
                    "DELETE FROM _plasma_checkpoints WHERE at_ms < (SELECT MAX(at_ms) FROM "
                    "_plasma_checkpoints WHERE at_ms <= $1)", now_ms - horizon_ms,
                )
                await conn.execute(
                    "INSERT INTO _plasma_checkpoints (at_ms, version) VALUES ($1, $2) "
                    "ON CONFLICT (at_ms) DO UPDATE SET version = excluded.version",
                    now_ms, version,
                )
            return Compacted(min_version, dropped)
        except Exception as exc:
            if is_transient(exc, conn):
                raise unavailable(exc) from None
            raise
        finally:
            await self.pool.release(conn)

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
