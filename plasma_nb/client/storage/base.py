"""The storage contract: where a replica lives and how its commits become durable.

Every backend hands the client engine a SQLite connection (the replica) and
persists what each local commit changed. The engine does all reads and writes in
SQL; a backend only decides where the bytes live. The guarantees below are what
the engine relies on, and ``tests/client/storage/test_contract.py`` checks them
for every backend:

1. **Atomic commits.** After any crash, the state that ``load`` brings back is the
   state after some prefix of the commits handed to ``persist``: each commit is
   there whole or not at all.
2. **Durable on resolution.** Once the awaitable returned by ``persist(record)``
   resolves (a backend returns None when the commit is already durable), the
   commit survives a crash of the process, a kernel restart or a page reload.
3. **Ordered.** Commits become durable in the order they were made: if commit N
   is durable, so is every commit before it.
4. **Issued at once.** The engine calls ``persist`` right after SQLite's COMMIT,
   with the replica's lock still held. ``persist`` issues all its writes before
   it returns (it never awaits between them), which is what keeps guarantee 3
   true without a queue.
5. **A hole is fatal.** If a commit cannot be made durable, its awaitable raises
   ``StorageError`` and so does every later ``persist``: nothing after a lost
   commit may become durable. The engine reports it; reopening recovers the last
   durable state.
6. **Sharing.** A backend with ``shared = True`` lets several processes open the
   same database at once. Every write then runs in ``BEGIN IMMEDIATE`` and the
   engine re-reads shared state (meta, clients, outbox) inside each write
   transaction instead of trusting what it cached.
7. **Closing.** ``close()`` is idempotent and waits for pending persists; after
   it, ``persist`` raises ``StorageClosed``. Every connection a backend opens is
   closed by ``close()``.

The commit record names rows by table and primary key (a tuple: internal tables
have composite keys) and carries the new row as SQLite stores it, so a backend
needs no knowledge of the schema to save it or load it back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["CommitRecord", "Key", "Row", "Storage", "StoredRow"]

Key = tuple[Any, ...]
Row = dict[str, Any]
# A row as loaded back: its table and its values (column name -> SQLite value).
StoredRow = tuple[str, Row]


@dataclass
class CommitRecord:
    """What one local commit changed: new rows (as stored) and deleted keys."""

    puts: dict[str, dict[Key, Row]] = field(default_factory=dict)
    deletes: dict[str, set[Key]] = field(default_factory=dict)

    def put(self, table: str, key: Key, row: Row) -> None:
        self.deletes.get(table, set()).discard(key)
        self.puts.setdefault(table, {})[key] = row

    def delete(self, table: str, key: Key) -> None:
        self.puts.get(table, {}).pop(key, None)
        self.deletes.setdefault(table, set()).add(key)

    def __bool__(self) -> bool:
        return any(self.puts.values()) or any(self.deletes.values())

    def __len__(self) -> int:
        return sum(map(len, self.puts.values())) + sum(map(len, self.deletes.values()))


class Storage:
    """Base class of the storage backends; see the module docstring for the contract."""

    #: The name used by ``connect(storage=...)``.
    kind: ClassVar[str] = "abstract"
    #: Several processes may open the same database at once (guarantee 6).
    shared: ClassVar[bool] = False
    #: ``persist`` reads the record's rows; when False the engine does not build them.
    needs_records: ClassVar[bool] = False

    async def open(self) -> sqlite3.Connection:
        """Open the replica's connection (autocommit mode, usable from any thread).

        Tables are created by the engine afterwards; then it calls ``load``.
        """
        raise NotImplementedError

    async def load(
        self, conn: sqlite3.Connection, columns: Mapping[str, Sequence[str]]
    ) -> None:
        """Bring persisted rows back into ``conn`` (whose tables now exist).

        ``columns`` lists each table's columns; rows of unknown tables and values of
        unknown columns are dropped (the schema changed since they were stored).
        Backends whose SQLite file *is* the storage do nothing.
        """

    def persist(self, record: CommitRecord) -> Awaitable[None] | None:
        """Make one committed change durable; None if it already is."""
        raise NotImplementedError

    def exclusive(self) -> AbstractAsyncContextManager[None]:
        """Hold the database's write lock for a block of writes other than local
        mutations (a sync cycle, start-up), caught up with the other clients that
        share it. Backends whose writes need no such lock (SQLite serializes them
        itself) do nothing."""
        return nullcontext()

    async def close(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """Where the data lives, for status and error messages."""
        return self.kind

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def connect_sqlite(database: str) -> sqlite3.Connection:
    """A connection as the engine expects it: explicit transactions, any thread.

    The engine serializes access with its own lock, so sqlite3's same-thread check
    only gets in the way of the CPython engine thread.
    """
    return sqlite3.connect(
        database, isolation_level=None, check_same_thread=False, timeout=30.0
    )


def insert_rows(
    conn: sqlite3.Connection, rows: Iterable[StoredRow], columns: Mapping[str, Sequence[str]]
) -> int:
    """Insert stored rows into their tables (used by backends that load at start)."""
    count = 0
    statements: dict[tuple[str, tuple[str, ...]], str] = {}
    for table, row in rows:
        known = columns.get(table)
        if known is None:
            continue
        names = tuple(n for n in row if n in known)
        sql = statements.get((table, names))
        if sql is None:
            cols = ", ".join(f'"{n}"' for n in names)
            marks = ", ".join("?" for _ in names)
            sql = f'INSERT OR REPLACE INTO "{table}" ({cols}) VALUES ({marks})'
            statements[(table, names)] = sql
        try:
            conn.execute(sql, [row[n] for n in names])
        except sqlite3.IntegrityError:
            # A stored row that no longer fits (a new NOT NULL column): the full pull
            # that follows a schema change brings it back.
            continue
        count += 1
    return count
