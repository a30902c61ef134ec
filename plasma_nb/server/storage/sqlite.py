"""The embedded default backend: one SQLite file in WAL mode.

One writer connection, serialized by an asyncio lock, runs pushes, those that
arrive together in one transaction (group commit, sqlite_push.py); a reader
connection serves pulls in one read transaction each; a third connection only
watches ``PRAGMA data_version`` so that commits from anywhere (operator SQL in
the ``sqlite3`` shell included) become pokes. Statements are short and run on
the event loop thread: SQLite answers them in microseconds. WAL checkpoints, which
copy and sync the database file, run in a worker thread (sqlite_checkpoint.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ...core.dialect import SQLiteDialect, quote
from ...core.errors import (
    ClientStateNotFound,
    Forbidden,
    SchemaError,
    Unavailable,
)
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
from ...core.schema import MISSING, Column, ColumnType, Schema, Table
from ..push import PushOutcome
from ..rules import VERSION, ReadRules, prior_table
from .base import Compacted, Storage
from .sqlite_checkpoint import Checkpointer
from .sqlite_push import GroupCommit, is_transient
from .sqlite_sql import (
    INTERNAL_COLUMNS,
    INTERNAL_DDL,
    internal_ddl,
    prior_ddl,
    run_script,
    trigger_ddl,
    trigger_names,
)

__all__ = ["SQLiteStorage", "internal_ddl", "trigger_ddl"]

logger = logging.getLogger("plasma_nb.server")

# How long a push waits for another writer (operator SQL, another process) to let go
# of the database, in short asynchronous naps so the event loop keeps serving.
WRITE_WAIT_SECONDS = 3.0

def _json_from_db(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        # Only operator SQL can write this; send the text rather than fail every pull.
        logger.warning("a json column holds text that is not JSON: %.80r", text)
        return text


def _real_from_db(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN or infinity; only operator SQL can store them.
        logger.warning("a real column holds %r, which JSON cannot carry; sent as null", value)
        return None
    return value


def _wire_converter(type: ColumnType) -> Callable[[Any], Any] | None:
    # Straight from SQLite's storage to JSON: timestamps are already canonical text.
    if type is ColumnType.BOOLEAN:
        return bool
    if type is ColumnType.JSON:
        return _json_from_db
    if type is ColumnType.REAL:
        return _real_from_db
    return None


class SQLiteStorage(Storage):
    def __init__(self, path: str, schema: Schema, mutators: Mutators) -> None:
        self.path = path
        self.schema = schema
        self.mutators = mutators
        self.dialect = SQLiteDialect()
        self.rules = ReadRules(schema, self.dialect, "sqlite")
        self._write_lock = asyncio.Lock()
        self._opened = False
        self._data_version: int | None = None
        self._pull_sql: dict[str, tuple[str, str, list[tuple[int, str, Any]]]] = {}

    def _connect(self) -> sqlite3.Connection:
        uri = self.path.startswith("file:")
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, uri=uri, timeout=5.0
        )
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    async def open(self) -> None:
        if self._opened:
            return
        self._writer = self._connect()
        try:
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._setup()
        except BaseException:
            self._writer.close()
            raise
        del mode
        # From now on the writer never sleeps inside SQLite: _begin_immediate waits.
        self._writer.execute("PRAGMA busy_timeout = 0")
        self._checkpointer = Checkpointer(self._writer, self._connect, self._write_lock)
        self._group_commit = GroupCommit(
            self._writer, self.dialect, self.mutators, self._write_lock,
            begin=lambda: self._begin_immediate(self._writer),
            after_commit=self._checkpointer.after_commit)
        self._reader = self._connect()
        self._watcher = self._connect()
        # The baseline is taken now, not at the first poll: a commit made in between
        # (operator SQL right after the start) would otherwise never become a poke.
        (self._data_version,) = self._watcher.execute("PRAGMA data_version").fetchone()
        self._opened = True
        for t in self.schema:
            self._pull_sql[t._name] = self._build_pull_sql(t)

    def _setup(self) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            run_script(conn, INTERNAL_DDL)
            now_ms = int(time.time() * 1000)
            # Versions start from the clock, so a recreated database never hands out
            # a cookie lower than one a client already holds.
            conn.execute(
                "INSERT OR IGNORE INTO _plasma_meta (id, version, pushing, min_version) "
                "VALUES (1, ?, 0, ?)",
                (now_ms, now_ms),
            )
            self._migrate_internal()
            for t in self.schema:
                self._create_or_migrate(t)
                ruled = self.rules.ruled(t)
                self._prepare_prior(t, ruled)
                # Rebuilt at every start: they follow the columns and the read rules.
                for trigger in trigger_names(t):
                    conn.execute(f"DROP TRIGGER IF EXISTS {quote(trigger)}")
                run_script(conn, trigger_ddl(t, prior=ruled))
            conn.execute(
                "UPDATE _plasma_meta SET schema_version = ?, pushing = 0", (self.schema.version,)
            )
            conn.execute(
                "INSERT OR IGNORE INTO _plasma_checkpoints (at_ms, version) "
                "SELECT ?, version FROM _plasma_meta", (now_ms,),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate_internal(self) -> None:
        conn = self._writer
        for table, column, definition in INTERNAL_COLUMNS:
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({quote(table)})")}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def _prepare_prior(self, t: Table, ruled: bool) -> None:
        """Create (or drop) ``t``'s prior-image table, with every column of ``t``."""
        conn = self._writer
        prior = prior_table(t)
        if not ruled:
            conn.execute(f"DROP TABLE IF EXISTS {quote(prior)}")
            return
        run_script(conn, prior_ddl(t, self.dialect))
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({quote(prior)})")}
        for c in t:
            if c.name not in have:
                conn.execute(
                    f"ALTER TABLE {quote(prior)} ADD COLUMN {quote(c.name)} "
                    f"{self.dialect.sql_type(c)}"
                )

    def _create_or_migrate(self, t: Table) -> None:
        conn = self._writer
        existing = {
            row[1]: row for row in conn.execute(f"PRAGMA table_info({quote(t._name)})")
        }
        if not existing:
            conn.execute(self.dialect.create_table_sql(t))
            return
        for c in t:
            if c.name in existing:
                declared = str(existing[c.name][2]).upper()
                wanted = self.dialect.sql_type(c)
                if declared != wanted:
                    raise SchemaError(
                        f"{c.qualname} is {declared} in the database but the schema declares "
                        f"{c.type.value} ({wanted}); change it with a new column instead"
                    )
                continue
            if not c.has_default:
                raise SchemaError(
                    f"cannot add column {c.qualname} to the existing database: a new column "
                    "must be nullable or have a default"
                )
            conn.execute(f"ALTER TABLE {quote(t._name)} ADD COLUMN {self._column_def(c)}")

    def _column_def(self, c: Column) -> str:
        """A new column's definition for ``ADD COLUMN`` (never a key: keys never change)."""
        parts = [quote(c.name), self.dialect.sql_type(c)]
        if not c.nullable:
            parts.append("NOT NULL")
        if c.default is not MISSING and c.default is not None:
            parts.append("DEFAULT " + self.dialect.literal_sql(c.type, c.default))
        return " ".join(parts)

    def _build_pull_sql(self, t: Table) -> tuple[str, str, list[tuple[int, str, Any]]]:
        cols = ", ".join(f"t.{quote(c.name)}" for c in t)
        changes = (
            f"SELECT c.pk, c.deleted, {cols} FROM _plasma_changes c "
            f"LEFT JOIN {quote(t._name)} t ON t.{quote(t._pk.name)} = c.pk "
            "WHERE c.tbl = ? AND c.version > ?"
        )
        snapshot = f"SELECT {', '.join(quote(c.name) for c in t)} FROM {quote(t._name)}"
        converters = [(i, c.name, _wire_converter(c.type)) for i, c in enumerate(t)]
        return changes, snapshot, converters

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        await self._group_commit.close()
        await self._checkpointer.close()
        async with self._write_lock:
            for conn in (self._writer, self._reader, self._watcher):
                conn.close()

    async def push(self, request: PushRequest, ctx: Context, *, limit: int) -> PushOutcome:
        return await self._group_commit.push(
            request, ctx, limit=limit, view=self.rules.fingerprint(ctx),
            checks_blobs=self.check_blobs)

    async def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE without blocking the event loop while another writer holds
        the lock (the writer connection's busy timeout is zero)."""
        deadline = time.monotonic() + WRITE_WAIT_SECONDS
        nap = 0.002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_transient(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise Unavailable(f"the database is busy: {exc}") from None
            await asyncio.sleep(nap)
            nap = min(nap * 2, 0.1)

    async def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Statements in one write transaction of their own; the last one's rows."""
        async with self._write_lock:
            conn = self._writer
            await self._begin_immediate(conn)
            try:
                rows: list[tuple[Any, ...]] = []
                for sql, params in statements:
                    rows = conn.execute(sql, params).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return rows

    async def _ensure_group(self, group_id: str, owner: str | None, view: str | None) -> None:
        rows = await self._write((
            "INSERT INTO _plasma_client_groups (id, owner, created_version, view) "
            "VALUES (?, ?, (SELECT version FROM _plasma_meta), ?) "
            "ON CONFLICT (id) DO UPDATE SET id = id RETURNING owner",
            (group_id, owner, view),
        ))
        if rows[0][0] != owner:  # another user's pull created it a moment ago
            raise Forbidden(f"client group {group_id!r} belongs to another user")

    async def group_owner(self, group_id: str) -> tuple[bool, str | None]:
        row = self._reader.execute(
            "SELECT owner FROM _plasma_client_groups WHERE id = ?", (group_id,)
        ).fetchone()
        return (False, None) if row is None else (True, row[0])

    async def record_blob(self, hash: str, size: int) -> None:
        await self._write((
            "INSERT INTO _plasma_blobs (hash, size, created) VALUES (?, ?, ?) "
            "ON CONFLICT (hash) DO NOTHING",
            (hash, size, int(time.time() * 1000)),
        ))

    async def pull(self, request: PullRequest, ctx: Context) -> PullResponse:
        conn = self._reader
        group_id = request.client_group_id
        group = conn.execute(
            "SELECT owner, view, view_version FROM _plasma_client_groups WHERE id = ?",
            (group_id,),
        ).fetchone()
        view = self.rules.fingerprint(ctx)
        view_from = 0
        if group is None:
            if request.cookie is not None:
                raise ClientStateNotFound(f"unknown client group {group_id!r}")
            await self._ensure_group(group_id, ctx.user, view)
        else:
            owner, stored_view, view_from = group
            if owner != ctx.user:
                raise Forbidden(f"client group {group_id!r} belongs to another user")
            if stored_view != view:
                # The caller's view changed (rules or claims): a new version, so that every
                # cookie served under the old view is older than the new view's.
                (view_from,) = (await self._write(
                    ("UPDATE _plasma_client_groups SET view = ?, view_version = "
                     "(SELECT version + 1 FROM _plasma_meta) WHERE id = ?", (view, group_id)),
                    ("UPDATE _plasma_meta SET version = version + 1 RETURNING version", ()),
                ))[0]
        try:
            conn.execute("BEGIN")
            try:
                return self._read_pull(conn, request, ctx, view_from)
            finally:
                conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if is_transient(exc):
                raise Unavailable(f"the database is busy: {exc}") from None
            raise

    def _read_pull(self, conn: sqlite3.Connection, request: PullRequest, ctx: Context,
                   view_from: int) -> PullResponse:
        version, min_version = conn.execute(
            "SELECT version, min_version FROM _plasma_meta"
        ).fetchone()
        cookie = request.cookie
        full = (cookie is None or cookie < min_version or cookie > version
                or cookie < view_from)
        since = 0 if full or cookie is None else cookie
        patch: list[PatchOp] = [ClearOp()] if full else []
        for t in self.schema:
            changes_sql, snapshot_sql, converters = self._pull_sql[t._name]
            ruled = self.rules.ruled(t)
            pk_index = _pk_index(t)
            if full:
                if ruled:
                    query = self.rules.snapshot(t, ctx)
                    rows = conn.execute(query.sql, query.params)
                else:
                    rows = conn.execute(snapshot_sql)
                for values in rows:
                    row = {name: values[i] for i, name, _ in converters}
                    for i, name, convert in converters:
                        if convert is not None and values[i] is not None:
                            row[name] = convert(values[i])
                    patch.append(PutOp(f"{t._name}/{values[pk_index]}", row))
                continue
            if ruled:
                query = self.rules.changes(t, ctx, since)
                rows = conn.execute(query.sql, query.params)
            else:
                rows = conn.execute(changes_sql, (t._name, since))
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
        group_id = request.client_group_id
        last_ids = {
            cid: last
            for cid, last in conn.execute(
                "SELECT id, last_mutation_id FROM _plasma_clients "
                "WHERE client_group_id = ? AND version > ?",
                (group_id, since),
            )
        }
        errors = tuple(
            MutationErrorInfo(*row)
            for row in conn.execute(
                "SELECT client_id, mutation_id, name, message FROM _plasma_mutation_errors "
                "WHERE client_group_id = ? AND version > ? ORDER BY version, mutation_id",
                (group_id, since),
            )
        )
        return PullResponse(version, last_ids, tuple(patch), errors)

    async def version(self) -> int:
        row = self._reader.execute("SELECT version FROM _plasma_meta").fetchone()
        return int(row[0])

    async def changed_externally(self) -> bool:
        (data_version,) = self._watcher.execute("PRAGMA data_version").fetchone()
        changed = self._data_version is not None and data_version != self._data_version
        self._data_version = data_version
        return changed

    async def compact(self, horizon_ms: int, now_ms: int) -> Compacted:
        async with self._write_lock:
            conn = self._writer
            await self._begin_immediate(conn)
            try:
                version, min_version = conn.execute(
                    "SELECT version, min_version FROM _plasma_meta"
                ).fetchone()
                (horizon,) = conn.execute(
                    "SELECT MAX(version) FROM _plasma_checkpoints WHERE at_ms <= ?",
                    (now_ms - horizon_ms,),
                ).fetchone()
                cutoff = version if horizon_ms <= 0 else horizon
                dropped = 0
                if cutoff is not None and cutoff > min_version:
                    # Only cookies older than what is dropped need a full snapshot.
                    versions = [v for (v,) in conn.execute(
                        "DELETE FROM _plasma_changes WHERE deleted = 1 AND version <= ? "
                        "RETURNING version", (cutoff,))]
                    dropped = len(versions)
                    for t in self.schema:
                        if self.rules.ruled(t):
                            versions += [v for (v,) in conn.execute(
                                f"DELETE FROM {quote(prior_table(t))} WHERE {VERSION} <= ? "
                                f"RETURNING {VERSION}", (cutoff,))]
                    if versions and max(versions) > min_version:
                        min_version = max(versions)
                        conn.execute("UPDATE _plasma_meta SET min_version = ?", (min_version,))
                # Checkpoints older than the horizon's are no longer needed.
                conn.execute(
                    "DELETE FROM _plasma_checkpoints WHERE at_ms < (SELECT MAX(at_ms) FROM "
                    "_plasma_checkpoints WHERE at_ms <= ?)", (now_ms - horizon_ms,),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO _plasma_checkpoints (at_ms, version) VALUES (?, ?)",
                    (now_ms, version),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return Compacted(min_version, dropped)


def _pk_index(t: Table) -> int:
    return list(t._columns).index(t._pk.name)
