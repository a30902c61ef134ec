"""The replica's layout: the user's tables, plasma's internal tables, and migrations.

User tables are created by the SQLite dialect from the schema, exactly as the
server's SQLite backend creates them. The internal tables (prefixed ``_plasma_``)
hold the sync state; they are SQLite-only and written here by hand:

- ``_plasma_meta``: client group id, cookie, schema version, user, counters;
- ``_plasma_clients``: the clients (processes, tabs) that opened this database, their
  next mutation id and a heartbeat;
- ``_plasma_outbox``: unconfirmed mutations, in local order (``seq``);
- ``_plasma_undo_<table>``, one per user table: the pre-image of each row the
  pending mutations changed (same columns, so values keep their exact type);
- ``_plasma_verdicts``: the server's verdict on mutations a pull confirmed, so a
  handle in any process can learn it;
- ``_plasma_blob_uploads``: the blob upload queue (blobs.py).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..core.dialect import SQLiteDialect, quote
from ..core.schema import MISSING, Schema, Table

__all__ = ["INTERNAL_DDL", "UNDO_PREFIX", "TableInfo", "create_tables", "undo_table"]

FORMAT = 1
UNDO_PREFIX = "_plasma_undo_"

INTERNAL_DDL = {
    "_plasma_meta": (
        "CREATE TABLE IF NOT EXISTS _plasma_meta "
        "(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ("key",),
    ),
    "_plasma_clients": (
        "CREATE TABLE IF NOT EXISTS _plasma_clients "
        "(client_id TEXT PRIMARY KEY, next_mutation_id INTEGER NOT NULL, "
        "heartbeat INTEGER NOT NULL)",
        ("client_id",),
    ),
    "_plasma_outbox": (
        # seq is the local order (replay and push order) and never changes, while
        # (client_id, mutation_id) is renumbered if the server loses the group.
        "CREATE TABLE IF NOT EXISTS _plasma_outbox "
        "(seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, mutation_id INTEGER NOT NULL, "
        "name TEXT NOT NULL, args TEXT NOT NULL, timestamp REAL NOT NULL, error TEXT, "
        "UNIQUE (client_id, mutation_id))",
        ("seq",),
    ),
    "_plasma_verdicts": (
        "CREATE TABLE IF NOT EXISTS _plasma_verdicts "
        "(seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, mutation_id INTEGER NOT NULL, "
        "name TEXT NOT NULL, error TEXT, at INTEGER NOT NULL)",
        ("seq",),
    ),
    "_plasma_blob_uploads": (
        # blobs.py: blobs put() here and not yet on the server (added: ms since the epoch).
        "CREATE TABLE IF NOT EXISTS _plasma_blob_uploads "
        "(hash TEXT PRIMARY KEY, size INTEGER NOT NULL, added INTEGER NOT NULL, "
        "attempts INTEGER NOT NULL DEFAULT 0, error TEXT)",
        ("hash",),
    ),
}


@dataclass(frozen=True)
class TableInfo:
    """What the engine needs to know about one replica table."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    declared: Table | None = None  # the user's table; None for internal tables

    @property
    def quoted(self) -> str:
        return quote(self.name)


def undo_table(name: str) -> str:
    """The undo log table of user table ``name``."""
    return UNDO_PREFIX + name


def _columns_of(conn: sqlite3.Connection, name: str) -> list[tuple[str, str, bool, bool]]:
    """(name, type, notnull, has_default) of each existing column."""
    rows = conn.execute(f"PRAGMA main.table_info({quote(name)})").fetchall()
    return [(r[1], str(r[2]).upper(), bool(r[3]), r[4] is not None) for r in rows]


def _migrate_table(conn: sqlite3.Connection, dialect: SQLiteDialect, t: Table) -> bool:
    """Create or adapt one user table; True if its contents may now be stale.

    Added columns that can be filled (nullable or with a default) are added in
    place; any other difference recreates the table empty, and the full pull that
    follows a schema change fills it again.
    """
    existing = _columns_of(conn, t._name)
    if not existing:
        conn.execute(dialect.create_table_sql(t))
        return False
    have = {name: (type_, notnull) for name, type_, notnull, _ in existing}
    wanted = {c.name: c for c in t}
    compatible = True
    for name, type_, notnull, has_default in existing:
        column = wanted.get(name)
        if column is None:
            if notnull and not has_default:
                compatible = False
        elif type_ != dialect.sql_type(column) or notnull != (not column.nullable):
            compatible = False
        elif column.primary_key != (name == t._pk.name):
            compatible = False
    missing = [c for name, c in wanted.items() if name not in have]
    if any(not c.nullable and (c.default is MISSING or c.default is None) for c in missing):
        compatible = False
    if not compatible:
        conn.execute(f"DROP TABLE {quote(t._name)}")
        conn.execute(dialect.create_table_sql(t))
        return True
    for c in missing:
        sql = f"ALTER TABLE {quote(t._name)} ADD COLUMN {quote(c.name)} {dialect.sql_type(c)}"
        if c.default is not MISSING and c.default is not None:
            sql += " NOT NULL DEFAULT " + dialect.literal_sql(c.type, c.default)
        conn.execute(sql)
    return bool(missing)


def _undo_table(conn: sqlite3.Connection, dialect: SQLiteDialect, t: Table) -> TableInfo:
    """The undo log of ``t``: ``_existed`` and the table's columns, typed alike (so values
    keep their exact type) but nullable (a row that did not exist has only its key)."""
    name = undo_table(t._name)
    columns = ("_existed", *(c.name for c in t))
    defs = ['"_existed" INTEGER NOT NULL'] + [
        f"{quote(c.name)} {dialect.sql_type(c)}" + (" PRIMARY KEY" if c.primary_key else "")
        for c in t
    ]
    if tuple(c[0] for c in _columns_of(conn, name)) != columns:
        # New, or the table changed shape: its pre-images are moot, because a schema
        # change pulls a full snapshot (clear) before any replay needs them.
        conn.execute(f"DROP TABLE IF EXISTS {quote(name)}")
        conn.execute(f"CREATE TABLE {quote(name)} ({', '.join(defs)})")
    return TableInfo(name, columns, (t._pk.name,))


def create_tables(
    conn: sqlite3.Connection, schema: Schema, dialect: SQLiteDialect
) -> tuple[dict[str, TableInfo], bool]:
    """Create every table (inside the caller's transaction).

    Returns the tables by name and whether user tables changed shape (then the
    engine pulls a full snapshot).
    """
    tables: dict[str, TableInfo] = {}
    for name, (ddl, key) in INTERNAL_DDL.items():
        conn.execute(ddl)
        columns = tuple(c[0] for c in _columns_of(conn, name))
        tables[name] = TableInfo(name, columns, key)
    changed = False
    for t in schema:
        changed |= _migrate_table(conn, dialect, t)
        tables[t._name] = TableInfo(t._name, tuple(c.name for c in t), (t._pk.name,), t)
        undo = _undo_table(conn, dialect, t)
        tables[undo.name] = undo
    return tables, changed
