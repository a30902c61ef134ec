"""The journal: how processes that share one SQLite file hear about each other's commits.

A process learns what its own commits changed from its change capture (capture.py),
which sees only its own connection. Another process's commits reach it through the
shared file:

- a process with subscribers registers as a *watcher* in ``_plasma_watchers``: the
  tables it watches, how far into the journal it has read, and a heartbeat;
- a process that commits a change to a table some *other* watcher watches also
  writes, in the same transaction, the pre-image of each row it touched to
  ``_plasma_journal_<table>``, under the next journal number (``journal_seq`` in
  ``_plasma_meta``). The pre-images come from the capture's shadow tables in one
  ``INSERT ... SELECT`` per table: no Python per row;
- the watcher polls ``PRAGMA data_version`` (SQLite bumps it when another connection
  commits; one cheap call) about every 100 ms while it has subscribers. When the
  journal moved past its cursor, it reads the entries after the cursor: each key's
  first pre-image against the row as it is now is the net change, the same rule as
  for a local commit, and one ``Change`` covers every commit read at once. It also
  catches up at the start of each of its own write transactions, so the window it
  reads never straddles one of its own commits (whose change it reported itself).

Why a journal of pre-images rather than diffing the watched tables: a diff needs a
copy of every watched row in memory and a scan of whole tables after each foreign
commit; the journal costs the writer one set-based insert of the rows it touched, and
only while another process watches that table, and costs the reader a range scan of
what changed. Nothing is journaled while nobody else watches.

Entries are pruned once every watcher has read them. A watcher whose process died
stops counting when its heartbeat is older than the clients' lease.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..core.dialect import SQLiteDialect, quote
from ..core.ids import new_id
from ..core.schema import Schema
from .capture import first_pre_images_sql, net_rows
from .change import Change
from .layout import TableInfo

__all__ = ["JOURNAL_PREFIX", "Journal", "create_journal_tables", "journal_table"]

JOURNAL_PREFIX = "_plasma_journal_"

_WATCHERS_DDL = (
    "CREATE TABLE IF NOT EXISTS _plasma_watchers "
    "(watcher TEXT PRIMARY KEY, tables TEXT NOT NULL, seen INTEGER NOT NULL, "
    "heartbeat INTEGER NOT NULL)"
)

Row = dict[str, Any]


def journal_table(name: str) -> str:
    return JOURNAL_PREFIX + name


def create_journal_tables(conn: sqlite3.Connection, schema: Schema, dialect: SQLiteDialect) -> None:
    """The watchers table and one journal per user table (inside the caller's transaction)."""
    conn.execute(_WATCHERS_DDL)
    for t in schema:
        name = journal_table(t._name)
        columns = ("_seq", "_e", *(c.name for c in t))
        defs = ['"_seq" INTEGER NOT NULL', '"_e" INTEGER NOT NULL']
        defs += [f"{quote(c.name)} {dialect.sql_type(c)}" for c in t]
        defs.append(f'PRIMARY KEY ("_seq", {quote(t._pk.name)})')
        existing = tuple(r[1] for r in conn.execute(f"PRAGMA main.table_info({quote(name)})"))
        if existing != columns:
            # New, or the table changed shape: old entries describe rows that a schema
            # change replaces with a full pull anyway.
            conn.execute(f"DROP TABLE IF EXISTS {quote(name)}")
            conn.execute(f"CREATE TABLE {quote(name)} ({', '.join(defs)})")


class Journal:
    """This connection's side of the journal: as a writer and, with subscribers, a watcher."""

    def __init__(
        self, tables: Iterable[TableInfo], decode: Callable[[str, Sequence[Any]], Row]
    ) -> None:
        self.watcher = new_id()
        self._tables = {t.name: t for t in tables if t.declared is not None}
        self._decode = decode
        self._write_sql: dict[str, str] = {}
        self._read_sql: dict[str, str] = {}
        for name, t in self._tables.items():
            log = quote(journal_table(name))
            cols = ", ".join(quote(c) for c in t.columns)
            self._write_sql[name] = (
                f'INSERT INTO {log} ("_seq", "_e", {cols}) SELECT ?, "_e", {cols} '
                f"FROM ({first_pre_images_sql(t)})"
            )
            on = " AND ".join(f"t.{quote(k)} = j.{quote(k)}" for k in t.key)
            before = ", ".join(f"j.{quote(c)}" for c in t.columns)
            after = ", ".join(f"t.{quote(c)}" for c in t.columns)
            self._read_sql[name] = (
                f'SELECT j."_e", {before}, {after} FROM {log} j '
                f'LEFT JOIN main.{quote(name)} t ON {on} WHERE j."_seq" > ? ORDER BY j."_seq"'
            )
        #: The tables this connection's subscribers watch (empty: not a watcher).
        self.watched: frozenset[str] = frozenset()
        #: The journal number this watcher has read up to.
        self.cursor = 0
        #: The tables other watchers watch, read at the start of each write.
        self.others: frozenset[str] = frozenset()
        #: Called with the net change of other connections' commits (inside a write).
        self.on_change: Callable[[Change], None] | None = None
        self._data_version: int | None = None
        self._now_ms = 0  # the latest time the engine gave, for re-registering

    # -- writing (inside a write transaction) -------------------------------------------

    def begin(self, conn: sqlite3.Connection) -> None:
        """At BEGIN: learn what others watch, and catch up if this connection watches."""
        others: set[str] = set()
        for watcher, tables in conn.execute("SELECT watcher, tables FROM _plasma_watchers"):
            if watcher != self.watcher:
                others.update(json.loads(tables))
        self.others = frozenset(others.intersection(self._tables))
        if self.watched:
            self._catch_up(conn)

    def commit(self, conn: sqlite3.Connection) -> None:
        """Before COMMIT: journal the pre-images of the rows others watch."""
        if not self.others:
            return
        seq = _journal_seq(conn) + 1
        written = 0
        for name in self.others:
            written += conn.execute(self._write_sql[name], (seq,)).rowcount
        if written:
            _set_journal_seq(conn, seq)

    # -- watching ----------------------------------------------------------------------------

    def set_watched(self, conn: sqlite3.Connection, tables: Iterable[str], now_ms: int) -> None:
        """Register (or unregister, with no tables) as a watcher; inside a write."""
        wanted = frozenset(tables).intersection(self._tables)
        if wanted == self.watched:
            return
        if not wanted:
            conn.execute("DELETE FROM _plasma_watchers WHERE watcher = ?", (self.watcher,))
            self.watched = frozenset()
            self._prune(conn)
            return
        if not self.watched:
            self.cursor = _journal_seq(conn)  # from now on
            self._data_version = None
        self.watched = wanted
        self._register(conn, now_ms)

    def _register(self, conn: sqlite3.Connection, now_ms: int) -> None:
        self._now_ms = now_ms
        conn.execute(
            "INSERT INTO _plasma_watchers (watcher, tables, seen, heartbeat) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (watcher) DO UPDATE SET tables = excluded.tables, "
            "seen = excluded.seen, heartbeat = excluded.heartbeat",
            (self.watcher, json.dumps(sorted(self.watched)), self.cursor, now_ms),
        )

    def heartbeat(self, conn: sqlite3.Connection, now_ms: int, lease_ms: int) -> None:
        """Keep this watcher alive and forget dead ones; inside a write."""
        if self.watched:
            # Re-registers if another process reaped this one (after a long suspension).
            self._register(conn, now_ms)
        conn.execute(
            "DELETE FROM _plasma_watchers WHERE heartbeat < ? AND watcher != ?",
            (now_ms - lease_ms, self.watcher),
        )
        self._prune(conn)

    def moved_elsewhere(self, conn: sqlite3.Connection) -> bool:
        """Whether another connection committed and the journal moved past the cursor:
        one ``PRAGMA data_version`` when nothing happened."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return False
        self._data_version = version
        return _journal_seq(conn) > self.cursor

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        seq = _journal_seq(conn)
        if seq <= self.cursor:
            return
        added: dict[str, list[Row]] = {}
        removed: dict[str, list[Row]] = {}
        changed: dict[str, list[tuple[Row, Row]]] = {}
        decode = self._decode
        for name in sorted(self.watched):
            rows = conn.execute(self._read_sql[name], (self.cursor,))
            for _key, before, after in net_rows(rows, self._tables[name]):
                if before == after:
                    continue
                if before is None:
                    added.setdefault(name, []).append(decode(name, after))  # type: ignore[arg-type]
                elif after is None:
                    removed.setdefault(name, []).append(decode(name, before))
                else:
                    changed.setdefault(name, []).append((decode(name, before), decode(name, after)))
        self.cursor = seq
        if conn.execute(
            "UPDATE _plasma_watchers SET seen = ? WHERE watcher = ?", (seq, self.watcher)
        ).rowcount == 0:
            self._register(conn, self._now_ms)  # reaped while this process slept
        self._prune(conn)
        change = Change(added, removed, changed)
        if change and self.on_change is not None:
            self.on_change(change)

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Drop the entries every watcher has read (all of them when nobody watches)."""
        (low,) = conn.execute("SELECT min(seen) FROM _plasma_watchers").fetchone()
        for name in self._tables:
            log = quote(journal_table(name))
            if low is None:
                conn.execute(f"DELETE FROM {log}")
            else:
                conn.execute(f'DELETE FROM {log} WHERE "_seq" <= ?', (low,))


def _journal_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM _plasma_meta WHERE key = 'journal_seq'").fetchone()
    return int(json.loads(row[0])) if row else 0


def _set_journal_seq(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute(
        "INSERT INTO _plasma_meta (key, value) VALUES ('journal_seq', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (json.dumps(seq),),
    )
