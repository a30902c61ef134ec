"""The IndexedDB backend (Pyodide): an in-memory replica written through to IndexedDB.

The replica is an in-memory SQLite database. Every commit's record (the rows it
put or deleted, in every table, internal ones included) is written to IndexedDB
in one ``readwrite`` transaction with ``durability: "strict"``, and is durable
when that transaction fires ``complete``. At start every stored row is loaded back.

Several tabs (or kernels) may open one database. Each has its own in-memory
replica and its own client id; IndexedDB is the state they share. Writes to it
are serialized by a Web Lock and numbered: each write also stores the keys it
changed under its number in the ``log`` store (the change journal) and moves
``head``. A tab remembers the number it last saw. Before it writes, holding the
lock, it catches up: if ``head`` moved, it reads the rows other tabs changed and
hands them to the client (tabs.py), which rebases this tab's unwritten mutations
onto them in one local transaction; that transaction's record is what gets
written. So IndexedDB only ever holds states some tab computed whole. A
``BroadcastChannel`` message after each write wakes the other tabs to catch up
(live queries then show the other tab's change). Details: docs/storage.md.

Commits made outside the lock (a mutation applied at once by ``mutate()``) are
queued and written, in order, by a flush task; commits made inside
``exclusive()`` (each local step of a sync cycle, heartbeats, start-up: everything
but mutations) are caught up and written at once.

JavaScript interop is deliberately narrow: a small JavaScript helper does all the
IndexedDB work, and only strings, numbers and handles cross the boundary. The
helper and the layout of keys and values are in indexeddb_format.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from ...core.errors import StorageClosed, StorageError
from .base import CommitRecord, Key, Row, Storage, connect_sqlite, insert_rows
from .indexeddb_format import (
    HELPER_JS,
    STORE,
    decode_key,
    decode_rows,
    encode_key,
    encode_record,
)

__all__ = ["Foreign", "IndexedDBStorage"]

logger = logging.getLogger("plasma_nb.client")

#: What other tabs changed: table -> key -> the row now in IndexedDB (None: deleted),
#: and whether it is every row (the journal no longer reached back far enough).
Foreign = tuple[dict[str, dict[Key, Row | None]], bool]
#: Called with the foreign rows and this tab's unwritten commit records, under the
#: lock; it brings the replica to IndexedDB's state plus those commits, rebased, in one
#: write transaction, whose record the storage then writes (tabs.py).
Integrate = Callable[[Foreign, list[CommitRecord]], None]


def _site_base() -> str:
    # The kernel runs in a worker under <site>/extensions/...; the site's base path
    # keeps two lite sites on one origin apart (DESIGN section 3).
    import js

    location = getattr(js, "location", None)
    if location is None:
        return ""
    return str(location.pathname).split("/extensions/")[0].rstrip("/")


class IndexedDBStorage(Storage):
    """``connect(storage="indexeddb")``, the default in Pyodide.

    ``database`` overrides the IndexedDB database name (``plasma_nb:<base>:<name>``);
    ``factory`` overrides ``indexedDB`` (tests pass fake-indexeddb's).
    """

    kind = "indexeddb"
    needs_records = True

    def __init__(
        self, name: str = "default", *, database: str | None = None, factory: Any = None
    ) -> None:
        self.name = name
        self._database = database
        self._factory = factory
        self._helper: Any = None
        self._db: Any = None
        self._conn: sqlite3.Connection | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._broken: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        #: The journal number this tab's replica reflects (plus its queued commits).
        self._seen = 0
        #: Commits made without the lock, oldest first, with the futures they resolve.
        self._queue: list[tuple[CommitRecord, asyncio.Future[None]]] = []
        #: Inside ``exclusive()`` and caught up: commits are written at once.
        self._direct = False
        #: During a rebase onto other tabs' writes: the rows IndexedDB holds for the keys
        #: read (table -> key -> row, None: absent), which need no writing back.
        self._known: dict[str, dict[Key, Row | None]] | None = None
        self._mutex: asyncio.Lock | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._channel: Any = None
        self._listener: Any = None
        #: Set by tabs.attach(); without it, another tab's write is an error here.
        self.integrate: Integrate | None = None
        #: How many times this tab caught up with other tabs' writes (for status and tests).
        self.writes_seen = 0
        #: ... of which with commits of its own waiting to be written (rebased onto them).
        self.rebased = 0
        #: The highest journal number another tab announced (BroadcastChannel).
        self._heard_head = 0

    @property
    def database(self) -> str:
        if self._database is None:
            self._database = f"plasma_nb:{_site_base()}:{self.name}"
        return self._database

    def _ensure_helper(self) -> None:
        if self._helper is None:
            from pyodide.code import run_js

            self._loop = asyncio.get_running_loop()
            self._helper = run_js(HELPER_JS)
            self._mutex = asyncio.Lock()

    async def open(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageClosed(f"storage {self.describe()} is closed")
        if self._conn is not None:
            return self._conn
        import js
        from pyodide.ffi import create_proxy

        self._ensure_helper()
        factory = self._factory if self._factory is not None else js.indexedDB
        try:
            self._db = await self._helper.open(factory, self.database, STORE)
        except Exception as exc:
            raise StorageError(f"cannot open IndexedDB {self.database!r}: {exc}") from exc
        self._listener = create_proxy(self._heard)
        self._channel = self._helper.channel(f"plasma_nb-tabs:{self.database}", self._listener)
        self._conn = connect_sqlite(":memory:")
        return self._conn

    async def load(self, conn: sqlite3.Connection, columns: Mapping[str, Sequence[str]]) -> None:
        try:
            dump = await self._helper.loadAll(self._db, STORE)
        except Exception as exc:
            raise StorageError(f"cannot read IndexedDB {self.database!r}: {exc}") from exc
        keys, values, head = json.loads(str(dump))
        conn.execute("BEGIN")
        try:
            insert_rows(conn, decode_rows(keys, values), columns)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._seen = int(head)

    # -- writing --------------------------------------------------------------------

    def persist(self, record: CommitRecord) -> Awaitable[None] | None:
        if self._closed:
            raise StorageClosed(f"storage {self.describe()} is closed")
        self._check_broken()
        if not record:
            return None
        assert self._loop is not None
        if self._known is not None:
            record = _unknown(record, self._known)
            if not record:
                return None  # a rebase that only took in other tabs' rows: nothing to write
        if self._direct:
            return self._write(record)
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.append((record, done))
        self._schedule()
        return done

    def _check_broken(self) -> None:
        if self._broken is not None:
            raise StorageError(
                f"an earlier write to IndexedDB {self.database!r} failed ({self._broken}); "
                "later commits cannot be made durable: reopen the client"
            )

    def _write(self, record: CommitRecord) -> asyncio.Future[None]:
        """Issue one numbered write now (the lock is held and this tab is caught up)."""
        assert self._loop is not None
        seq = self._seen + 1
        self._seen = seq
        promise = self._helper.write(self._db, STORE, encode_record(record, seq))
        done: asyncio.Future[None] = self._loop.create_future()
        written = asyncio.ensure_future(promise, loop=self._loop)
        self._pending.add(done)

        def settle(fut: asyncio.Future[Any]) -> None:
            self._pending.discard(done)
            exc = fut.exception()
            if exc is not None:
                if self._broken is None:
                    self._broken = exc
                done.set_exception(StorageError(f"IndexedDB write failed: {exc}"))
            else:
                done.set_result(None)
                if self._channel is not None:
                    self._channel.postMessage(seq)

        written.add_done_callback(settle)
        return done

    # -- the lock, catching up, and the flush task ----------------------------------------

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold this database's write lock, caught up with every other tab: the commits
        made inside are written at once, in order. Waits for other tabs' writes."""
        self._ensure_helper()
        assert self._mutex is not None
        async with self._mutex:
            release = await self._acquire()
            try:
                if self._db is not None and not self._closed:
                    await self._catch_up()
                self._direct = True
                yield
            finally:
                self._direct = False
                try:
                    # Hold the lock until this tab's writes completed: the next holder
                    # then reads a head that includes them.
                    while self._pending:
                        await asyncio.gather(*list(self._pending), return_exceptions=True)
                finally:
                    if release is not None:
                        release()

    async def _acquire(self) -> Any:
        """The Web Lock's release function (None where there are no Web Locks)."""
        granted = asyncio.ensure_future(self._helper.lock(f"plasma_nb-write:{self.database}"))
        try:
            return await asyncio.shield(granted)
        except asyncio.CancelledError:
            # The request stays queued in the browser: release the lock once it is
            # granted, or it would be held for good (every tab's writes then stall).
            def release(fut: asyncio.Future[Any]) -> None:
                if not fut.cancelled() and fut.exception() is None and fut.result() is not None:
                    fut.result()()

            granted.add_done_callback(release)
            raise

    async def _catch_up(self) -> None:
        """Bring the replica up to IndexedDB's head and write the queued commits."""
        self._check_broken()
        answer = json.loads(await self._read("read the journal of", self._helper.since(
            self._db, self._seen)))
        head, numbers, entries = int(answer[0]), answer[1], answer[2]
        if head == self._seen:
            queue, self._queue = self._queue, []
            if queue:
                # One transaction for the lot: a burst of mutations (a cell's worth) is
                # durable together, in one write, still atomically and in order.
                written = self._write(_merged(record for record, _ in queue))
                for _, done in queue:
                    _chain(written, done)
            return
        complete = numbers == list(range(self._seen + 1, head + 1))
        foreign: dict[str, dict[Key, Row | None]] = {}
        if complete:
            wanted: set[str] = {k for entry in entries for k in json.loads(entry)}
            fetched: set[str] = set()
            # Mutations made while the rows are read add keys to fetch (their rows are
            # reset to IndexedDB's before they are replayed).
            while True:
                wanted |= {encode_key(t, k) for record, _ in self._queue
                           for t, keys in (*record.puts.items(), *record.deletes.items())
                           for k in keys}
                todo = sorted(wanted - fetched)
                if not todo:
                    break
                values = json.loads(await self._read("read", self._helper.getMany(
                    self._db, STORE, json.dumps(todo))))
                for text, value in zip(todo, values, strict=True):
                    table, key = decode_key(text)
                    foreign.setdefault(table, {})[key] = (
                        None if value is None else json.loads(value))
                fetched.update(todo)
        else:
            dump = json.loads(await self._read("read", self._helper.loadAll(self._db, STORE)))
            head = int(dump[2])
            foreign = _keyed(dump[0], dump[1])
        queue, self._queue = self._queue, []
        self._seen = head
        self.writes_seen += 1
        self.rebased += bool(queue)
        if self.integrate is None:
            error = StorageError(
                f"another tab wrote to IndexedDB {self.database!r} and this replica has no "
                "client to rebase onto it")
            self._broken = error
            for _, done in queue:
                done.set_exception(error)
            raise error
        self._direct = True  # the rebase's own commit is written at once
        self._known = foreign  # ... less the rows it only set to what IndexedDB holds
        try:
            self.integrate((foreign, not complete), [record for record, _ in queue])
        except BaseException as exc:
            self._broken = exc
            for _, done in queue:
                if not done.done():
                    done.set_exception(StorageError(
                        f"could not rebase onto another tab's writes: {exc}"))
            raise
        finally:
            self._known = None
        # The rebase rewrote every row the queued commits touched: they are durable
        # once its write (and any before it) completes.
        pending = list(self._pending)
        for _, done in queue:
            _after(pending, done, self._loop)

    async def _read(self, what: str, promise: Any) -> str:
        try:
            return str(await promise)
        except Exception as exc:
            raise StorageError(f"cannot {what} IndexedDB {self.database!r}: {exc}") from exc

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            assert self._loop is not None
            self._flusher = self._loop.create_task(self._flush())

    async def _flush(self) -> None:
        while (self._queue or self._wanted()) and not self._broken:
            try:
                async with self.exclusive():
                    pass
            except Exception as exc:  # recorded in _broken; the futures say why
                logger.warning("writing to IndexedDB failed: %s", exc)
                if self._broken is None:
                    self._broken = exc
                queue, self._queue = self._queue, []
                for _, done in queue:
                    if not done.done():
                        done.set_exception(StorageError(f"IndexedDB write failed: {exc}"))
                return

    def _wanted(self) -> bool:
        return self._heard_head > self._seen

    def _heard(self, head: Any) -> None:
        """Another tab wrote (BroadcastChannel): catch up, so that live queries show it."""
        try:
            number = int(head)
        except (TypeError, ValueError):
            return
        if self._closed or number <= self._seen:
            return
        self._heard_head = max(self._heard_head, number)
        self._schedule()

    def catch_up_soon(self) -> None:
        """Look for other tabs' writes now (used where no message may arrive)."""
        if self._db is not None and not self._closed:
            self._heard_head = max(self._heard_head, self._seen + 1)
            self._schedule()

    async def close(self) -> None:
        if self._closed:
            return
        if self._flusher is not None and not self._flusher.done():
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._queue and self._broken is None and self._db is not None:
            await asyncio.gather(self._flush(), return_exceptions=True)
        self._closed = True
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._listener is not None:
            self._listener.destroy()
            self._listener = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def describe(self) -> str:
        return f"indexeddb:{self._database or self.name}"


def _keyed(keys: list[str], values: list[str]) -> dict[str, dict[Key, Row | None]]:
    out: dict[str, dict[Key, Row | None]] = {}
    for text, value in zip(keys, values, strict=True):
        table, key = decode_key(text)
        out.setdefault(table, {})[key] = json.loads(value)
    return out


def _merged(records: Iterable[CommitRecord]) -> CommitRecord:
    """One record with the last word of ``records`` (oldest first) on every key."""
    out = CommitRecord()
    for record in records:
        for table, keys in record.deletes.items():
            for key in keys:
                out.delete(table, key)
        for table, rows in record.puts.items():
            for key, row in rows.items():
                out.put(table, key, row)
    return out


def _unknown(record: CommitRecord, known: dict[str, dict[Key, Row | None]]) -> CommitRecord:
    """``record`` without the rows that IndexedDB already holds as they are."""
    out = CommitRecord()
    missing = object()
    for table, rows in record.puts.items():
        there = known.get(table, {})
        for key, row in rows.items():
            if there.get(key, missing) != row:
                out.put(table, key, row)
    for table, keys in record.deletes.items():
        there = known.get(table, {})
        for key in keys:
            if there.get(key, missing) is not None:
                out.delete(table, key)
    return out


def _chain(source: asyncio.Future[None], target: asyncio.Future[None]) -> None:
    def settle(fut: asyncio.Future[None]) -> None:
        if target.done():
            return
        exc = fut.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(None)

    source.add_done_callback(settle)


def _after(
    pending: list[asyncio.Future[None]], target: asyncio.Future[None],
    loop: asyncio.AbstractEventLoop | None,
) -> None:
    """Resolve ``target`` once every future in ``pending`` has (failing with the first
    failure)."""
    if not pending:
        if not target.done():
            target.set_result(None)
        return
    gathered = asyncio.gather(*pending, return_exceptions=True)

    def settle(fut: asyncio.Future[list[Any]]) -> None:
        if target.done():
            return
        errors = [r for r in fut.result() if isinstance(r, BaseException)]
        if errors:
            target.set_exception(errors[0])
        else:
            target.set_result(None)

    gathered.add_done_callback(settle)
