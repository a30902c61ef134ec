"""The push side of the Postgres backend: the mutators' ``tx`` and the push session.

A push costs the round trips of a bare transaction doing the same writes (BEGIN, the
statements, COMMIT), on the instance's push connection (postgres_support.py), which begins its
next transaction in the round trip of the last COMMIT: the first statement bumps the
version (taking the counter's row lock, so pushes take turns) and loads the group and
its clients; the mutators' statements run; the bookkeeping (last mutation ids, recorded
errors, NOTIFY) travels with the ``COMMIT``. When the first statement's snapshot turns
out to predate a commit it waited for, the state is loaded again (one more round trip,
only under contention).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import asyncpg

from ...core.errors import MutationError, Unavailable
from ...core.mutators import Context, Transaction
from ...core.protocol import Mutation, MutationErrorInfo
from ...core.query import Delete, Insert, Select, Update
from ..push import ClientState, NeedSavepoints, PushSession
from . import postgres_sql as sql
from .postgres_support import Conn, is_transient

if TYPE_CHECKING:
    from .postgres import PostgresStorage

__all__ = ["PostgresPushSession", "unavailable"]

_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"the database is unavailable, try again: {type(exc).__name__}: {exc}")


def _nul_free(value: str) -> str:
    return value.replace("\x00", "\ufffd")


class _ServerTransaction(Transaction):
    location = "server"

    def __init__(self, session: PostgresPushSession, ctx: Context, mutation: Mutation) -> None:
        super().__init__(ctx=ctx, timestamp=mutation.timestamp, mutation_name=mutation.name)
        self._session = session

    async def _write(self, stmt: Insert | Update | Delete) -> int:
        session = self._session
        compiled = session.storage.dialect.compile(stmt)
        table = stmt.table
        for value in compiled.params:
            # Checked here: Postgres would reject it and abort the whole transaction.
            if isinstance(value, str) and (
                "\x00" in value or ("\\u0000" in value and _JSON_NUL.search(value))
            ):
                raise MutationError(f"{table._name}: text cannot contain NUL characters here")
        plain_insert = isinstance(stmt, Insert) and not stmt.upsert
        # A duplicate key is reported without aborting the transaction, as on SQLite.
        query = compiled.sql + " ON CONFLICT DO NOTHING" if plain_insert else compiled.sql
        try:
            status = await session.conn.execute(query, *compiled.params)
        except Exception as exc:
            session.failed(exc)
            if isinstance(exc, asyncpg.IntegrityConstraintViolationError | asyncpg.DataError):
                raise MutationError(f"{table._name}: {exc}") from None
            raise
        count = int(status.rsplit(" ", 1)[-1])
        if plain_insert and count == 0:
            assert isinstance(stmt, Insert)
            key = stmt.row.get(table._pk.name)
            raise MutationError(f"{table._name}: a row with key {key!r} already exists")
        return count

    async def _read(self, stmt: Select) -> list[dict[str, Any]]:
        session = self._session
        compiled = session.storage.dialect.compile(stmt)
        decode = compiled.decode
        assert decode is not None
        try:
            records = await session.conn.fetch(compiled.sql, *compiled.params)
        except Exception as exc:
            session.failed(exc)
            raise
        return [decode(r) for r in records]  # type: ignore[arg-type]  # a Record is a sequence


class PostgresPushSession(PushSession):
    """One push transaction. Bookkeeping writes wait for the commit, in one script."""

    def __init__(self, storage: PostgresStorage, conn: Conn, *,
                 savepoints: bool) -> None:
        self.savepoints = savepoints
        self.view: str | None = None  # the pusher's read-rule view, for a new group
        self.checks_blobs = storage.check_blobs
        self.storage = storage
        self.conn = conn
        self.version = 0
        self.failure: BaseException | None = None  # transient: the push answers 503
        self.aborted = False  # a statement failed: the transaction needs a rollback
        self._group: tuple[str, str | None] | None = None
        self._group_id = ""
        self._clients: dict[str, int] = {}
        self._errors: dict[tuple[str, int], MutationErrorInfo] = {}
        self._release = False
        self._current: Mutation | None = None

    def failed(self, exc: BaseException) -> None:
        """A statement raised: Postgres aborts the transaction on any error it reports
        (asyncpg's own argument errors are raised before anything is sent)."""
        transient = is_transient(exc, self.conn)
        if transient or isinstance(exc, asyncpg.PostgresError):
            self.aborted = True
        if transient:
            self.failure = exc

    def check(self) -> None:
        if self.failure is not None:
            raise unavailable(self.failure)

    async def load_state(
        self, group_id: str, client_ids: list[str]
    ) -> tuple[bool, str | None, dict[str, ClientState]]:
        rows = await self.conn.fetch(self.storage._push_state_sql, group_id, client_ids)
        _, _, seen, version = next(row for row in rows if row[0] == 0)
        if version != int(seen) + 1:
            # Another transaction committed a version while this one waited for the lock:
            # the snapshot may miss its clients. Read again, in a fresh snapshot.
            rows = await self.conn.fetch(self.storage._load_state_sql, group_id, client_ids)
        exists, owner = False, None
        clients: dict[str, ClientState] = {}
        for kind, cid, group, number in rows:
            if kind == 0:
                self.version = number
            elif kind == 1:
                exists, owner = True, group
            else:
                clients[cid] = ClientState(group, number)
        return exists, owner, clients

    async def create_group(self, group_id: str, owner: str | None) -> None:
        self._group = (group_id, owner)

    async def begin_mutation(self) -> None:
        if self.savepoints:
            release = "RELEASE SAVEPOINT plasma_mutation; " if self._release else ""
            await self.conn.execute(release + "SAVEPOINT plasma_mutation")
            self._release = False

    async def rollback_mutation(self) -> None:
        self.check()
        await self.conn.execute("ROLLBACK TO SAVEPOINT plasma_mutation")
        self.aborted = False

    async def end_mutation(self) -> None:
        self.check()
        if self.aborted:
            # The mutator caught a failed statement and carried on: Postgres has
            # aborted the transaction, so this mutation cannot commit.
            if not self.savepoints:
                raise NeedSavepoints
            await self.rollback_mutation()
            self._record_internal_error()
        if self.savepoints:
            self._release = True

    def _record_internal_error(self) -> None:
        mutation = self._current
        assert mutation is not None
        message = f"internal error in mutator {mutation.name}"
        info = MutationErrorInfo(mutation.client_id, mutation.id, mutation.name, message)
        self._errors[(info.client_id, info.id)] = info

    def transaction(self, ctx: Context, mutation: Mutation) -> Transaction:
        self._current = mutation
        return _ServerTransaction(self, ctx, mutation)

    async def record_error(self, group_id: str, error: MutationErrorInfo) -> None:
        self._errors[(error.client_id, error.id)] = error

    async def load_errors(self, client_id: str, ids: list[int]) -> list[MutationErrorInfo]:
        found = {
            row[0]: MutationErrorInfo(client_id, row[0], row[1], row[2])
            for row in await self.conn.fetch(
                "SELECT mutation_id, name, message FROM _plasma_mutation_errors "
                "WHERE client_id = $1 AND mutation_id = ANY($2::bigint[])",
                client_id, ids,
            )
        }
        for i in ids:  # recorded earlier in this push (an id sent twice)
            if (client_id, i) in self._errors:
                found[i] = self._errors[(client_id, i)]
        return [found[i] for i in sorted(found)]

    async def save_clients(self, group_id: str, changed: Mapping[str, int]) -> None:
        self._group_id = group_id
        self._clients.update(changed)

    async def missing_blobs(self, hashes: list[str]) -> list[str]:
        try:
            rows = await self.conn.fetch(
                "SELECT hash FROM _plasma_blobs WHERE hash = ANY($1::text[])", hashes
            )
        except Exception as exc:
            self.failed(exc)
            raise
        known = {row[0] for row in rows}
        return [h for h in hashes if h not in known]

    @property
    def creates_group(self) -> bool:
        return self._group is not None

    def finish_script(self, *, begin: bool) -> tuple[str, str]:
        """The last round trip: the bookkeeping and COMMIT (or a bare ROLLBACK when
        nothing was written), then BEGIN if ``begin``, with the status it must end with.

        A failure in the bookkeeping stops the script there, so the status tells how it
        ended even with BEGIN after the COMMIT."""
        then = ("; BEGIN", "BEGIN") if begin else ("", "")
        if not self._clients and self._group is None:
            return "ROLLBACK" + then[0], then[1] or "ROLLBACK"
        lit = sql.literal
        v = lit(self.version)
        parts = []
        if self._group is not None:
            # No ON CONFLICT: a group created meanwhile (by a pull, which takes no lock, or
            # by a push whose snapshot this one's first statement predates) fails the push
            # with a unique violation, answered 503; the retry checks its owner.
            group_id, owner = self._group
            parts.append(
                "INSERT INTO _plasma_client_groups (id, owner, created_version, view) "
                f"VALUES ({lit(group_id)}, {lit(owner)}, {v}, {lit(self.view)})"
            )
        if self._clients:
            rows = ", ".join(
                f"({lit(cid)}, {lit(self._group_id)}, {lit(last)}, {v})"
                for cid, last in self._clients.items()
            )
            parts.append(
                "INSERT INTO _plasma_clients (id, client_group_id, last_mutation_id, version) "
                f"VALUES {rows} ON CONFLICT (id) DO UPDATE SET "
                "last_mutation_id = excluded.last_mutation_id, version = excluded.version"
            )
            channel = lit(sql.poke_channel(self.storage.namespace))
            parts.append(f"SELECT pg_notify({channel}, {lit(str(self.version))})")
        else:
            # Nothing processed: give the version back (we hold its lock; nobody saw it).
            parts.append("UPDATE _plasma_meta SET version = version - 1")
        if self._errors:
            rows = ", ".join(
                f"({lit(e.client_id)}, {lit(e.id)}, {lit(self._group_id)}, "
                f"{lit(_nul_free(e.name))}, {lit(_nul_free(e.message))}, {v})"
                for e in self._errors.values()
            )
            parts.append(
                "INSERT INTO _plasma_mutation_errors "
                "(client_id, mutation_id, client_group_id, name, message, version) "
                f"VALUES {rows} ON CONFLICT (client_id, mutation_id) DO UPDATE SET "
                "client_group_id = excluded.client_group_id, name = excluded.name, "
                "message = excluded.message, version = excluded.version"
            )
        parts.append("COMMIT")
        return ";\n".join(parts) + then[0], then[1] or "COMMIT"
