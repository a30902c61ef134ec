"""The replica: the local SQLite database, its write transactions and what they changed.

All access goes through one ``Replica``. Its lock serializes the threads of one
process (the caller's and, in CPython, the engine's); ``BEGIN IMMEDIATE``
serializes processes that share a file. A write transaction (``with
replica.write() as w``) captures what it touched, and on COMMIT hands the
storage its commit record and the subscribers their net ``Change``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from ..core.dialect import SQLiteDialect
from ..core.errors import StorageClosed, StorageError
from ..core.query import Select
from ..core.schema import Schema
from .capture import Capture
from .change import Change
from .decoder import WireDecoder, row_decoder
from .journal import Journal, create_journal_tables
from .layout import TableInfo, create_tables
from .outcome import Outcome
from .storage.base import CommitRecord, Storage
from .trace import KeyTypes, key_types

__all__ = ["Replica", "Write"]

Row = dict[str, Any]


class Replica:
    """The local database of one client group."""

    def __init__(self, storage: Storage, schema: Schema) -> None:
        self.storage = storage
        self.schema = schema
        self.dialect = SQLiteDialect()
        # Reentrant: a subscriber or a mutator run inside a write may read.
        self.lock = threading.RLock()
        self.tables: dict[str, TableInfo] = {}
        self._user_tables: list[TableInfo] = []
        #: Each user table's key column and type, for trace.py (set by open()).
        self.key_types: KeyTypes = {}
        #: (cookie,) while this process's traces of the pending mutations describe how
        #: the replica came to be: set by its own rebases (rebase.py).
        self.traced_cookie: tuple[int | None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._capture: Capture | None = None
        self._decoders: dict[str, Any] = {}
        self._wire_decoders: dict[str, WireDecoder] = {}
        # Whether anyone listens for changes; the engine points it at its subscribers.
        # Building a Change for a 10k-row pull costs, so it is skipped when nobody asks.
        self.observed: Callable[[], bool] = lambda: True
        self._want_change = True  # observed(), sampled when a write transaction begins
        # Other processes' commits, for a file that several processes share (journal.py).
        self.journal: Journal | None = None
        # Called after each COMMIT, still under the lock, so in commit order, with the
        # commit's net change (live.py keeps live queries current with it). Must not raise.
        self.commit_hooks: list[Callable[[Change], None]] = []

    async def open(self) -> bool:
        """Open and lay out the database; True if user tables changed shape."""
        conn = await self.storage.open()
        with self.lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self.tables, changed = create_tables(conn, self.schema, self.dialect)
                if self.storage.shared:
                    create_journal_tables(conn, self.schema, self.dialect)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        await self.storage.load(conn, {name: t.columns for name, t in self.tables.items()})
        with self.lock:
            # Internal tables need capturing only when the storage persists records.
            captured = [
                t for t in self.tables.values()
                if t.declared is not None or self.storage.needs_records
            ]
            self._capture = Capture(conn, captured)
            self._capture.install()
            self._conn = conn
            self._user_tables = [t for t in self.tables.values() if t.declared is not None]
            self.key_types = key_types(self.tables)
        for name, t in self.tables.items():
            if t.declared is not None:
                self._decoders[name] = row_decoder(tuple(t.declared), self.dialect)
        if self.storage.shared:
            self.journal = Journal(self.tables.values(), self._decode_values)
        return changed

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageClosed(f"the replica in {self.storage.describe()} is closed")
        return self._conn

    @property
    def user_tables(self) -> list[TableInfo]:
        return self._user_tables

    def write(self) -> Write:
        return Write(self)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def meta(self, key: str, default: Any = None) -> Any:
        rows = self.read("SELECT value FROM _plasma_meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def query(
        self, stmt: Select | str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[Row]:
        """Rows of a DSL select (values as Python types) or of an SQL string (as stored)."""
        with self.lock:
            if isinstance(stmt, str):
                cur = self.conn.execute(stmt, params)
                names = [d[0] for d in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur]
            compiled = self.dialect.compile(stmt)
            decode = compiled.decode
            assert decode is not None
            return [decode(row) for row in self.conn.execute(compiled.sql, compiled.params)]

    def wire_decoder(self, table: str) -> WireDecoder:
        decoder = self._wire_decoders.get(table)
        if decoder is None:
            declared = self.tables[table].declared
            assert declared is not None
            decoder = self._wire_decoders[table] = WireDecoder(declared, self.dialect)
        return decoder

    def decode(self, table: str, row: Row) -> Row:
        """A stored row as Python values (booleans, JSON, datetimes)."""
        t = self.tables[table]
        return self._decoders[table]([row[c] for c in t.columns])  # type: ignore[no-any-return]

    async def close(self) -> None:
        with self.lock:
            self._conn = None
        await self.storage.close()

    # -- other processes' commits (journal.py) ---------------------------------------

    def watch(self, tables: Iterable[str], now_ms: int) -> bool:
        """Hear other processes' commits to ``tables`` (none: stop). False when called
        inside this thread's own write transaction: try again after it."""
        if self.journal is None:
            return True
        with self.lock:
            if self.conn.in_transaction:
                return False
            with self.write() as w:
                self.journal.set_watched(w.conn, tables, now_ms)
        return True

    def poll_others(self) -> None:
        """If another process committed to a watched table, report its net change
        (through ``journal.on_change``)."""
        journal = self.journal
        if journal is None or not journal.watched:
            return
        with self.lock:
            if self.conn.in_transaction or not journal.moved_elsewhere(self.conn):
                return
            with self.write():
                pass  # catching up is what beginning a write does

    @property
    def needs_capture(self) -> bool:
        """Whether a transaction's net change is needed (for subscribers, storage or
        other processes' watchers)."""
        return (self.storage.needs_records or self._want_change
                or (self.journal is not None and bool(self.journal.others)))

    def _collect(self) -> tuple[Change, CommitRecord]:
        assert self._capture is not None
        record = CommitRecord()
        want_record = self.storage.needs_records
        want_change = self._want_change
        if not want_record and not want_change:
            return Change(), record
        if not want_record:
            return self._net_change(), record
        added: dict[str, list[Row]] = {}
        removed: dict[str, list[Row]] = {}
        changed: dict[str, list[tuple[Row, Row]]] = {}
        for name, t in self.tables.items():
            user = t.declared is not None
            if not want_record and not user:
                continue
            columns = t.columns
            for key, before, after in self._capture.touched(name):
                if want_record:
                    if after is None:
                        record.delete(name, key)
                    else:
                        record.put(name, key, dict(zip(columns, after, strict=True)))
                if not user or not want_change or before == after:
                    continue
                if before is None:
                    added.setdefault(name, []).append(self._decode_values(name, after))  # type: ignore[arg-type]
                elif after is None:
                    removed.setdefault(name, []).append(self._decode_values(name, before))
                else:
                    pair = (self._decode_values(name, before), self._decode_values(name, after))
                    changed.setdefault(name, []).append(pair)
        return Change(added, removed, changed), record

    def _net_change(self) -> Change:
        """The commit's change to the user's tables, straight from SQL: only the rows
        that differ come back, and only the columns needed."""
        assert self._capture is not None
        added: dict[str, list[Row]] = {}
        removed: dict[str, list[Row]] = {}
        changed: dict[str, list[tuple[Row, Row]]] = {}
        for name in self._decoders:
            decode = self._decoders[name]
            new, gone, differ = self._capture.net_change(name)
            if new:
                added[name] = list(map(decode, new))
            if gone:
                removed[name] = list(map(decode, gone))
            if differ:
                changed[name] = [(decode(before), decode(after)) for before, after in differ]
        return Change(added, removed, changed)

    def _decode_values(self, table: str, values: Sequence[Any]) -> Row:
        return self._decoders[table](values)  # type: ignore[no-any-return]


class Write:
    """One write transaction: ``with replica.write() as w: ...``.

    After the block, ``w.change`` is the net change and ``w.durable`` resolves
    when the storage has made the commit durable.
    """

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.change = Change()
        self.durable: Outcome[None] = Outcome()
        self._savepoints = 0
        self._extra: Change | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        return self.replica.conn

    def __enter__(self) -> Write:
        self.replica.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            replica = self.replica
            replica._want_change = replica.observed()
            assert replica._capture is not None
            replica._capture.reset()
            if replica.journal is not None:
                replica.journal.begin(self.conn)
        except BaseException:
            if self.replica._conn is not None and self.replica._conn.in_transaction:
                self.replica._conn.execute("ROLLBACK")
            self.replica.lock.release()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        replica = self.replica
        try:
            if exc_type is not None:
                if replica._conn is not None:
                    replica._conn.execute("ROLLBACK")
                return
            try:
                change, record = replica._collect()
                if replica.journal is not None:
                    replica.journal.commit(self.conn)
                self.conn.execute("COMMIT")
            except sqlite3.Error as error:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                where = replica.storage.describe()
                raise StorageError(f"cannot commit to {where}: {error}") from error
            if self._extra is not None:
                change = change.merged(self._extra)
            self.change = change
            for hook in replica.commit_hooks:
                hook(change)
            self._persist(record)
        finally:
            replica.lock.release()

    def _persist(self, record: CommitRecord) -> None:
        try:
            pending = self.replica.storage.persist(record)
        except Exception as error:
            self.durable.set_exception(error)
            return
        if pending is None:
            self.durable.set_result(None)
            return
        future = pending if hasattr(pending, "add_done_callback") else None
        if future is None:  # pragma: no cover - every backend returns a future
            raise StorageError("storage.persist() must return None or a future")

        def settle(fut: Any) -> None:
            if fut.cancelled():
                self.durable.set_exception(StorageError("the durable write was cancelled"))
            elif fut.exception() is not None:
                self.durable.set_exception(fut.exception())
            else:
                self.durable.set_result(None)

        future.add_done_callback(settle)

    # -- inside the transaction ------------------------------------------------

    def add_change(self, change: Change | None) -> None:
        """Part of the net change that a step worked out itself, writing without the
        capture (patch.py); the rest comes from the capture at COMMIT."""
        if change is not None:
            self._extra = change if self._extra is None else self._extra.merged(change)

    def segment(self, number: int, *, active: bool = True) -> None:
        assert self.replica._capture is not None
        self.replica._capture.segment(number, active=active)

    def pre_images(self, table: str, segment: int) -> Iterator[tuple[tuple[Any, ...], Row | None]]:
        assert self.replica._capture is not None
        return self.replica._capture.pre_images(table, segment)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo the block's writes if it raises (the exception propagates)."""
        self._savepoints += 1
        name = f"plasma_sp{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM _plasma_meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO _plasma_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )
