"""Pushes on the SQLite backend: the push session, and group commit.

A push's own work is a few microsecond statements; what costs is the write
transaction around it: ``BEGIN IMMEDIATE``, the version bump and the ``COMMIT``
that appends the WAL. So pushes that arrive together commit together
(:class:`GroupCommit`): the first one to arrive leads, waits one turn of the event
loop, and every push that reaches the storage meanwhile joins its batch; the batch
runs the pushes one after another in one transaction, commits once and answers them
all. Nothing waits on purpose: a push that arrives alone runs alone, one loop turn
later, and under load the batches form by themselves from the requests that came in
while the last one ran.

What each push sees is what it would see alone, in arrival order:

- a batch runs without savepoints first; if any push fails (another user's group, a
  rejected or crashing mutator, a database error) the batch is rolled back and run
  again with a savepoint around each push and each mutation: the failing push is
  undone alone and gets its own error, and the others commit;
- a push that processed nothing leaves nothing behind;
- no push is answered before the ``COMMIT`` that holds it; if that ``COMMIT`` fails,
  every push of the batch gets the error and nothing of the batch is kept, so the
  clients push again and exactly-once holds;
- pushes of one batch share one version: they become visible to pulls together.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...core.dialect import SQLiteDialect, integrity_message
from ...core.errors import MutationError, ServerError, Unavailable
from ...core.mutators import Context, Mutators, Transaction
from ...core.protocol import Mutation, MutationErrorInfo, PushRequest
from ...core.query import Delete, Insert, Select, Update
from ..push import ClientState, NeedSavepoints, PushOutcome, PushSession, process_push

__all__ = ["BATCH_MUTATIONS", "GroupCommit", "SQLitePushSession", "is_transient"]

#: A batch stops taking pushes once it holds this many mutations (it always takes
#: one): a long queue is then answered in several commits, not held for one.
BATCH_MUTATIONS = 1000


def is_transient(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` means another connection holds the database (retry later)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class _ServerTransaction(Transaction):
    location = "server"

    def __init__(self, conn: sqlite3.Connection, dialect: SQLiteDialect, ctx: Context,
                 mutation: Mutation) -> None:
        super().__init__(ctx=ctx, timestamp=mutation.timestamp, mutation_name=mutation.name)
        self._conn = conn
        self._dialect = dialect

    async def _write(self, stmt: Insert | Update | Delete) -> int:
        compiled = self._dialect.compile(stmt)
        try:
            return self._conn.execute(compiled.sql, compiled.params).rowcount
        except sqlite3.IntegrityError as exc:
            raise MutationError(integrity_message(stmt, exc)) from None

    async def _read(self, stmt: Select) -> list[dict[str, Any]]:
        compiled = self._dialect.compile(stmt)
        decode = compiled.decode
        assert decode is not None
        return [decode(r) for r in self._conn.execute(compiled.sql, compiled.params)]




class SQLitePushSession(PushSession):
    """One push inside a batch's write transaction, at the batch's ``version``."""

    def __init__(self, conn: sqlite3.Connection, dialect: SQLiteDialect, *, version: int,
                 view: str | None, savepoints: bool, checks_blobs: bool) -> None:
        self._conn = conn
        self._dialect = dialect
        self._known_clients: set[str] = set()
        self.version = version
        self.view = view  # the pusher's read-rule view, for a new group
        self.savepoints = savepoints
        self.checks_blobs = checks_blobs

    async def load_state(
        self, group_id: str, client_ids: list[str]
    ) -> tuple[bool, str | None, dict[str, ClientState]]:
        marks = ", ".join("?" * len(client_ids))
        sql = "SELECT NULL, owner, NULL FROM _plasma_client_groups WHERE id = ?"
        if client_ids:
            sql += (
                " UNION ALL SELECT id, client_group_id, last_mutation_id FROM _plasma_clients"
                f" WHERE id IN ({marks})"
            )
        exists, owner = False, None
        clients: dict[str, ClientState] = {}
        for cid, group, last in self._conn.execute(sql, (group_id, *client_ids)):
            if cid is None:
                exists, owner = True, group
            else:
                clients[cid] = ClientState(group, last)
        self._known_clients = set(clients)
        return exists, owner, clients

    async def create_group(self, group_id: str, owner: str | None) -> None:
        self._conn.execute(
            "INSERT INTO _plasma_client_groups (id, owner, created_version, view) "
            "VALUES (?, ?, (SELECT version FROM _plasma_meta), ?)",
            (group_id, owner, self.view),
        )

    async def begin_mutation(self) -> None:
        if self.savepoints:
            self._conn.execute("SAVEPOINT plasma_mutation")

    async def rollback_mutation(self) -> None:
        self._conn.execute("ROLLBACK TO plasma_mutation")

    async def end_mutation(self) -> None:
        if self.savepoints:
            self._conn.execute("RELEASE plasma_mutation")

    def transaction(self, ctx: Context, mutation: Mutation) -> Transaction:
        return _ServerTransaction(self._conn, self._dialect, ctx, mutation)

    async def record_error(self, group_id: str, error: MutationErrorInfo) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO _plasma_mutation_errors "
            "(client_id, mutation_id, client_group_id, name, message, version) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (error.client_id, error.id, group_id, error.name, error.message, self.version),
        )

    async def load_errors(self, client_id: str, ids: list[int]) -> list[MutationErrorInfo]:
        marks = ", ".join("?" * len(ids))
        rows = self._conn.execute(
            "SELECT mutation_id, name, message FROM _plasma_mutation_errors "
            f"WHERE client_id = ? AND mutation_id IN ({marks}) ORDER BY mutation_id",
            (client_id, *ids),
        ).fetchall()
        return [MutationErrorInfo(client_id, r[0], r[1], r[2]) for r in rows]

    async def save_clients(self, group_id: str, changed: Mapping[str, int]) -> None:
        for cid, last in changed.items():
            if cid in self._known_clients:
                # Known from load_state, in this same write transaction: a plain UPDATE
                # costs less than an INSERT that runs into its conflict.
                self._conn.execute(
                    "UPDATE _plasma_clients SET last_mutation_id = ?, version = ? WHERE id = ?",
                    (last, self.version, cid),
                )
            else:
                self._conn.execute(
                    "INSERT INTO _plasma_clients (id, client_group_id, last_mutation_id, version)"
                    " VALUES (?, ?, ?, ?)",
                    (cid, group_id, last, self.version),
                )

    async def missing_blobs(self, hashes: list[str]) -> list[str]:
        marks = ", ".join("?" * len(hashes))
        known = {row[0] for row in self._conn.execute(
            f"SELECT hash FROM _plasma_blobs WHERE hash IN ({marks})", hashes)}
        return [h for h in hashes if h not in known]


@dataclass
class _Queued:
    request: PushRequest
    ctx: Context
    limit: int
    view: str | None
    checks_blobs: bool
    answer: asyncio.Future[PushOutcome]


class GroupCommit:
    """Runs the pushes that arrive together in one write transaction (module docstring).

    ``begin`` starts the write transaction (waiting out other writers); ``after_commit``
    runs after each batch's commit (the WAL checkpointer)."""

    def __init__(self, conn: sqlite3.Connection, dialect: SQLiteDialect, mutators: Mutators,
                 write_lock: asyncio.Lock, *, begin: Callable[[], Awaitable[None]],
                 after_commit: Callable[[], None]) -> None:
        self._conn = conn
        self._dialect = dialect
        self._mutators = mutators
        self._write_lock = write_lock
        self._begin = begin
        self._after_commit = after_commit
        self._queue: deque[_Queued] = deque()
        #: Clear while a push (or, after it, a flusher task) runs the queue: pushes
        #: that arrive meanwhile queue up for its next batch.
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the leader's, while not idle
        self._flusher: asyncio.Task[None] | None = None
        #: Batches committed and pushes they held, for tests and benchmarks.
        self.batches = 0
        self.pushes = 0

    async def push(self, request: PushRequest, ctx: Context, *, limit: int,
                   view: str | None, checks_blobs: bool) -> PushOutcome:
        """Run ``request`` in the next batch; its outcome once that batch committed."""
        loop = asyncio.get_running_loop()
        leads = self._idle.is_set()
        if not leads and loop is not self._loop:
            # Its answer would be set from the other loop's thread, which never wakes
            # this one: refuse rather than hang (an in-process app shared by clients
            # with engine threads; docs/client.md).
            raise ServerError(
                "this app is serving pushes on another event loop at the same time; an "
                "app runs on one loop: give in-process clients thread=False, or serve the "
                "app on a loop of its own")
        answer: asyncio.Future[PushOutcome] = loop.create_future()
        self._queue.append(_Queued(request, ctx, limit, view, checks_blobs, answer))
        if not leads:
            return await answer
        # The first to arrive leads: it runs the batch in its own task, which costs a
        # lone push one turn of the loop and no task of its own.
        self._idle.clear()
        self._loop = loop
        try:
            await asyncio.sleep(0)  # pushes already on their way join this batch
            await self._flush_batch()  # ours is the queue's first: it is in this batch
        except BaseException:
            answer.cancel()  # our request is going away; the others are queued again
            raise
        finally:
            if self._queue:
                # Pushes that came while this batch ran: a task of their own runs them,
                # so that this push's answer does not wait for theirs.
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
            else:
                self._idle.set()
        return answer.result()

    async def close(self) -> None:
        """Wait until the pushes already queued have been answered."""
        await self._idle.wait()

    async def _flush(self) -> None:
        try:
            while self._queue:
                await self._flush_batch()
        finally:
            for queued in self._queue:  # left only if this task was cancelled
                queued.answer.cancel()
            self._queue.clear()
            self._idle.set()

    async def _flush_batch(self) -> None:
        async with self._write_lock:
            batch = self._take()
            if batch:
                await self._run(batch)
        if batch:
            self._after_commit()

    def _take(self) -> list[_Queued]:
        batch: list[_Queued] = []
        mutations = 0
        while self._queue and (not batch or mutations < BATCH_MUTATIONS):
            queued = self._queue.popleft()
            if queued.answer.done():  # its request was cancelled while it waited
                continue
            batch.append(queued)
            mutations += len(queued.request.mutations)
        return batch

    async def _run(self, batch: list[_Queued]) -> None:
        results: list[PushOutcome | Exception] = []
        try:
            try:
                results = await self._transaction(batch, careful=False)
            except NeedSavepoints:
                pass
            except Unavailable as exc:
                # Another writer held the database past the wait: so would a rerun.
                results = [exc] * len(batch)
            except Exception as exc:
                if len(batch) == 1:
                    results = [exc]  # what it would have got alone: it is alone
            if not results:
                # Outside the except blocks, so that what the rerun logs (a mutator's
                # traceback) is not chained to the first pass's exception.
                results = await self._transaction(batch, careful=True)
        except Exception as exc:
            for queued in batch:
                if not queued.answer.done():
                    queued.answer.set_exception(_unavailable(exc))
            return
        except BaseException:
            # The task running the batch was cancelled; the transaction was rolled back.
            # The batch's other pushes go back to the queue's front for the next batch.
            self._queue.extendleft(reversed([q for q in batch if not q.answer.done()]))
            raise
        self.batches += 1
        self.pushes += len(batch)
        for queued, result in zip(batch, results, strict=True):
            if queued.answer.done():
                continue  # cancelled meanwhile; the client finds it processed next time
            if isinstance(result, PushOutcome):
                queued.answer.set_result(result)
            else:
                queued.answer.set_exception(_unavailable(result))

    async def _transaction(
        self, batch: list[_Queued], *, careful: bool
    ) -> list[PushOutcome | Exception]:
        """The batch in one write transaction, committed if any push counted.

        The first pass is not ``careful``: no savepoints (they copy every page a push
        changes), and any push's failure rolls the whole batch back to be run again
        ``careful``ly, each push in a savepoint of its own and each mutation too."""
        conn = self._conn
        await self._begin()
        try:
            # One version for the batch, taken outside the savepoints: a push rolled
            # back to its savepoint leaves it to the others.
            (version,) = conn.execute(
                "UPDATE _plasma_meta SET version = version + 1, pushing = 1 RETURNING version"
            ).fetchone()
            results: list[PushOutcome | Exception] = []
            for queued in batch:
                if careful:
                    results.append(await self._isolated(queued, version))
                else:
                    # Without savepoints a push that processed nothing wrote nothing
                    # (undoing a write raises NeedSavepoints), so it can stay in.
                    results.append(await self._process(queued, version, savepoints=False))
            if any(isinstance(r, PushOutcome) and r.processed for r in results):
                conn.execute("UPDATE _plasma_meta SET pushing = 0")
                conn.execute("COMMIT")
            else:
                # Nothing counted (refusals, pushes already processed): the version it
                # took is no news, and a refused request writes nothing.
                conn.execute("ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    async def _isolated(self, queued: _Queued, version: int) -> PushOutcome | Exception:
        """One push inside savepoint ``plasma_push``: undone alone if it fails (its error
        is returned) or processes nothing."""
        conn = self._conn
        conn.execute("SAVEPOINT plasma_push")
        try:
            outcome = await self._process(queued, version, savepoints=True)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite ended the transaction: nothing of the batch stays
            conn.execute("ROLLBACK TO plasma_push")
            conn.execute("RELEASE plasma_push")
            return exc
        if not outcome.processed:
            conn.execute("ROLLBACK TO plasma_push")
        conn.execute("RELEASE plasma_push")
        return outcome

    async def _process(self, queued: _Queued, version: int, *,
                       savepoints: bool) -> PushOutcome:
        session = SQLitePushSession(
            self._conn, self._dialect, version=version, view=queued.view,
            savepoints=savepoints, checks_blobs=queued.checks_blobs)
        outcome = await process_push(session, queued.request, self._mutators, queued.ctx,
                                     limit=queued.limit)
        outcome.version = version
        return outcome


def _unavailable(exc: Exception) -> Exception:
    """What a push is told of ``exc``: a busy database is a 503 (try again)."""
    if isinstance(exc, sqlite3.OperationalError) and is_transient(exc):
        return Unavailable(f"the database is busy: {exc}")
    return exc
